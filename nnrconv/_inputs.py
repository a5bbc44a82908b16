# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Where model inputs come from, for `check` and calibration: given files, or synthesized.

One place for feeds: `--input-shape` text, `.npz` files or folders of them, and seeded synthetic
inputs shaped from the plugin's `InputSpec`s.

NOTE: free dimensions are resolved in this order: `--input-shape`; what the plugin resolved
(shape inference, model metadata: dims given as ints); then the defaults below, by the dimension's
name, else by its position. They are larger than 1 because real models need room: a reflect Pad
fails on a length-1 signal, and an OCR recognizer fed 32x32 outputs all zeros.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnrconv.core import DType, FormatError, InputSpec, UnsupportedError, UsageError

__all__ = [
    "DEFAULT_DIMS",
    "FALLBACK_IMAGE_SIZES",
    "InputHint",
    "fallback_shapes",
    "load_feeds",
    "parse_input_shapes",
    "resolve_shape",
    "synthesize_feeds",
]

DEFAULT_DIMS: dict[str, int] = {
    "batch": 1,
    "sequence": 64,
    "samples": 16000,
    "spatial": 224,
    "channels": 3,
    "other": 64,
}
"""Sizes of free dimensions by kind. Kinds come from the dimension's name (see `_NAME_KINDS`),
else its position: the first dimension of an input of rank ≥ 2 is the batch; the second of a
rank-2 input is a signal's samples for floats (audio: [batch, samples]) and a sequence for
integers (token ids); the second of a rank-3 input is a sequence ([batch, time, features]); in a
rank-4 input the second is channels and the last two spatial; anything else is "other"."""

_NAME_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("batch", ("batch", "bs", "n")),
    ("samples", ("sample", "audio", "wav", "signal", "waveform", "pcm")),
    ("sequence", ("seq", "token", "len", "time", "frame", "step", "word", "sentence", "t")),
    ("spatial", ("height", "width", "h", "w", "rows", "cols")),
    ("channels", ("channel", "c")),
)
"""A name is of a kind when it equals one of the words, or (for words of 3+ letters) contains it."""

_TEXT_LINE_ASPECT = 320 / 48
"""A rank-4 image with one fixed spatial size and one free one is a text line (OCR recognizers:
32x100, 48x320): the free side gets the fixed one times this, rounded up to a multiple of 32."""

_INT_DEFAULT_RANGE = (0.0, 4.0)


@dataclass(frozen=True, slots=True)
class InputHint:
    """What a caller knows about one input's values, overriding the plugin's.

    Attributes:
        low, high: integers are drawn from [low, high); floats uniformly from [low, high).
        constant: every element this value (e.g. an attention mask of ones).
    """

    low: float | None = None
    high: float | None = None
    constant: float | None = None


