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
    7  output refused (exists without --force, equals the input, folder missing)
    8  a plugin broke the plugin contract
    70 internal error (a bug: please report it with the output of --debug)
    130 interrupted
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import TextIO

import click

from nnrconv import _api, nnc
from nnrconv._cli_progress import BarProgress
from nnrconv.core import NNRConvError, get_plugin_manager

__all__ = ["cli", "main"]

_GROUP_FLAGS = frozenset({"--debug", "--version", "--help", "-h"})
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


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


class _TerminalProgress:
    """A one-line live status on a terminal: tensors done, bytes, rate and the current tensor.

    Drawn on stderr only when it is a terminal, so pipes and logs stay clean; at most ten
    redraws a second, and the line is erased when the work ends (the summary line follows).
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._started = time.perf_counter()
        self._drawn = 0.0
        self._tensors = 0
        self._bytes = 0

    @classmethod
    @contextlib.contextmanager
    def for_stderr(cls, *, enabled: bool = True) -> Iterator[_TerminalProgress | None]:
        stream = sys.stderr
        if not enabled or not stream.isatty():
            yield None
            return
        progress = cls(stream)
        try:
            yield progress
        finally:
            progress.close()

    def __call__(self, name: str, nbytes: int) -> None:
        self._tensors += 1
        self._bytes += nbytes
        now = time.perf_counter()
        if now - self._drawn < 0.1:
            return
        self._drawn = now
        rate = self._bytes / max(now - self._started, 1e-9)
        line = f"{self._tensors} tensors, {_human(self._bytes)}, {_human(rate)}/s  {name}"
        width = shutil.get_terminal_size((80, 20)).columns - 1
        self._stream.write("\r" + line[:width].ljust(width))
        self._stream.flush()

    def close(self) -> None:
        if self._drawn:
            width = shutil.get_terminal_size((80, 20)).columns - 1
            self._stream.write("\r" + " " * width + "\r")
            self._stream.flush()


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
            help=f"Default mode: each tensor keeps a weight SNR of DB or more (default {nnc.DEFAULT_SNR_DB:g}; "
            "1-D tensors get 20 dB more).",
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
            snr_db=nnc.DEFAULT_SNR_DB if snr_db is None else snr_db,
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
    metavar="BASE.nnr",
    help="Incremental update: into NNR, code only the differences to this base model; "
    "from NNR, restore the model from an update and this base.",
)
@click.option(
    "--cluster",
    metavar="ADDRESS",
    help="Code (or decode) the tensors on a Dask distributed cluster, e.g. tcp://host:8786; same bytes.",
)
@click.option("--send-tensors", is_flag=True, help="With --cluster: send tensors to the workers (no shared storage).")
@_coding_options
def convert(
    source: str,
    target: str,
    from_format: str | None,
    to_format: str | None,
    force: bool,
    quiet: bool,
    base: str | None,
    cluster: str | None,
    send_tensors: bool,
    **coding: object,
) -> None:
    """Convert SOURCE to TARGET; formats follow from the paths (`.nnr` is an NNR bitstream).

    Coding into NNR is lossy by default (each tensor at the --snr target); use --lossless for
    bit-identical tensors. With --base BASE.nnr the NNR file is an incremental update of BASE.
    """
    options = _make_options(**coding)  # type: ignore[arg-type]
    with BarProgress.for_stderr(enabled=not quiet) as progress:
        result = _api.convert(
            source,
            target,
            from_format=from_format,
            to_format=to_format,
            force=force,
            options=options,
            jobs=coding["jobs"],  # type: ignore[arg-type]
            progress=progress,
            base=base,
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
def inspect(path: str, as_json: bool, original: str | None) -> None:
    """Show the units of an NNR bitstream: offsets, sizes, payload type, QP, step, bits/parameter, tensor."""
    units = _api.inspect(path, original=original)
    if as_json:
        for unit in units:
            click.echo(json.dumps(_unit_dict(unit)))
        return
    click.echo(
        f"{'#':>4} {'unit':<8} {'offset':>10} {'size':>10}  {'payload':<16} {'shape':<18} "
        f"{'QP':>5} {'step':>10} {'bits/p':>7}{' SNR dB' if original else ''}  tensor / details"
    )
    parameters = 0
    for unit in units:
        shape = "x".join(str(d) for d in unit.shape) if unit.shape else ""
        if unit.shape:
            parameters += _count(unit.shape)
        detail = unit.tensor if unit.tensor is not None else (unit.topology_storage_format or "")
        qp = "" if unit.qp is None else str(unit.qp)
        step = "" if unit.step is None else f"{unit.step:.4g}"
        bits = "" if unit.bits_per_parameter is None else f"{unit.bits_per_parameter:.2f}"
        snr = ""
        if original:
            snr = " " + (f"{'':>6}" if unit.snr_db is None else f"{_db(unit.snr_db):>6}")
        click.echo(
            f"{unit.index:>4} {unit.unit_type:<8} {unit.byte_offset:>10} {unit.size:>10}  "
            f"{unit.payload_type or '':<16} {shape:<18} {qp:>5} {step:>10} {bits:>7}{snr}  {detail}"
        )
    ndus = sum(1 for u in units if u.tensor is not None)
    total = sum(u.size for u in units)
    click.echo(f"total: {len(units)} units, {ndus} data units, {parameters:,} parameters, {total:,} bytes")


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
    """Compare the tensors of two models (any formats, NNR included); exit 1 if they differ."""
    comparison = _api.compare(_api.load(first), _api.load(second))
    for d in comparison.differences:
        if show_all or not d.bit_identical:
            state = "identical" if d.bit_identical else f"max |diff| {d.max_abs:.6g}"
            click.echo(f"{d.name}: {d.dtype} {list(d.shape)} {state}")
    for name in comparison.only_in_first:
        click.echo(f"{name}: only in {first}")
    for name in comparison.only_in_second:
        click.echo(f"{name}: only in {second}")
    same = sum(d.bit_identical for d in comparison.differences)
    click.echo(
        f"{len(comparison.differences)} tensors compared, {same} bit-identical, "
        f"largest difference {comparison.max_abs:.6g}"
    )
    if not comparison.identical:
        sys.exit(1)


_plugin_commands_added = False


@cli.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option("--from", "from_format", metavar="FORMAT", help="Input format (default: detected).")
@click.option("--inputs", type=click.Path(path_type=str), help="An .npz with one array per model input.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--atol", type=float, help="Absolute tolerance; exit 1 if any output differs by more.")
@click.option("--rtol", type=float, help="Relative tolerance (combined with --atol as |a-b| <= atol + rtol*|a|).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
@_coding_options
def check(
    path: str,
    from_format: str | None,
    inputs: str | None,
    seed: int,
    atol: float | None,
    rtol: float | None,
    as_json: bool,
    **coding: object,
) -> None:
    """Round-trip PATH through NNR and compare the native runtime's outputs before and after."""
    from nnrconv._check import check as run_check

    options = _make_options(**coding)  # type: ignore[arg-type]
    report = run_check(path, format=from_format, inputs=inputs, seed=seed, atol=atol, rtol=rtol, options=options)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print_check(report)
    if not report.passed:
        sys.exit(1)


