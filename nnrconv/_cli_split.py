# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv split MODEL --at TENSOR[,TENSOR...] HEAD TAIL`: split inference. Registered by
cli.py, whose shared coding options it uses."""

from __future__ import annotations

import click

from nnrconv._split import split as split_model
from nnrconv.cli import _coding_options, _human, _make_options

__all__ = ["split"]


@click.command()
@click.argument("model", type=click.Path(path_type=str))
@click.argument("head", type=click.Path(path_type=str))
@click.argument("tail", type=click.Path(path_type=str))
@click.option(
    "--at",
    "at",
    required=True,
    metavar="TENSOR[,TENSOR...]",
    help="The tensors to cut at: HEAD outputs them, TAIL takes them as inputs.",
)
@click.option("--from", "from_format", metavar="FORMAT", help="Input format (default: detected).")
@click.option("--force", is_flag=True, help="Replace the outputs if they exist.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@_coding_options
def split(
    model: str,
    head: str,
    tail: str,
    at: str,
    from_format: str | None,
    force: bool,
    quiet: bool,
    **coding: object,
) -> None:
    """Cut MODEL at the --at tensors: HEAD computes them from the inputs, TAIL the outputs from them.

    Each part is written in the format its name says (.onnx, .nnr, .nnr.onnx, ...), coded with
    the usual options. A cut that other tensors cross fails and lists them (exit code 5).
    """
    options = _make_options(**coding)  # type: ignore[arg-type]
    try:
        result = split_model(
            model,
            at.split(","),
            head,
            tail,
            from_format=from_format,
            force=force,
            options=options,
            jobs=coding["jobs"],  # type: ignore[arg-type]
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if not quiet:
        click.echo(
            f"{model} cut at {', '.join(result.at)}: {result.head} ({_human(result.head_bytes)}), "
            f"{result.tail} ({_human(result.tail_bytes)})"
        )
