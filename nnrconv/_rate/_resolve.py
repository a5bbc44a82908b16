# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Turn a rate target of `CodingOptions` into a per-tensor plan nnc codes (the API layer's seam).

With a runner (the format plugin's `run`), targets are measured on the model's outputs over the
calibration feeds (or seeded synthetic ones); without one, `bits_per_param` and `size_bytes` use
the weight domain (least total squared weight error within the budget, never worse than one
global QP there) and `output_snr_db` cannot be met.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nnrconv import nnc
from nnrconv._rate._allocate import Allocation, Allocator
from nnrconv._rate._compensate import Compensation
from nnrconv._rate._curves import RateCurves, lossy_tensors, make_units
from nnrconv._rate._feeds import calibration_feeds
from nnrconv._rate._hessian import layer_hessians
from nnrconv._rate._measure import OutputProbe
from nnrconv._rate._mixed import MixedCurves
from nnrconv.core import FormatPlugin, Model, NNRConvError, UnsupportedError

__all__ = ["Resolved", "prepare", "resolve"]


@dataclass(frozen=True, slots=True)
class Resolved:
    """The options with their plan, the allocation behind it, one line saying which it was, and
    the model to code: the input's, or a copy whose error-compensated tensors replace its own."""

    options: nnc.CodingOptions
    allocation: Allocation
    summary: str
    model: Model


def prepare(
    model: Model,
    fmt: FormatPlugin | None,
    *,
    calibration: str | os.PathLike[str] | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    seed: int = 0,
    need_runner: bool = False,
    jobs: int | None = None,
) -> tuple[Allocator, str]:
    """An allocator over the model's lossy float tensors, and where its measurements come from."""
    tensors = lossy_tensors({t.name: t.numpy() for t in model if t.dtype.is_numpy_native and t.dtype.is_floating_point})
    if not tensors:
        raise UnsupportedError("the model has no lossy float tensor to allocate bits to")
    curves = RateCurves(tensors, jobs=jobs or min(4, os.cpu_count() or 1))
    units = make_units(tensors)
    runnable = fmt is not None and fmt.can_run(model)
    if not runnable:
        if need_runner or calibration is not None:
            raise UnsupportedError(
                "an output target needs a model the format can run; this one has no runner "
                "(use --bits-per-param, --size or --snr)"
            )
        return Allocator(units, curves, None), "weight domain, no runner"
    assert fmt is not None
    feeds, real = calibration_feeds(calibration, fmt.input_specs(model), shapes=dict(input_shapes or {}), seed=seed)
    try:
        probe = OutputProbe(fmt, model, feeds)
    except NNRConvError as exc:
        if need_runner or calibration is not None:
            raise UnsupportedError(f"{exc}; give calibration inputs or --input-shape NAME:DIMS") from exc
        return Allocator(units, curves, None), "weight domain: the model did not run on synthetic inputs"
    if not probe.names:
        if need_runner:
            raise UnsupportedError("the model has no float output that varies on the calibration inputs")
        return Allocator(units, curves, None), "weight domain: no float output varies"
    where = f"{_samples(feeds)} calibration samples" if real else "synthetic inputs"
    allocator = Allocator(units, curves, probe)
    if real:  # layer inputs of noise carry no correlation worth compensating (not measured)
        try:
            hessians = layer_hessians(fmt, model, feeds, tensors)
        except NNRConvError:  # the runtime could not return the layer inputs: code without
            hessians = {}
        if hessians:
            twin = RateCurves(tensors, jobs=curves.jobs, compensation=Compensation(tensors, hessians))
            allocator.compensated = Allocator(units, MixedCurves(curves, twin), probe)
    return allocator, where


def resolve(
    model: Model,
    fmt: FormatPlugin | None,
    options: nnc.CodingOptions,
    *,
    measure_size: Callable[[nnc.CodingOptions], int],
    calibration: str | os.PathLike[str] | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    seed: int = 0,
) -> Resolved:
    """The plan meeting `options.target`.

    `measure_size(options)` codes the model and returns the output's size in bytes (for
    `size_bytes`, whose budget includes topology and headers).

    Raises:
        UnsupportedError: the target is out of reach (the message names the closest reachable
            value), or an output target without a runnable model.
    """
    target = options.target
    assert target is not None
    kind, value = target
    allocator, where = prepare(
        model,
        fmt,
        calibration=calibration,
        input_shapes=input_shapes,
        seed=seed,
        need_runner=kind == "output_snr_db",
        jobs=options.jobs,
    )
    params = sum(a.size for a in allocator.curves.tensors.values())
    if kind == "output_snr_db":
        allocation = allocator.for_output_snr(value)
        if allocator.compensated is not None:  # both meet the target: the smaller wins
            other = allocator.compensated.for_output_snr(value)
            if other.output_snr_db >= value and other.payload_bytes < allocation.payload_bytes:
                allocation = dataclasses.replace(
                    other, global_qp=allocation.global_qp, global_bytes=allocation.global_bytes,
                    global_snr_db=allocation.global_snr_db,
                )  # fmt: skip
        options = dataclasses.replace(options, plan=allocation.plan)
        what = f"output SNR {_db(allocation.output_snr_db)} dB on {where}"
    else:
        overhead = _overhead(allocator, options, measure_size, kind)
        budget = (value * params / 8.0 if kind == "bits_per_param" else value) - overhead
        try:
            allocation = allocator.for_bytes(int(budget))
            if allocator.compensated is not None:  # both fit the budget: the more faithful wins
                other = allocator.compensated.for_bytes(int(budget))
                if other.output_snr_db > allocation.output_snr_db:
                    allocation = dataclasses.replace(
                        other, global_qp=allocation.global_qp, global_bytes=allocation.global_bytes,
                        global_snr_db=allocation.global_snr_db,
                    )  # fmt: skip
        except UnsupportedError:
            least = allocator.size(allocator.uniform(60)) + overhead
            reach = (
                f"{8 * least / params:.3f} bits per parameter" if kind == "bits_per_param" else f"{int(least)} bytes"
            )
            raise UnsupportedError(f"the budget is out of reach: the smallest coding needs {reach}") from None
        options = dataclasses.replace(options, plan=allocation.plan)
        fidelity = "weight SNR" if allocator.probe is None else "output SNR"
        what = f"{fidelity} {_db(allocation.output_snr_db)} dB ({where})"
    ratio = allocation.global_bytes / allocation.payload_bytes if allocation.payload_bytes else 1.0
    if allocation.replaced:
        assert allocator.probe is not None
        model = allocator.probe.with_tensors(allocation.replaced)
        plan = "per-tensor allocation" if allocation.method == "per-tensor" else "one global QP"
        summary = f"{plan} with {len(allocation.replaced)} error-compensated layers, {what}; "
        summary += (
            f"one global QP {allocation.global_qp} would take {ratio:.2f}x the bytes"
            if kind == "output_snr_db"
            else f"one global QP {allocation.global_qp}: {_db(allocation.global_snr_db)} dB"
        )
    elif allocation.method == "per-tensor":
        summary = (
            f"per-tensor allocation, {what}; one global QP {allocation.global_qp} would take {ratio:.2f}x the bytes"
        )
        if kind != "output_snr_db":
            fidelity = _db(allocation.global_snr_db)
            summary = f"per-tensor allocation, {what}; one global QP {allocation.global_qp}: {fidelity} dB"
    else:
        summary = f"one global QP {allocation.global_qp} (no per-tensor plan did better), {what}"
    return Resolved(options, allocation, summary, model)


def _overhead(
    allocator: Allocator, options: nnc.CodingOptions, measure_size: Callable[[nnc.CodingOptions], int], kind: str
) -> float:
    """Bytes outside the planned payloads: NDU headers (bits_per_param) or everything (size_bytes)."""
    qps = allocator.uniform(-32)
    plan = dataclasses.replace(options, plan=allocator._result(qps, "", 0, 0.0, -32, 0, 0.0).plan)
    payload = allocator.size(qps)
    if kind == "size_bytes":
        return float(measure_size(plan) - payload)
    _, ndus = nnc.encode_parts(allocator.curves.tensors, plan)
    return float(sum(len(u) for u in ndus.values()) - payload)


def _samples(feeds: list[dict]) -> int:
    """Samples in the feeds: the first axis of each feed's first input."""
    return sum(next(iter(f.values())).shape[0] if f and next(iter(f.values())).ndim else 1 for f in feeds)


def _db(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.1f}"
