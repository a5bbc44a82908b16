# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The NNEF topology layout carried in NNR_TPL: plain graph text when possible, a checked sidecar otherwise."""

from __future__ import annotations

import pytest

from nnrconv.core import BitstreamError
from nnrconv_nnef._topology import SIDECAR_MAGIC, NnefTopology, pack_topology, unpack_topology

GRAPH = b"version 1.0;\ngraph g( x ) -> ( x ) { x = external<scalar>(shape = [1]); }\n"


def test_pure_text_topology_is_the_graph_text() -> None:
    data = pack_topology(NnefTopology(GRAPH))
    assert data == GRAPH
    assert unpack_topology(data) == NnefTopology(GRAPH)


def test_sidecar_round_trip_and_text_prefix() -> None:
    topology = NnefTopology(GRAPH, b"", {"a/b": bytes(128)}, {"c": b"\x4e\xef" + bytes(200), "d": b""})
    data = pack_topology(topology)
    assert data.split(b"\0", 1)[0] == GRAPH  # what a null-terminated string reader sees
    assert data[len(GRAPH) + 1 :].startswith(SIDECAR_MAGIC)
    assert unpack_topology(data) == topology


def test_nul_in_graph_text_is_refused() -> None:
    with pytest.raises(ValueError, match="NUL"):
        pack_topology(NnefTopology(b"version\0"))


@pytest.mark.parametrize("cut", [1, 5, 9, 20])
def test_truncated_sidecar(cut: int) -> None:
    data = pack_topology(NnefTopology(GRAPH, headers={"w": bytes(128)}))
    with pytest.raises(BitstreamError, match="truncated"):
        unpack_topology(data[:-cut])


def test_bad_magic_and_repeated_record() -> None:
    with pytest.raises(BitstreamError, match="unknown data"):
        unpack_topology(GRAPH + b"\0garbage")
    record = b"HEAD" + (1).to_bytes(4, "little") + b"w" + (0).to_bytes(8, "little")
    with pytest.raises(BitstreamError, match="repeated"):
        unpack_topology(GRAPH + b"\0" + SIDECAR_MAGIC + record + record)
    with pytest.raises(BitstreamError, match="unexpected"):
        unpack_topology(GRAPH + b"\0" + SIDECAR_MAGIC + b"XXXX" + record[4:])
