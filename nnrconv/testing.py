# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""A round-trip test kit for format plugins, built-in and third-party alike.

A plugin author checks their format with the same assertions nnrconv applies to its own::

    from nnrconv.testing import assert_plugin_contract, assert_lossless_round_trip, registered

    def test_my_format(tmp_path):
        fmt = MyFormat()
        assert_plugin_contract(fmt)
        with registered(fmt):                       # or install the plugin and skip this
            assert_lossless_round_trip(tmp_path / "model.myfmt", tmp_path)

Nothing here needs pytest; failures raise AssertionError with a message naming the tensor.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from nnrconv import _api, _embedding, nnc
from nnrconv._check import CheckReport, random_inputs
from nnrconv.core import BitstreamError, CodedTensor, FormatPlugin, Model, Tensor, UnsupportedError, get_registry

__all__ = [
    "assert_corrupt_unit_refused",
    "assert_embedded_round_trip",
    "assert_errors_within_half_a_step",
    "assert_lossless_round_trip",
    "assert_models_identical",
    "assert_plugin_contract",
    "registered",
    "tensor_bytes",
]

_KNOWN_TOPOLOGY_CODES = {1, 2, 3, 4}


@contextlib.contextmanager
def registered(fmt: FormatPlugin, *, plugin: str = "test") -> Iterator[FormatPlugin]:
    """Make `fmt` known to this process's registry for the duration of a `with` block."""
    registry = get_registry()
    registry.add(fmt, plugin=plugin)
    try:
        yield fmt
    finally:
        registry.remove(fmt.name)
    assert fmt.name not in registry.names(), f"format {fmt.name!r} is still registered"


