# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv split model.pt2 HEAD TAIL --at NODE`: a torch.export program cut in two, each part
re-exported; TAIL(*HEAD(x)) = MODEL(x)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from nnrconv.cli import main  # noqa: E402

pytestmark = pytest.mark.slow


class _Residual(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.c2 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.c1(x)))
        return self.fc((self.c2(h) + h).mean((2, 3)))


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pt2") / "m.pt2"
    torch.export.save(torch.export.export(_Residual().eval(), (torch.randn(1, 3, 8, 8),)), str(path))
    return path


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_tail_of_head_is_the_model(program, tmp_path, capsys):
    head, tail = tmp_path / "h.pt2", tmp_path / "t.pt2"
    code, _, err = run(capsys, "split", program, head, tail, "--at", "relu")
    assert code == 0, err
    model, first, second = (torch.export.load(str(p)).module() for p in (program, head, tail))
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(model(x), second(*first(x)))


def test_a_crossing_cut_is_refused(program, tmp_path, capsys):
    code, _, err = run(capsys, "split", program, tmp_path / "h.pt2", tmp_path / "t.pt2", "--at", "conv2d_1")
    assert code == 5 and "crossing it: 'relu'" in err
    code, _, err = run(capsys, "split", program, tmp_path / "h.pt2", tmp_path / "t.pt2", "--at", "nope")
    assert code == 5 and "'nope': not a computing node" in err


def test_parts_in_nnr(program, tmp_path, capsys):
    head = tmp_path / "h.nnr"
    args = ("--at", "relu", "--lossless", "-q")
    assert run(capsys, "split", program, head, tmp_path / "t.pt2", *args)[0] == 0
    assert run(capsys, "convert", head, tmp_path / "h.pt2", "-q")[0] == 0
    model, first, second = (
        torch.export.load(str(p)).module() for p in (program, tmp_path / "h.pt2", tmp_path / "t.pt2")
    )
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(model(x), second(*first(x)))
