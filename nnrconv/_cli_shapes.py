# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`--input-shape NAME:D1,D2,...`: the shape of a model input whose dimensions are free.

Input names may contain `:` themselves (TensorFlow exports name inputs `serving_default_x:0`),
so the shape is what follows the last `:`.
"""

from __future__ import annotations

import click

__all__ = ["INPUT_SHAPE", "parse_input_shape"]


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """`"x:1,3,224,224"` → `("x", (1, 3, 224, 224))`.

    Raises:
        ValueError: no name, no dimensions, or a dimension that is not a positive integer.
    """
    name, sep, dims = text.rpartition(":")
    if not sep or not name or not dims:
        raise ValueError(f"{text!r} is not NAME:D1,D2,... (for example x:1,3,224,224)")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        raise ValueError(f"{text!r}: dimensions must be integers separated by commas") from None
    if any(d < 1 for d in shape):
        raise ValueError(f"{text!r}: dimensions must be positive")
    return name, shape


class _InputShape(click.ParamType):
    name = "NAME:DIMS"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> object:
        if isinstance(value, tuple):
            return value
        try:
            return parse_input_shape(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


INPUT_SHAPE = _InputShape()
