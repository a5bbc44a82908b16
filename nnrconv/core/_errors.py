# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""One exception hierarchy for everything nnrconv reports to a user.

Every error carries a message meant to be printed as a single line: what is wrong, where
(file, unit index, byte offset, tensor), and when possible what to do about it. The CLI turns
any `NNRConvError` into that line and a non-zero exit code; anything else is a bug.
"""

from __future__ import annotations

__all__ = [
    "BaseMismatchError",
    "BitstreamError",
    "FormatError",
    "FrameworkMissingError",
    "NNRConvError",
    "OutputError",
    "PluginError",
    "SignatureError",
    "UnsupportedError",
    "UsageError",
]


class NNRConvError(Exception):
    """Base class of all errors meant for the user; `exit_code` is what the CLI returns."""

    exit_code: int = 1


class FormatError(NNRConvError):
    """An input is not in the format expected, or no format can be determined for a path."""

    exit_code = 3


class BaseMismatchError(FormatError):
    """An incremental update and the base model given with it do not belong together (a tensor
    or its shape is missing, the parent node ids differ), or an update was given without base."""


class BitstreamError(NNRConvError):
    """An NNR bitstream is truncated, corrupt or violates the syntax.

    Attributes:
        unit_index: index of the NNR unit being parsed, when known.
        byte_offset: offset in the file of the unit (or element) at fault, when known.
        tensor: name of the tensor whose data unit is at fault, when known.
    """

    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        unit_index: int | None = None,
        byte_offset: int | None = None,
        tensor: str | None = None,
    ) -> None:
        self.reason = message
        self.unit_index = unit_index
        self.byte_offset = byte_offset
        self.tensor = tensor
        super().__init__(self._compose())

    def _compose(self) -> str:
        where = []
        if self.unit_index is not None:
            where.append(f"unit {self.unit_index}")
        if self.byte_offset is not None:
            where.append(f"byte offset {self.byte_offset}")
        if self.tensor is not None:
            where.append(f"tensor {self.tensor!r}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason

    def located(
        self,
        *,
        unit_index: int | None = None,
        byte_offset: int | None = None,
        tensor: str | None = None,
    ) -> BitstreamError:
        """Return a copy with missing location fields filled in (inner layers know less)."""
        return BitstreamError(
            self.reason,
            unit_index=self.unit_index if self.unit_index is not None else unit_index,
            byte_offset=self.byte_offset if self.byte_offset is not None else byte_offset,
            tensor=self.tensor if self.tensor is not None else tensor,
        )


class UsageError(NNRConvError):
    """An option's value is malformed (e.g. `--input-shape` text); the CLI exits 2 as for bad options."""

    exit_code = 2


class UnsupportedError(NNRConvError):
    """The input is valid but uses something nnrconv cannot represent or convert yet."""

    exit_code = 5


class FrameworkMissingError(NNRConvError):
    """A format's framework is not installed; the message names the extra that installs it."""

    exit_code = 6


class OutputError(NNRConvError):
    """The output path is unusable: it exists (without --force), equals the input, or cannot be written."""

    exit_code = 7


class PluginError(NNRConvError):
    """A plugin broke the plugin contract; the message names the plugin, the hook and the rule."""

    exit_code = 8


class SignatureError(NNRConvError):
    """A model's signature is missing, malformed, made with another key, or no longer matches
    the content (`nnrconv verify` exits 1 on it; `convert --verify-key` exits 9)."""

    exit_code = 9
