# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The `nnrconv` command line: parses arguments, calls the typed API, prints.

Exit codes:
    0  success
    1  other nnrconv error
    2  usage error (bad option or argument)
    3  unknown, ambiguous or unreadable input format
    4  corrupt or truncated NNR bitstream
    5  valid input that nnrconv cannot convert (unsupported)
    6  the format's framework is not installed
    7  output refused (exists without --force, equals, holds or lies in the input, a folder
       --force may not replace, folder missing)
    8  a plugin broke the plugin contract
    9  convert --verify-key: the input is unsigned, or its signature is invalid
       (`nnrconv verify` answers 0 valid, 1 invalid or unsigned)
    70 internal error (a bug: please report it with the output of --debug)
    130 interrupted (Ctrl-C); 143 terminated (SIGTERM)
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict

import click

from nnrconv import _api, _cli_rate, nnc
from nnrconv._cli_integrity import max_memory_option, salvage_warnings
from nnrconv._cli_progress import BarProgress
from nnrconv._cli_run import run_command
from nnrconv._cli_shapes import INPUT_SHAPE
from nnrconv._cli_signals import interruption, terminate_as_interrupt
from nnrconv._cli_signing import sign_command, verify_command
from nnrconv._compare import render as render_comparison
from nnrconv.core import BitstreamError, NNRConvError, get_plugin_manager

__all__ = ["cli", "main"]

_GROUP_FLAGS = frozenset({"--debug", "--version", "--help", "-h"})
EXIT_INTERNAL = 70


