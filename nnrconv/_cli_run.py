# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv run`: inference from a plain, `.nnr` or embedded model in its own runtime."""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["run_command"]


@click.command("run")
@click.argument("model", type=click.Path(path_type=str))
@click.option(
    "--inputs",
    required=True,
    type=click.Path(path_type=str),
    help="An .npz with one array per model input (an extra first axis stacks samples), or a folder of .npz.",
)
@click.option("--output", "output", type=click.Path(path_type=str), help="Write the outputs to this .npz.")
@click.option("--force", is_flag=True, help="Replace an existing --output file.")
@click.option("--from", "from_format", metavar="FORMAT", help="Input format (default: detected).")
@click.option("--json", "as_json", is_flag=True, help="Print the outputs' summary as one JSON document (errors too).")
def run_command(
    model: str, inputs: str, output: str | None, force: bool, from_format: str | None, as_json: bool
) -> None:
    """Run MODEL (plain, .nnr or NNR inside a native container) on --inputs in its runtime.

    The model is decoded in memory. Without --output, prints each output's name, shape, dtype
    and statistics (min, max, mean, std over finite values; count of NaN/inf).
    """
    from nnrconv import _run

    result = _run.run(model, inputs, from_format)
    if output is not None:
        _run.save_outputs(result.outputs, output, force=force, sources=(Path(model), Path(inputs)))
    summaries = _run.summarize(result.outputs)
    if as_json:
        document = {
            "model": model, "format": result.format, "feeds": result.feeds, "output_file": output,
            "outputs": [s.to_json() for s in summaries],
        }  # fmt: skip
        click.echo(json.dumps(document, indent=2))
        return
    if output is not None:
        click.echo(f"wrote {len(summaries)} output(s) of {result.feeds} feed(s) to {output}")
        return
    click.echo(f"run {model} ({result.format}), {result.feeds} feed(s):")
    for s in summaries:
        stats = ", ".join(f"{k} {_run.format_number(v)}" for k, v in (("min", s.min), ("max", s.max),
                          ("mean", s.mean), ("std", s.std)))  # fmt: skip
        bad = f", {s.nonfinite} NaN/inf" if s.nonfinite else ""
        click.echo(f"  {s.name} {list(s.shape)} {s.dtype}: {stats}{bad}")
