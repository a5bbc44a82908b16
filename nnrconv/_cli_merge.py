# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv merge BASE UPDATE... OUT`: updates from many providers averaged into one (federated
averaging). Registered by cli.py, whose shared coding options it uses."""

from __future__ import annotations

import click

from nnrconv._merge import merge as merge_updates
from nnrconv.cli import _coding_options, _human, _make_options

__all__ = ["merge"]


def _weights(_ctx: click.Context, _param: click.Parameter, value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(w) for w in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None


@click.command()
@click.argument("base", type=click.Path(path_type=str))
@click.argument("updates", nargs=-1, required=True, type=click.Path(path_type=str))
@click.argument("target", type=click.Path(path_type=str))
@click.option(
    "--weights", callback=_weights, metavar="W1,W2,...", help="One weight per update (default: equal weights)."
)
@click.option(
    "--chain",
    "chain",
    multiple=True,
    type=click.Path(path_type=str),
    metavar="UPDATE.nnr",
    help="BASE is followed by this update (repeat, in order): the updates were made against that chain.",
)
@click.option("--full", is_flag=True, help="Write the merged model itself (any format), not an update of BASE.")
@click.option("--force", is_flag=True, help="Replace the output if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@click.option(
    "--parent-ref",
    type=click.Choice(["sha256", "id"]),
    default="sha256",
    show_default=True,
    help="How the merged update names its parents (as for convert).",
)
@_coding_options
def merge(
    base: str,
    updates: tuple[str, ...],
    target: str,
    weights: list[float] | None,
    chain: tuple[str, ...],
    full: bool,
    force: bool,
    quiet: bool,
    parent_ref: str,
    **coding: object,
) -> None:
    """Average UPDATEs of BASE (federated averaging) into TARGET, an update of BASE coded once.

    TARGET's tensors are BASE plus the weighted mean of the updates' differences to BASE. Every
    update must be an update of BASE (checked before decoding). With --chain, BASE is the model
    that BASE and those updates decode to. With --full TARGET is the merged model itself, in any
    output format.
    """
    options = _make_options(**coding)  # type: ignore[arg-type]
    try:
        result = merge_updates(
            [base, *chain] if chain else base,
            list(updates),
            target,
            weights=weights,
            full=full,
            force=force,
            options=options,
            jobs=coding["jobs"],  # type: ignore[arg-type]
            parent_ref=parent_ref,  # type: ignore[arg-type]
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if not quiet:
        sizes = ", ".join(_human(n) for n in result.update_bytes)
        click.echo(
            f"{result.updates} updates ({sizes}) -> {result.target} ({_human(result.target_bytes)}): "
            f"{result.tensors} tensors averaged, weights {', '.join(f'{w:.3g}' for w in result.weights)}, "
            f"{result.seconds:.2f} s"
        )