class _DefaultToConvert(click.Group):
    """A group where `nnrconv IN OUT ...` means `nnrconv convert IN OUT ...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        for index, token in enumerate(args):
            if token in _GROUP_FLAGS:
                continue
            if token not in self.commands:
                args = [*args[:index], "convert", *args[index:]]
            break
        return super().parse_args(ctx, args)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


@click.group(
    cls=_DefaultToConvert,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Convert with `nnrconv IN OUT` (see `nnrconv convert --help`). Exit codes are listed in the README.",
)
@click.version_option(package_name="nnrconv")
@click.option("--debug", is_flag=True, help="Show the full traceback of errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Convert neural networks between ONNX, NNEF, TensorFlow, PyTorch and MPEG NNR (ISO/IEC 15938-17)."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _coding_options(command):  # type: ignore[no-untyped-def]
    """The NNR coding options shared by `convert` and `check`, gathered into `coding`."""
    decorators = [
        click.option(
            "--snr",
            "snr_db",
            type=float,
            metavar="DB",
            help=f"Default mode: each tensor keeps a weight SNR of DB or more (default {nnc.DEFAULT_SNR_DB:g}, "
            f"bfloat16 tensors {nnc.BFLOAT16_SNR_DB:g}; 1-D tensors get 20 dB more).",
        ),
        click.option(
            "--qp", type=int, metavar="N", help="One QP for all float weights (1-D tensors: N-8), NNCodec-style."
        ),
        click.option(
            "--lossless",
            is_flag=True,
            help="Bit-exact: integers and on-grid floats entropy-coded, other floats raw.",
        ),
        click.option(
            "--codebook",
            is_flag=True,
            help="Per tensor, code a codebook of its levels (no DQ) when smaller than uniform coding.",
        ),
        click.option("--dq/--no-dq", default=True, show_default=True, help="Dependent (trellis) quantization."),
        click.option(
            "--lambda-scale",
            type=click.FloatRange(min=0.0),
            default=0.0,
            metavar="X",
            help="Rate-distortion quantization (NNCodec's lambda_scale): trade weight error for fewer "
            "bits, more so for larger X (try 0.5-5). With --qp: smaller file, lower SNR; with --snr: "
            "the target still holds at a finer step. 0 (default): least error.",
        ),
        click.option(
            "--scan-order",
            type=click.IntRange(0, 4),
            default=0,
            show_default=True,
            help="0 row-major; 1-4 blocks of 8/16/32/64 with entry points.",
        ),
        click.option("--jobs", type=click.IntRange(min=1), metavar="N", help="Coding threads (default: all cores)."),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def _make_options(
    snr_db: float | None,
    qp: int | None,
    lossless: bool,
    dq: bool,
    scan_order: int,
    jobs: int | None,
    codebook: bool = False,
    lambda_scale: float = 0.0,
) -> nnc.CodingOptions | None:
    """The coding options asked for, or None when no coding choice was made.

    None lets tensors that are already NNR-coded (read from a `.nnr` or a `.nnr.onnx`) move to
    the output as they are; any explicit choice codes every tensor anew.
    """
    given = [name for name, value in (("--snr", snr_db), ("--qp", qp)) if value is not None]
    if lossless:
        given.append("--lossless")
    if len(given) > 1:
        raise click.UsageError(f"{' and '.join(given)} choose different modes; give one of them")
    if codebook and lossless:
        raise click.UsageError("--codebook quantizes; it combines with --qp or --snr, not with --lossless")
    if lambda_scale and lossless:
        raise click.UsageError("--lambda-scale quantizes; it combines with --qp or --snr, not with --lossless")
    if not given and dq and scan_order == 0 and not codebook and lambda_scale == 0:
        return None
    try:
        return nnc.CodingOptions(
            snr_db=snr_db,
            qp=qp,
            lossless=lossless,
            dq=dq,
            scan_order=scan_order,
            jobs=jobs,
            codebook=codebook,
            lambda_scale=lambda_scale,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@cli.command()
@click.argument("source", type=click.Path(path_type=str))
@click.argument("target", type=click.Path(path_type=str))
@click.option("--from", "from_format", metavar="FORMAT", help="Input format (default: detected).")
@click.option("--to", "to_format", metavar="FORMAT", help="Output format (default: from the name).")
@click.option("--force", is_flag=True, help="Replace the output if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@click.option(
    "--base",
    type=click.Path(path_type=str),
    multiple=True,
    metavar="BASE.nnr",
    help="Incremental update: into NNR, code only the differences to this base model; "
    "from NNR, restore the model from an update and this base. Repeat for a chain, in order: "
    "the full model, then its updates. With --salvage: fills lost tensors.",
)
@click.option(
    "--parent-ref",
    type=click.Choice(["sha256", "id"]),
    default="sha256",
    show_default=True,
    help="How an update names its parents: by payload SHA-256 (bound to that exact base) or by node id only.",
)
@click.option(
    "--partial",
    is_flag=True,
    help="The same as --salvage (which needs --base for this): an update cut short applies its "
    "complete data units (most important first) and keeps the base elsewhere.",
)
@click.option(
    "--salvage",
    is_flag=True,
    help="Decode what survives of a damaged .nnr: lost data units cost only their tensors (from --base, "
    "else zeros), each named on stderr. With --base, an update cut short applies its complete units.",
)
@click.option(
    "--verify-key",
    type=click.Path(path_type=str),
    metavar="PUBLIC.pem",
    help="Refuse SOURCE (exit 9) unless its signature verifies with this public key (see `nnrconv verify`).",
)
@click.option(
    "--signature", type=click.Path(path_type=str), metavar="SIG", help="SOURCE's signature (default SOURCE.sig)."
)
@click.option(
    "--input-shape",
    "input_shapes",
    type=INPUT_SHAPE,
    multiple=True,
    help="NAME:D1,D2,... fixes a free input shape when converting to a static-shape format (ONNX -> NNEF); "
    "repeatable. Other free dimensions become 1.",
)
@click.option(
    "--cluster",
    metavar="ADDRESS",
    help="Code (or decode) the tensors on a Dask distributed cluster, e.g. tcp://host:8786; same bytes.",
)
@click.option("--send-tensors", is_flag=True, help="With --cluster: send tensors to the workers (no shared storage).")
@_coding_options
@max_memory_option
@_cli_rate.rate_options
def convert(
    source: str,
    target: str,
    from_format: str | None,
    to_format: str | None,
    force: bool,
    quiet: bool,
    base: tuple[str, ...],
    parent_ref: str,
    partial: bool,
    salvage: bool,
    verify_key: str | None,
    signature: str | None,
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...],
    output_snr: float | None,
    bits_per_param: float | None,
    size: str | None,
    calibration: str | None,
    cluster: str | None,
    send_tensors: bool,
    **coding: object,
) -> None:
    """Convert SOURCE to TARGET; formats follow from the paths (`.nnr` is an NNR bitstream).

    Coding into NNR is lossy by default (each tensor at the --snr target); use --lossless for
    bit-identical tensors. With --base BASE.nnr the NNR file is an incremental update of BASE
    (--base BASE.nnr --base U1.nnr: of the model that chain decodes to).
    """
    options = _make_options(**coding)  # type: ignore[arg-type]
    options = _cli_rate.apply_target(options, output_snr, bits_per_param, size)
    if signature is not None and verify_key is None:
        raise click.UsageError("--signature names the signature to check; give --verify-key too")
    with salvage_warnings(), BarProgress.for_stderr(enabled=not quiet) as progress:
        result = _api.convert(
            source,
            target,
            from_format=from_format,
            to_format=to_format,
            force=force,
            options=options,
            jobs=coding["jobs"],  # type: ignore[arg-type]
            progress=progress,
            base=base or None,
            parent_ref=parent_ref,  # type: ignore[arg-type]
            partial=partial,
            salvage=salvage,
            verify_key=verify_key,
            signature=signature,
            input_shapes=dict(input_shapes) or None,
            calibration=calibration,
            cluster=cluster,
            send_tensors=send_tensors,
        )
    if not quiet:
        ratio = result.target_bytes / result.source_bytes if result.source_bytes else 0.0
        click.echo(
            f"{result.source} ({result.source_format}, {_human(result.source_bytes)}) -> "
            f"{result.target} ({result.target_format}, {_human(result.target_bytes)}): "
            f"{result.tensors} tensors, {result.parameters:,} parameters, "
            f"size ratio {ratio:.3f}, {result.seconds:.2f} s"
        )
        if result.allocation:
            click.echo(f"allocation: {result.allocation}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per format.")
def formats(as_json: bool) -> None:
    """List every format: built-in and third-party, available or not."""
    rows = _api.formats()
    if as_json:
        for row in rows:
            click.echo(json.dumps(asdict(row)))
        return
    click.echo(f"{'format':<12} {'version':<9} {'NNR topology':<13} {'patterns':<22} status")
    for row in rows:
        code = "-" if row.topology_code is None else str(row.topology_code)
        status = "available" if row.available else f"missing {', '.join(row.missing)}: {row.install}"
        click.echo(f"{row.name:<12} {row.version:<9} {code:<13} {' '.join(row.patterns):<22} {status}")
    click.echo(f"{'nnr':<12} {'':<9} {'-':<13} {'*.nnr *.nnc':<22} available (built in: the NNR bitstream)")
    for failure in get_plugin_manager().load_failures:  # type: ignore[attr-defined]
        click.echo(f"plugin {failure.entry_point} ({failure.distribution}) failed to load: {failure.error}")


@cli.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per unit.")
@click.option(
    "--original", metavar="MODEL", type=click.Path(path_type=str), help="Show each tensor's SNR against MODEL."
)
@max_memory_option
def inspect(path: str, as_json: bool, original: str | None) -> None:
    """Show the units of an NNR bitstream (offsets, sizes, payload type, QP, step, bits/parameter, tensor),
    or of a native container with NNR inside (its units, integrity and container digest)."""
    report = _api.inspect_container(path) if original is None else None
    if report is not None:
        for line in report.json_lines() if as_json else report.text_lines():
            click.echo(line)
        if report.damaged:
            damage = report.container_digest if report.container_digest.startswith("damaged") else report.integrity
            raise BitstreamError(damage.removeprefix("damaged: "))
        return
    units = _api.inspect(path, original=original)
    if as_json:
        for unit in units:
            click.echo(json.dumps(_unit_dict(unit)))
        return
    click.echo(
        f"{'#':>4} {'unit':<8} {'offset':>10} {'size':>10}  {'payload':<16} {'shape':<18} "
        f"{'QP':>5} {'step':>10} {'bits/p':>7} {'decoded':>9}{' SNR dB' if original else ''}  tensor / details"
    )
    parameters = 0
    for unit in units:
        shape = "x".join(str(d) for d in unit.shape) if unit.shape else ""
        if unit.shape:
            parameters += _count(unit.shape)
        detail = unit.tensor if unit.tensor is not None else (unit.topology_storage_format or "")
        if unit.parent is not None:
            detail += f"  (node {unit.node}, parent {unit.parent})"
        qp = "" if unit.qp is None else str(unit.qp)
        step = "" if unit.step is None else f"{unit.step:.4g}"
        bits = "" if unit.bits_per_parameter is None else f"{unit.bits_per_parameter:.2f}"
        decoded = "" if unit.decoded_bytes is None else _human(unit.decoded_bytes)
        snr = ""
        if original:
            snr = " " + (f"{'':>6}" if unit.snr_db is None else f"{_db(unit.snr_db):>6}")
        click.echo(
            f"{unit.index:>4} {unit.unit_type:<8} {unit.byte_offset:>10} {unit.size:>10}  "
            f"{unit.payload_type or '':<16} {shape:<18} {qp:>5} {step:>10} {bits:>7} {decoded:>9}{snr}  {detail}"
        )
    ndus = sum(1 for u in units if u.tensor is not None)
    total = sum(u.size for u in units)
    decoded = _human(sum(u.decoded_bytes or 0 for u in units))
    click.echo(
        f"total: {len(units)} units, {ndus} data units, {parameters:,} parameters, {total:,} bytes, decoded {decoded}"
    )
    click.echo(_integrity_line(units))


def _integrity_line(units: Sequence[nnc.UnitInfo]) -> str:
    record = next((u for u in units if u.integrity == "record"), None)
    if record is None:
        return "integrity: unverified (no integrity record: damage cannot be detected)"
    return f"integrity: verified (every unit matches the CRC-32 and SHA-256 of the record in unit {record.index})"


def _count(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _unit_dict(unit: object) -> dict:
    data = asdict(unit)  # type: ignore[call-overload]
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items()}


@cli.command()
@click.argument("first", type=click.Path(path_type=str))
@click.argument("second", type=click.Path(path_type=str))
@click.option("--all", "show_all", is_flag=True, help="List identical tensors too.")
def diff(first: str, second: str, show_all: bool) -> None:
    """Compare the tensors of two models (any formats, NNR included); exit 1 if they differ.

    Tensors pair by name, then (renamed by a converter) by content: same type and shape, values
    closest. Columns: max |a-b|, relative error max|a-b|/max|a|, SNR in dB.
    """
    comparison = _api.compare(_api.load(first), _api.load(second))
    for line in render_comparison(comparison, first, second, show_all):
        click.echo(line)
    if not comparison.identical:
        sys.exit(1)


cli.add_command(sign_command)
cli.add_command(run_command)
cli.add_command(verify_command)
cli.add_command(_cli_rate.sweep)

_plugin_commands_added = False


@cli.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option("--from", "from_format", metavar="FORMAT", help="Input format (default: detected).")
@click.option(
    "--inputs",
    type=click.Path(path_type=str),
    help="An .npz (one array per input; an extra first axis stacks samples) or a folder of .npz (one feed each).",
)
@click.option(
    "--input-shape",
    "input_shapes",
    multiple=True,
    metavar="NAME:DIMS",
    help="Shape of a synthesized input, e.g. input:1,3,224,224 (repeatable; default: see README).",
)
@click.option("--samples", type=click.IntRange(min=1), default=1, show_default=True, help="Synthesized feeds.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--atol", type=float, help="Absolute tolerance; exit 1 if any output differs by more.")
@click.option("--rtol", type=float, help="Relative tolerance (combined with --atol as |a-b| <= atol + rtol*|a|).")
@click.option("--worst", type=click.IntRange(min=0), metavar="N", help="Weights listed, lowest SNR first (text: 10).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (errors too).")
@_coding_options
@max_memory_option
def check(
    path: str,
    from_format: str | None,
    inputs: str | None,
    input_shapes: tuple[str, ...],
    samples: int,
    seed: int,
    atol: float | None,
    rtol: float | None,
    worst: int | None,
    as_json: bool,
    **coding: object,
) -> None:
    """Round-trip PATH through NNR and compare the native runtime's outputs before and after."""
    from nnrconv import _cli_check
    from nnrconv._check import check as run_check
    from nnrconv._inputs import parse_input_shapes

    options = _make_options(**coding)  # type: ignore[arg-type]
    shapes = parse_input_shapes(input_shapes)
    report = run_check(
        path, format=from_format, inputs=inputs, seed=seed, atol=atol, rtol=rtol, options=options,
        input_shapes=shapes, samples=samples,
    )  # fmt: skip
    if as_json:
        _cli_check.print_json(report, worst)
    else:
        _cli_check.print_text(report, worst)
    if not report.passed:
        sys.exit(1)