def assert_plugin_contract(fmt: FormatPlugin) -> None:
    """Static promises of a format: identity, patterns, topology code, embedding methods in pairs,
    lazy framework imports."""
    assert isinstance(fmt.name, str) and fmt.name and fmt.name == fmt.name.lower(), "name: non-empty lower case"
    assert fmt.patterns, f"format {fmt.name!r} declares no file patterns"
    if fmt.topology_code is not None:
        assert fmt.topology_code in _KNOWN_TOPOLOGY_CODES, (
            f"format {fmt.name!r}: topology code {fmt.topology_code} is not one of NNEF 1, ONNX 2, PyTorch 3, "
            f"TensorFlow 4"
        )
        capabilities = set(fmt.capabilities())
        assert {"topology_bytes", "from_topology"} <= capabilities, (
            f"format {fmt.name!r} owns a topology code but does not implement topology_bytes/from_topology"
        )
    capabilities = set(fmt.capabilities())
    if "save_embedded" in capabilities or "extract_embedded" in capabilities:
        assert {"save_embedded", "extract_embedded"} <= capabilities and fmt.embedded_patterns, (
            f"format {fmt.name!r}: NNR inside the container needs save_embedded, extract_embedded "
            f"and embedded_patterns together"
        )
    if fmt.requires and not fmt.install:
        raise AssertionError(f"format {fmt.name!r} requires {fmt.requires} but names no install command")
    module = type(fmt).__module__.split(".")[0]
    probe = (
        f"import sys, {module}\n"
        f"loaded = [m for m in {list(fmt.requires)!r} if m in sys.modules and m not in ('numpy',)]\n"
        "print(loaded)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"importing {module} fails: {result.stderr.strip().splitlines()[-1:]}"
    out = result.stdout
    assert out.strip() == "[]", f"importing {module} imports its framework ({out.strip()}); import it lazily"


def tensor_bytes(tensor: Tensor) -> bytes:
    """The tensor's data as comparable bytes; string tensors by value, not by object address."""
    array = tensor.numpy()
    if array.dtype == object:
        return b"\0".join(bytes(v) for v in array.reshape(-1)) + f"|{array.size}".encode()
    return np.ascontiguousarray(array).tobytes()


def assert_models_identical(first: Model, second: Model) -> None:
    """Same tensor names, dtypes, shapes and bytes."""
    assert set(first.tensors) == set(second.tensors), (
        f"tensor names differ: {sorted(set(first.tensors) ^ set(second.tensors))[:5]}"
    )
    for name, a in first.tensors.items():
        b = second.tensors[name]
        assert (a.dtype, a.shape) == (b.dtype, b.shape), (
            f"tensor {name!r}: {a.dtype.name}{list(a.shape)} became {b.dtype.name}{list(b.shape)}"
        )
        assert tensor_bytes(a) == tensor_bytes(b), f"tensor {name!r} is not bit-identical"


def assert_lossless_round_trip(source: Path, workdir: Path, *, format: str | None = None) -> Path:
    """native -> .nnr (lossless) -> native: bit-identical tensors and, with a runner, identical outputs.

    Returns:
        The rebuilt native model's path (same name as `source`, inside `workdir/back`).
    """
    source, workdir = Path(source), Path(workdir)
    bitstream = workdir / f"{source.name}.nnr"
    back_dir = workdir / "back"
    back_dir.mkdir(parents=True, exist_ok=True)
    back = back_dir / source.name
    options = nnc.CodingOptions(lossless=True)
    _api.convert(source, bitstream, from_format=format, force=True, options=options)
    _api.convert(bitstream, back, to_format=format, force=True)
    original, rebuilt = _api.load(source, format), _api.load(back, format)
    assert_models_identical(original, rebuilt)
    fmt = _api._plugin(original.source_format) if original.source_format else None
    if fmt is not None and "run" in fmt.capabilities():
        try:
            inputs = random_inputs(fmt.input_specs(original), seed=0)
        except UnsupportedError:
            return back
        before, after = fmt.run(original, inputs), fmt.run(rebuilt, inputs)
        assert before.keys() == after.keys(), "the rebuilt model has different outputs"
        for name in before:
            assert np.array_equal(before[name], after[name]), f"output {name!r} differs after a lossless round trip"
    return back


def assert_embedded_round_trip(source: Path, embedded: Path, *, format: str | None = None) -> Model:
    """native -> NNR inside the native container (lossless) -> read back: bit-identical tensors.

    `embedded` is an output name the format's `embedded_patterns` match (e.g. ``model.nnr.onnx``).
    The coded tensors must come back as `CodedTensor`s holding their units, not yet decoded, and
    converting the container to `.nnr` must copy those units unchanged.

    Returns:
        The model read back from `embedded` (its coded tensors decoded by the comparison).
    """
    source, embedded = Path(source), Path(embedded)
    _api.convert(source, embedded, from_format=format, force=True, options=nnc.CodingOptions(lossless=True))
    loaded = _api.load(embedded, format)
    coded = [t for t in loaded if isinstance(t, CodedTensor)]
    assert coded, f"{embedded.name}: no tensor came back NNR-coded"
    assert not any(t.is_decoded for t in coded), f"{embedded.name}: coded tensors were decoded on reading"
    assert_models_identical(_api.load(source, format), loaded)
    bitstream = embedded.with_name(embedded.name + ".nnr")
    _api.convert(embedded, bitstream, from_format=format, force=True)
    units = _embedding.coded_units(_api.load(bitstream))
    assert units is not None and units[1] == {t.name: t.ndu for t in coded}, "units changed on the way to .nnr"
    return loaded


def assert_corrupt_unit_refused(embedded: Path, *, format: str | None = None) -> None:
    """Every single-byte change inside one coded unit of `embedded` is refused with a `BitstreamError`
    naming the file (on reading or, at the latest, when the tensor is decoded), never a silent change.

    The unit is located by its bytes in the file, so the check works for any container that stores
    units as they are; a container that transforms them (compresses, encodes as text) is skipped.
    """
    embedded = Path(embedded)
    loaded = _api.load(embedded, format)
    coded = next((t for t in loaded if isinstance(t, CodedTensor) and len(t.ndu) > 8), None)
    assert coded is not None, f"{embedded.name}: no coded tensor to damage"
    data = embedded.read_bytes() if embedded.is_file() else b""
    at = data.find(coded.ndu)
    if at < 0:
        return
    original = tensor_bytes(coded)
    damaged_path = embedded.with_name("damaged-" + embedded.name)
    for offset in sorted({len(coded.ndu) // 2, len(coded.ndu) - 1}):
        damaged = bytearray(data)
        damaged[at + offset] ^= 0x5A
        damaged_path.write_bytes(bytes(damaged))
        try:
            model = _api.load(damaged_path, format)
            changed = tensor_bytes(model.tensors[coded.name]) != original
        except BitstreamError as exc:
            assert str(damaged_path) in str(exc), f"the error does not name the file: {exc}"
            continue
        raise AssertionError(
            f"{embedded.name}: a damaged byte at offset {offset} of unit {coded.name!r} was "
            f"{'decoded to different values' if changed else 'accepted'} without an error"
        )
    damaged_path.unlink()


def assert_errors_within_half_a_step(report: CheckReport, qp: int) -> None:
    """A `check` report of uniform coding (`CodingOptions(qp=qp, dq=False)`) obeys its step size.

    Every float32 weight moves by at most half a quantization step (tensors of fewer than two
    dimensions use the finer QP qp - 8), at least one weight actually changed, and the report is
    not called exact.
    """
    assert not report.exact, "a lossy check must not be reported exact"
    floats = [t for t in report.tensors if t.dtype == "FLOAT" and t.shape and all(t.shape)]
    assert any(not t.bit_identical for t in floats), "no float weight changed: was the coding lossy?"
    for tensor in floats:
        half = nnc.cabac.step_size(qp if len(tensor.shape) >= 2 else qp - 8) / 2
        assert tensor.max_abs <= half * (1 + 1e-6), (
            f"tensor {tensor.name!r} moved by {tensor.max_abs:.3g}, more than half a step ({half:.3g})"
        )
