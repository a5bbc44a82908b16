# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""CLI pieces of rate control: target options for `convert`, and the `sweep` command."""

from __future__ import annotations

import dataclasses
import re

import click

from nnrconv import nnc

__all__ = ["apply_target", "parse_size", "rate_options", "sweep"]

_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "KI": 2**10, "MI": 2**20, "GI": 2**30}


def parse_size(text: str) -> int:
    """`5M`, `800K`, `1.5G`, `64MiB`, `12345` -> bytes (K/M/G decimal, Ki/Mi/Gi binary)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]I?)?B?\s*", text.upper())
    if not match:
        raise click.BadParameter(f"{text!r} is not a size like 5M, 800K or 123456")
    value = float(match.group(1)) * _UNITS[match.group(2) or ""]
    if value < 1:
        raise click.BadParameter(f"{text!r} is below one byte")
    return int(value)


def _input_shapes(values: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    from nnrconv._rate import parse_input_shapes

    try:
        return parse_input_shapes(values)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def rate_options(command):  # type: ignore[no-untyped-def]
    """--output-snr / --bits-per-param / --size targets, and where to measure them."""
    decorators = [
        click.option(
            "--output-snr",
            type=float,
            metavar="DB",
            help="Per-tensor allocation: fewest bits keeping the model's output SNR (worst output; "
            "classifier margins too) at DB or more on the calibration inputs.",
        ),
        click.option(
            "--bits-per-param", type=float, metavar="B", help="Per-tensor allocation within B bits per float parameter."
        ),
        click.option(
            "--size",
            "size",
            metavar="SIZE",
            help="Per-tensor allocation within SIZE for the whole bitstream (5M, 800K, bytes).",
        ),
        click.option(
            "--calibration",
            type=click.Path(path_type=str, exists=True),
            metavar="PATH",
            help="Calibration inputs (for a rate target, and to rank an update's data units): an .npz "
            "(first axis = samples) or a folder of .npz feeds.",
        ),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def apply_target(
    options: nnc.CodingOptions | None,
    output_snr: float | None,
    bits_per_param: float | None,
    size: str | None,
) -> nnc.CodingOptions | None:
    """Options carrying the target (convert's --input-shape also shapes synthetic calibration)."""
    given = [n for n, v in (("--output-snr", output_snr), ("--bits-per-param", bits_per_param), ("--size", size)) if v]
    if len(given) > 1:
        raise click.UsageError(f"{' and '.join(given)} are different targets; give one of them")
    if not given:
        return options
    base = options or nnc.CodingOptions()
    if base.qp is not None or base.lossless:
        raise click.UsageError(f"{given[0]} chooses each tensor's QP; it excludes --qp and --lossless")
    try:
        return dataclasses.replace(
            base,
            output_snr_db=output_snr,
            bits_per_param=bits_per_param,
            size_bytes=parse_size(size) if size else None,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.argument("model", type=click.Path(path_type=str))
@click.option("--from", "from_format", metavar="FORMAT", help="Input format (default: detected).")
@click.option(
    "--calibration",
    type=click.Path(path_type=str, exists=True),
    metavar="PATH",
    help="Calibration inputs: an .npz (first axis = samples) or a folder of .npz feeds.",
)
@click.option("--input-shape", "input_shape", multiple=True, metavar="NAME:DIMS", help="Shape of a model input.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of synthetic inputs.")
@click.option("--points", type=click.IntRange(2, 40), default=8, show_default=True, help="Points per curve.")
@click.option("--json", "as_json", is_flag=True, help="Print the curves as JSON.")
@click.option("--csv", type=click.Path(path_type=str), help="Also write the points as CSV.")
@click.option("--plot", type=click.Path(path_type=str), help="Also draw both curves into an image (needs matplotlib).")
def sweep(
    model: str,
    from_format: str | None,
    calibration: str | None,
    input_shape: tuple[str, ...],
    seed: int,
    points: int,
    as_json: bool,
    csv: str | None,
    plot: str | None,
) -> None:
    """Rate-distortion curves of MODEL: nnrconv's allocation beside one global QP (NNCodec's way)."""
    from nnrconv._rate._sweep import require_matplotlib, write_outputs
    from nnrconv._rate._sweep import sweep as run_sweep

    if plot:
        require_matplotlib()  # before minutes of measuring

    result = run_sweep(
        model,
        format=from_format,
        calibration=calibration,
        input_shapes=_input_shapes(input_shape),
        seed=seed,
        points=points,
    )
    click.echo(write_outputs(result, as_json=as_json, csv=csv, plot=plot))