def _db(value: float) -> str:
    return "inf" if value == float("inf") else f"{value:.1f}"


def _add_delivery_commands() -> None:
    """merge and split live in their own modules (they use the coding options above)."""
    from nnrconv._cli_merge import merge
    from nnrconv._cli_split import split

    cli.add_command(merge)
    cli.add_command(split)


_add_delivery_commands()


def _add_plugin_commands() -> None:
    """Let plugins add subcommands, once per process."""
    global _plugin_commands_added
    if not _plugin_commands_added:
        _plugin_commands_added = True
        get_plugin_manager().hook.register_commands(cli=cli)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the CLI, turning every nnrconv error into one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or bool(os.environ.get("NNRCONV_DEBUG"))
    from nnrconv import _cli_check

    as_json = _cli_check.wants_json(args)

    def fail(message: str, code: int, kind: str = "error: ") -> int:
        if as_json:
            _cli_check.json_error(message, code)
        else:
            click.echo(f"nnrconv: {kind}{message}", err=True)
        return code

    try:
        _add_plugin_commands()
        with terminate_as_interrupt():
            cli.main(args=args, prog_name="nnrconv", standalone_mode=False)
    except NNRConvError as err:
        if debug:
            raise
        return fail(str(err), err.exit_code)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        if as_json:
            return fail(exc.format_message(), exc.exit_code)
        exc.show()
        return exc.exit_code
    except click.Abort as exc:
        # click turns Ctrl-C (and an EOFError from anywhere) into Abort; say what it was.
        cause = exc.__cause__
        if cause is not None and not isinstance(cause, KeyboardInterrupt):
            if debug:
                raise cause from None
            return _internal_error(cause, fail)
        if cause is None:
            return fail("aborted", 1, "")
        line, code = interruption(cause)
        return fail(line.removeprefix("nnrconv: "), code, "")
    except KeyboardInterrupt as exc:
        line, code = interruption(exc)
        return fail(line.removeprefix("nnrconv: "), code, "")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:
        if debug:
            raise
        return _internal_error(exc, fail)
    return 0


def _internal_error(exc: BaseException, fail: Callable[[str, int, str], int]) -> int:
    return fail(f"{type(exc).__name__}: {exc} (rerun with --debug and report it)", EXIT_INTERNAL, "internal error: ")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
