# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Generated torch models (CNN with batch norm, LSTM, MLP with odd buffers) in every container."""

from __future__ import annotations

import collections
from pathlib import Path

import torch
from torch import nn


class Cnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 4, 3)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(self.conv2(x).mean((2, 3)))


class Lstm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 12, batch_first=True)
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class Mlp(nn.Module):
    """Integer, boolean, float16 and bfloat16 buffers that the forward pass uses."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(10, 16)
        self.fc2 = nn.Linear(16, 4)
        self.register_buffer("mask", torch.rand(16) > 0.5)
        self.register_buffer("scale16", (torch.rand(16) + 0.5).half())
        self.register_buffer("shift_bf", torch.randn(16).bfloat16())
        self.register_buffer("steps", torch.tensor([3, -7], dtype=torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x) * self.scale16.float() + self.shift_bf.float()
        h = torch.relu(h.masked_fill(self.mask, 0.0))
        return self.fc2(h) + self.steps.sum().float()


def _trained(module: nn.Module, example: torch.Tensor) -> nn.Module:
    """Run a few training steps so batch-norm statistics and counters are not their defaults."""
    module.train()
    with torch.no_grad():
        for _ in range(3):
            module(example + torch.randn_like(example))
    return module.eval()


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed({"cnn": 1, "lstm": 2, "mlp": 3}[name])
    if name == "cnn":
        example = torch.randn(2, 3, 10, 10)
        return _trained(Cnn(), example), example
    if name == "lstm":
        return Lstm().eval(), torch.randn(2, 5, 6)
    return Mlp().eval(), torch.randn(3, 10)


MODELS = ("cnn", "lstm", "mlp")
CONTAINERS = ("pt2", "script", "state_dict")


def save(name: str, container: str, folder: Path) -> tuple[Path, nn.Module, torch.Tensor]:
    """Write model `name` as `container` into `folder`; return the file, the module and an input."""
    module, example = build(name)
    if container == "pt2":
        path = folder / f"{name}.pt2"
        torch.export.save(torch.export.export(module, (example,)), path)
    elif container == "script":
        path = folder / f"{name}.ts.pt"
        torch.jit.save(torch.jit.trace(module, (example,)), path)
    elif container == "state_dict":
        path = folder / f"{name}.pt"
        torch.save(module.state_dict(), path)
    elif container == "checkpoint":
        path = folder / f"{name}.ckpt.pth"
        wrapped = collections.OrderedDict((f"module.{k}", v) for k, v in module.state_dict().items())
        torch.save({"epoch": 7, "state_dict": wrapped, "best": 0.5}, path)
    else:
        raise ValueError(container)
    return path, module, example