def _db(value: float) -> str:
    return "inf" if value == float("inf") else f"{value:.1f}"


def _print_check(report) -> None:  # type: ignore[no-untyped-def]
    verdict = "EXACT (lossless round trip)" if report.exact else ("PASSED" if report.passed else "FAILED")
    if not report.exact and report.atol is None and report.rtol is None:
        verdict = "LOSSY (no tolerance given)"
    click.echo(f"check {report.source} ({report.format}): {verdict}")
    click.echo(
        f"sizes: original {_human(report.original_bytes)}, NNR {_human(report.nnr_bytes)}, "
        f"ratio {report.ratio:.3f}, {report.bits_per_parameter:.2f} bits/parameter "
        f"over {report.parameters:,} parameters"
    )
    click.echo("outputs:" if report.runnable else "outputs: none (the model has no graph to run; tensors compared)")
    for o in report.outputs:
        agreement = "" if o.argmax_agreement is None else f", argmax agreement {100 * o.argmax_agreement:.1f}%"
        flag = "" if o.within_tolerance else "  <-- exceeds tolerance"
        click.echo(
            f"  {o.name} {list(o.shape)}: max abs {o.max_abs:.3g}, max rel {o.max_rel:.3g}, "
            f"SNR {_db(o.snr_db)} dB{agreement}{flag}"
        )
    same = sum(t.bit_identical for t in report.tensors)
    click.echo(f"weights: {same} of {len(report.tensors)} bit-identical")
    for t in report.tensors:
        state = "identical" if t.bit_identical else f"max abs {t.max_abs:.3g}"
        flag = "" if t.within_tolerance else "  <-- exceeds tolerance"
        click.echo(f"  {t.name} {t.dtype} {list(t.shape)}: SNR {_db(t.snr_db)} dB, {state}{flag}")
    click.echo("times: " + ", ".join(f"{k} {v:.3f} s" for k, v in report.seconds.items()))


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
    try:
        _add_plugin_commands()
        cli.main(args=args, prog_name="nnrconv", standalone_mode=False)
    except NNRConvError as err:
        if debug:
            raise
        click.echo(f"nnrconv: error: {err}", err=True)
        return err.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("nnrconv: aborted", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("nnrconv: interrupted", err=True)
        return EXIT_INTERRUPTED
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:
        if debug:
            raise
        click.echo(f"nnrconv: internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)", err=True)
        return EXIT_INTERNAL
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
