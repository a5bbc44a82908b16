# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""nnrconv._inputs: --input-shape text, .npz feeds and folders, and synthesized feeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nnrconv._inputs import DEFAULT_DIMS, InputHint, load_feeds, parse_input_shapes, resolve_shape, synthesize_feeds
from nnrconv.core import DType, FormatError, InputSpec, UnsupportedError, UsageError

IMAGE = InputSpec("image", DType.FLOAT, (1, 3, 1, 1), (None, 3, "height", "width"))
IDS = InputSpec("input_ids", DType.INT64, (1, 1), ("batch", "sequence"), (0.0, 30522.0))
MASK = InputSpec("attention_mask", DType.INT64, (1, 1), ("batch", "sequence"))


def test_parse_input_shapes() -> None:
    assert parse_input_shapes(["x:1,3,224,224", "serving_default_x:0:1,16", "s:"]) == {
        "x": (1, 3, 224, 224),
        "serving_default_x:0": (1, 16),
        "s": (),
    }


@pytest.mark.parametrize("text", ["x", ":1,2", "x:1,a", "x:0,3", "x:-1"])
def test_bad_input_shapes_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="--input-shape") as err:
        parse_input_shapes([text])
    assert err.value.exit_code == 2 and "\n" not in str(err.value)


def test_an_input_given_twice_is_refused() -> None:
    with pytest.raises(UsageError, match="'x' is given twice"):
        parse_input_shapes(["x:1", "x:2"])


def test_free_dims_resolve_by_name_then_position() -> None:
    assert resolve_shape(IMAGE) == (1, 3, 224, 224)
    assert resolve_shape(IDS) == (1, DEFAULT_DIMS["sequence"])
    audio = InputSpec("input", DType.FLOAT, (1, 1), (None, None))
    assert resolve_shape(audio) == (1, DEFAULT_DIMS["samples"])  # a reflect Pad needs more than 1
    frames = InputSpec("x", DType.FLOAT, (1, 1, 40), (None, None, 40))
    assert resolve_shape(frames) == (1, DEFAULT_DIMS["sequence"], 40)
    nhwc = InputSpec("x", DType.FLOAT, (1, 1, 1, 3), (None, None, None, 3))  # TensorFlow's layout
    assert resolve_shape(nhwc) == (1, 224, 224, 3)
    legacy = InputSpec("x", DType.FLOAT, (1, 3, 8, 8))  # a plugin without dims: shape is taken as is
    assert resolve_shape(legacy) == (1, 3, 8, 8)
    assert all(size > 1 for kind, size in DEFAULT_DIMS.items() if kind != "batch")


def test_a_text_line_gets_an_ocr_width() -> None:
    rec = InputSpec("x", DType.FLOAT, (1, 3, 48, 1), ("batch", 3, 48, "width"))
    assert resolve_shape(rec) == (1, 3, 48, 320)
    old_rec = InputSpec("x", DType.FLOAT, (1, 3, 32, 1), (None, 3, 32, None))
    assert resolve_shape(old_rec) == (1, 3, 32, 224)
    nhwc_rec = InputSpec("x", DType.FLOAT, (1, 48, 1, 3), (None, 48, None, 3))
    assert resolve_shape(nhwc_rec) == (1, 48, 320, 3)


def test_given_shapes_win_and_must_fit() -> None:
    assert resolve_shape(IMAGE, (2, 3, 64, 96)) == (2, 3, 64, 96)
    with pytest.raises(UsageError, match="dimension 1 is fixed at 3"):
        resolve_shape(IMAGE, (1, 4, 64, 64))
    with pytest.raises(UsageError, match="3 dimensions given, the input has 4"):
        resolve_shape(IMAGE, (1, 3, 64))
    with pytest.raises(UsageError, match=r"names \['nope'\]"):
        synthesize_feeds([IMAGE], 1, 0, {"nope": (1,)})