def parse_input_shapes(items: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """`--input-shape` values, "name:1,3,224,224" each (the name may itself hold ':').

    Raises:
        UsageError: an item without a name or dims, a dimension that is not a positive integer,
            or one input given twice.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, text = item.rpartition(":")
        if not sep or not name:
            raise UsageError(f"--input-shape {item!r}: expected NAME:DIMS such as input:1,3,224,224")
        try:
            dims = tuple(int(d) for d in text.replace("x", ",").split(",")) if text.strip() else ()
        except ValueError:
            raise UsageError(f"--input-shape {item!r}: dimensions must be integers separated by commas") from None
        if any(d < 1 for d in dims):
            raise UsageError(f"--input-shape {item!r}: dimensions must be at least 1")
        if name in shapes:
            raise UsageError(f"--input-shape: input {name!r} is given twice")
        shapes[name] = dims
    return shapes


def _kind(name: str | None, position: int, rank: int, floating: bool, channels_last: bool) -> str:
    if name:
        lowered = name.lower()
        parts = "".join(c if c.isalnum() else " " for c in lowered).split()
        for kind, words in _NAME_KINDS:
            if any(w == lowered or w in parts or (len(w) >= 3 and w in lowered) for w in words):
                return kind
    if rank >= 2 and position == 0:
        return "batch"
    if rank == 2:
        return "samples" if floating else "sequence"
    if rank == 3 and position == 1:
        return "sequence"
    if rank == 4:
        return "channels" if position == (3 if channels_last else 1) else "spatial"
    return "other"


def _fixed(d: int | str | None) -> bool:
    return isinstance(d, int) and d > 0


def _channels_last(declared: Sequence[int | str | None]) -> bool:
    """A rank-4 image is NHWC when its last dim is a fixed channel count (1-4) and dim 1 is not."""
    second, last = declared[1], declared[3]
    channels_first = isinstance(second, int) and 0 < second <= 4
    return isinstance(last, int) and 0 < last <= 4 and not channels_first


def resolve_shape(spec: InputSpec, given: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """The concrete shape to feed: `given` (checked against fixed dims), else free dims by default.

    Raises:
        UsageError: `given` has another rank than the input or changes a fixed dimension.
    """
    declared = spec.dims if spec.dims is not None else spec.shape
    if given is not None:
        if len(given) != len(declared):
            raise UsageError(f"--input-shape {spec.name}: {len(given)} dimensions given, the input has {len(declared)}")
        for i, (want, got) in enumerate(zip(declared, given, strict=True)):
            if _fixed(want) and want != got:
                raise UsageError(f"--input-shape {spec.name}: dimension {i} is fixed at {want}, not {got}")
        return tuple(given)
    rank = len(declared)
    nhwc = rank == 4 and _channels_last(declared)
    shape = [d if isinstance(d, int) and d > 0 else 0 for d in declared]
    for i, d in enumerate(declared):
        if shape[i] == 0:
            kind = _kind(d if isinstance(d, str) else None, i, rank, spec.dtype.is_floating_point, nhwc)
            shape[i] = DEFAULT_DIMS[kind]
    if rank == 4:
        spatial = (1, 2) if nhwc else (2, 3)
        fixed = [_fixed(declared[i]) for i in spatial]
        if fixed.count(True) == 1:
            height = shape[spatial[0]] if fixed[0] else shape[spatial[1]]
            free = spatial[1] if fixed[0] else spatial[0]
            shape[free] = 32 * math.ceil(height * _TEXT_LINE_ASPECT / 32)
    return tuple(shape)


FALLBACK_IMAGE_SIZES: tuple[tuple[int, int], ...] = ((48, 320), (32, 320), (64, 64))
"""Height x width tried, in order, for images with free spatial dims when the defaults fail to
run (PP-OCRv4's recognizer needs height 48) or give constant outputs."""


def fallback_shapes(
    specs: list[InputSpec], shapes: Mapping[str, tuple[int, ...]] = {}
) -> list[dict[str, tuple[int, ...]]]:
    """Other shapes to synthesize with when the defaults fail: FALLBACK_IMAGE_SIZES in the free
    spatial dims of every rank-4 input not given in `shapes` (empty when there is none)."""
    found: list[dict[str, tuple[int, ...]]] = []
    for height, width in FALLBACK_IMAGE_SIZES:
        alternative = dict(shapes)
        for spec in specs:
            declared = spec.dims if spec.dims is not None else spec.shape
            if spec.name in shapes or len(declared) != 4 or not spec.dtype.is_floating_point:
                continue
            axes = (1, 2) if _channels_last(declared) else (2, 3)
            if all(_fixed(declared[a]) for a in axes):
                continue
            shape = list(resolve_shape(spec))
            for axis, size in zip(axes, (height, width), strict=True):
                if not _fixed(declared[axis]):
                    shape[axis] = size
            alternative[spec.name] = tuple(shape)
        if alternative != dict(shapes) and alternative not in found:
            found.append(alternative)
    return found


def _value_range(spec: InputSpec, hint: InputHint | None) -> tuple[float, float] | None:
    if hint is not None and hint.low is not None and hint.high is not None:
        return hint.low, hint.high
    return spec.value_range


def synthesize_feeds(
    specs: list[InputSpec],
    count: int,
    seed: int,
    shapes: Mapping[str, tuple[int, ...]] = {},
    hints: Mapping[str, InputHint] = {},
) -> list[dict[str, np.ndarray]]:
    """`count` deterministic feeds (same seed, same arrays) shaped and ranged from the specs.

    Floats are standard normal (uniform in [low, high) with a hint); integers uniform in the
    plugin's or hint's [low, high), else [0, 4); booleans 0/1; an integer input named like a mask
    ("attention_mask") is all ones unless a range is known.

    Raises:
        UsageError: `shapes` names an input the model does not have, or misfits one.
        UnsupportedError: an input's element type cannot be synthesized (pass files instead).
    """
    known = {s.name for s in specs}
    unknown = sorted(set(shapes) - known)
    if unknown:
        raise UsageError(f"--input-shape names {unknown}, which the model does not take (inputs: {sorted(known)})")
    rng = np.random.default_rng(seed)
    resolved = [(spec, resolve_shape(spec, shapes.get(spec.name))) for spec in specs]
    feeds = []
    for _ in range(max(count, 0)):
        feeds.append({spec.name: _synthesize(spec, shape, hints.get(spec.name), rng) for spec, shape in resolved})
    return feeds


def _synthesize(
    spec: InputSpec, shape: tuple[int, ...], hint: InputHint | None, rng: np.random.Generator
) -> np.ndarray:
    dtype = spec.dtype
    if not dtype.is_numpy_native or dtype is DType.STRING:
        raise UnsupportedError(f"input {spec.name!r} has element type {dtype.name}; pass inputs with --inputs file.npz")
    storage = dtype.storage_dtype
    if hint is not None and hint.constant is not None:
        return np.full(shape, hint.constant, dtype=storage)
    value_range = _value_range(spec, hint)
    if dtype is DType.BOOL:
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.is_floating_point:
        if value_range is not None:
            return rng.uniform(value_range[0], value_range[1], shape).astype(storage)
        return rng.standard_normal(shape).astype(storage)
    if dtype.is_integer:
        if value_range is None and "mask" in spec.name.lower():
            return np.ones(shape, dtype=storage)
        low, high = value_range if value_range is not None else _INT_DEFAULT_RANGE
        info = np.iinfo(storage)
        low, high = max(math.ceil(low), int(info.min)), min(math.ceil(high), int(info.max) + 1)
        if high <= low:
            high = low + 1
        return rng.integers(low, high, shape, dtype=np.int64).astype(storage)
    raise UnsupportedError(f"input {spec.name!r} has element type {dtype.name}; pass inputs with --inputs file.npz")


def load_feeds(path: Path, specs: list[InputSpec]) -> list[dict[str, np.ndarray]]:
    """Feeds from an `.npz` file or a folder of them.

    A file holds one array per model input: an array with one more axis than the input's rank
    is a stack of samples along its first axis (one feed per sample; every input the same
    count), else the file is one feed. A folder holds one `.npz` per feed (sorted by name), its
    arrays exactly as the model takes them.

    Raises:
        FormatError: the path is missing, empty or not `.npz`; an input is missing or unknown;
            an array's dtype or rank misfits its input; sample counts differ. The message names
            the file and the input.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".npz" and p.is_file())
        if not files:
            raise FormatError(f"{path}: the folder holds no .npz input files")
        return [_one_feed(file, _read_npz(file, specs), specs) for file in files]
    if not path.is_file():
        raise FormatError(f"{path}: no such input file or folder")
    arrays = _read_npz(path, specs)
    known = [s for s in specs if _known(s)]  # inputs of unknown type and rank follow the others
    stacked = {s.name for s in known if arrays[s.name].ndim == _rank(s) + 1}
    if not stacked:
        return [_one_feed(path, arrays, specs)]
    if len(stacked) != len(known):
        one = sorted({s.name for s in known} - stacked)[0]
        raise FormatError(
            f"{path}: input {one!r} is not stacked by samples while {sorted(stacked)[0]!r} is; "
            f"stack every input along a first axis, or none"
        )
    counts = {name: arrays[name].shape[0] for name in stacked}
    if len(set(counts.values())) != 1:
        raise FormatError(f"{path}: inputs hold different sample counts {counts}")
    count = next(iter(counts.values()))
    if count == 0:
        raise FormatError(f"{path}: the inputs hold no samples")
    feeds = [{name: np.ascontiguousarray(arrays[name][i]) for name in arrays} for i in range(count)]
    return [_one_feed(path, feed, specs) for feed in feeds]


def _known(spec: InputSpec) -> bool:
    """Whether the plugin knows the input's type and rank (TorchScript may know only its name)."""
    return spec.dtype is not DType.UNDEFINED


def _rank(spec: InputSpec) -> int:
    return len(spec.dims) if spec.dims is not None else len(spec.shape)


def _read_npz(path: Path, specs: list[InputSpec]) -> dict[str, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise FormatError(f"{path}: expected an .npz archive of named arrays, not a single array")
        with archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise FormatError(f"{path}: cannot read inputs (expected an .npz archive): {exc}") from None
    if not arrays:
        raise FormatError(f"{path}: the archive holds no arrays")
    wanted = [s.name for s in specs]
    missing = [n for n in wanted if n not in arrays]
    extra = sorted(set(arrays) - set(wanted))
    if missing or extra:
        problems = [f"input {missing[0]!r} is missing"] if missing else []
        problems += [f"array {extra[0]!r} is not an input of the model"] if extra else []
        raise FormatError(f"{path}: {' and '.join(problems)} (it takes {wanted})")
    return arrays


def _one_feed(path: Path, feed: dict[str, np.ndarray], specs: list[InputSpec]) -> dict[str, np.ndarray]:
    """Check one feed against the specs: exact dtype, rank, and fixed dimensions."""
    for spec in specs:
        if not _known(spec):
            continue
        array = feed[spec.name]
        expected = spec.dtype.storage_dtype if spec.dtype.is_numpy_native else None
        if expected is not None and array.dtype != expected:
            raise FormatError(f"{path}: input {spec.name!r} is {array.dtype}; the model takes {expected}")
        declared = spec.dims if spec.dims is not None else None
        if array.ndim != _rank(spec):
            raise FormatError(
                f"{path}: input {spec.name!r} has {array.ndim} dimensions {list(array.shape)}; "
                f"the model takes {_rank(spec)}"
            )
        if declared is not None:
            for i, (want, got) in enumerate(zip(declared, array.shape, strict=True)):
                if isinstance(want, int) and want > 0 and want != got:
                    raise FormatError(
                        f"{path}: input {spec.name!r} has size {got} in dimension {i}; the model fixes it at {want}"
                    )
    return feed