def test_synthesized_feeds_are_deterministic_and_in_range() -> None:
    first = synthesize_feeds([IDS, MASK, IMAGE], 3, seed=5)
    again = synthesize_feeds([IDS, MASK, IMAGE], 3, seed=5)
    other = synthesize_feeds([IDS, MASK, IMAGE], 3, seed=6)
    assert len(first) == 3
    for a, b in zip(first, again, strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(first[0]["image"], other[0]["image"])
    assert not np.array_equal(first[0]["image"], first[1]["image"])  # samples differ
    ids = np.concatenate([f["input_ids"].ravel() for f in first])
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 30522 and ids.max() > 1000
    assert all(np.all(f["attention_mask"] == 1) for f in first)  # a mask of ones
    assert first[0]["image"].dtype == np.float32 and first[0]["image"].shape == (1, 3, 224, 224)


def test_hints_override_ranges() -> None:
    spec = InputSpec("idx", DType.INT32, (4,))
    feed = synthesize_feeds([spec], 1, 0, hints={"idx": InputHint(low=10, high=12)})[0]
    assert set(feed["idx"].tolist()) <= {10, 11}
    plain = synthesize_feeds([spec], 1, 0)[0]
    assert plain["idx"].min() >= 0 and plain["idx"].max() < 4
    x = InputSpec("x", DType.FLOAT16, (8,))
    assert np.all(synthesize_feeds([x], 1, 0, hints={"x": InputHint(constant=0.5)})[0]["x"] == 0.5)
    uniform = synthesize_feeds([x], 1, 0, hints={"x": InputHint(low=0, high=1)})[0]["x"]
    assert uniform.dtype == np.float16 and uniform.min() >= 0 and uniform.max() <= 1


def test_unsynthesizable_inputs_say_what_to_do() -> None:
    with pytest.raises(UnsupportedError, match="--inputs"):
        synthesize_feeds([InputSpec("s", DType.STRING, (1,))], 1, 0)


def test_npz_with_a_samples_axis_is_one_feed_per_sample(tmp_path: Path) -> None:
    spec = InputSpec("x", DType.FLOAT, (1, 4), (None, 4))
    stacked = np.arange(24, dtype=np.float32).reshape(3, 2, 4)
    np.savez(tmp_path / "s.npz", x=stacked, input_ids=np.zeros((3, 1, 5), np.int64))
    feeds = load_feeds(tmp_path / "s.npz", [spec, InputSpec("input_ids", DType.INT64, (1, 5))])
    assert len(feeds) == 3 and np.array_equal(feeds[2]["x"], stacked[2])
    np.savez(tmp_path / "one.npz", x=stacked[0])
    feeds = load_feeds(tmp_path / "one.npz", [spec])
    assert len(feeds) == 1 and np.array_equal(feeds[0]["x"], stacked[0])


def test_a_folder_holds_one_feed_per_file_in_name_order(tmp_path: Path) -> None:
    spec = InputSpec("x", DType.FLOAT, (1, 2))
    for i in (2, 0, 1):
        np.savez(tmp_path / f"f{i}.npz", x=np.full((1, 2), i, np.float32))
    (tmp_path / "notes.txt").write_text("ignored")
    feeds = load_feeds(tmp_path, [spec])
    assert [float(f["x"][0, 0]) for f in feeds] == [0.0, 1.0, 2.0]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({}, "holds no arrays"),
        ({"y": np.zeros((1, 4), np.float32)}, "input 'x' is missing and array 'y' is not an input"),
        ({"x": np.zeros((1, 4), np.float64)}, "input 'x' is float64; the model takes float32"),
        ({"x": np.zeros((1, 4, 1, 1), np.float32)}, "input 'x' has 4 dimensions"),
        ({"x": np.zeros((1, 5), np.float32)}, "input 'x' has size 5 in dimension 1; the model fixes it at 4"),
        ({"x": np.zeros((0, 1, 4), np.float32)}, "no samples"),
    ],
)
def test_bad_npz_is_a_one_line_format_error(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "in.npz"
    np.savez(path, **arrays)
    with pytest.raises(FormatError, match=message) as err:
        load_feeds(path, [InputSpec("x", DType.FLOAT, (1, 4), (None, 4))])
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_unreadable_and_missing_inputs(tmp_path: Path) -> None:
    spec = [InputSpec("x", DType.FLOAT, (2,))]
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(FormatError, match=r"junk\.npz: cannot read inputs"):
        load_feeds(tmp_path / "junk.npz", spec)
    np.save(tmp_path / "single.npy", np.zeros(2, np.float32))
    with pytest.raises(FormatError, match="not a single array"):
        load_feeds(tmp_path / "single.npy", spec)
    with pytest.raises(FormatError, match="no such input file"):
        load_feeds(tmp_path / "absent.npz", spec)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match=r"holds no \.npz"):
        load_feeds(tmp_path / "empty", spec)
    mixed = tmp_path / "mixed.npz"
    np.savez(mixed, x=np.zeros((3, 2), np.float32), y=np.zeros(2, np.float32))
    with pytest.raises(FormatError, match="not stacked by samples"):
        load_feeds(mixed, [*spec, InputSpec("y", DType.FLOAT, (2,))])
