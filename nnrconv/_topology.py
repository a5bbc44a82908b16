# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Which plugin owns a bitstream's topology, and how a third-party format's topology travels.

NOTE: the standard gives `topology_storage_format` codes to four frameworks (NNEF 1, ONNX 2,
PyTorch 3, TensorFlow 4; 5 and 6 are NNR's own pruning and reference-list topologies), and
reserves the other values for future editions, so a plugin must not take one: a later edition
may give it a meaning, and a conformant decoder may refuse it. Instead a format with no code
(`FormatPlugin.topology_code` None) that implements `topology_bytes`/`from_topology` sends its
topology with code 0, NNR_TPL_UNREC ("unrecognised": the standard leaves its `topology_data` to
the application), wrapped in a manifest naming the format:

    b"nnrconv.plugin-topology/1\0" + format name (UTF-8) + b"\0" + the plugin's topology bytes

A decoder that does not know the convention (NNCodec) sees an unrecognised topology and still
decodes every tensor by name; nnrconv hands the bytes to the plugin of that name. Risks: two
plugins with the same format name (the registry refuses duplicates in one environment, not
across machines), a plugin renamed or absent at decoding (then the error names it), and other
applications that also put data in NNR_TPL_UNREC (the magic makes a clash unlikely). nnrconv's
integrity record is a separate NNR_TPL_UNREC unit with its own magic.
"""

from __future__ import annotations

from collections.abc import Collection

from nnrconv import nnc
from nnrconv.core import FormatPlugin, Model, UnsupportedError, get_registry

__all__ = ["MAGIC", "owner", "pack", "topology_of", "unpack"]

MAGIC = b"nnrconv.plugin-topology/1\0"
_UNREC = int(nnc.TopologyStorageFormat.NNR_TPL_UNREC)


def pack(name: str, topology: bytes) -> bytes:
    """The manifest carrying format `name`'s topology in an NNR_TPL_UNREC unit."""
    return MAGIC + name.encode("utf-8") + b"\0" + bytes(topology)


def unpack(data: bytes) -> tuple[str, bytes] | None:
    """(format name, its topology bytes) of a manifest; None for any other topology data."""
    if not data.startswith(MAGIC):
        return None
    end = data.find(b"\0", len(MAGIC))
    if end < 0:
        return None
    try:
        return data[len(MAGIC) : end].decode("utf-8"), data[end + 1 :]
    except UnicodeDecodeError:
        return None


def topology_of(fmt: FormatPlugin, model: Model, carried: Collection[str]) -> tuple[bytes, int, bool]:
    """(topology bytes, storage format code, may deflate) of a model with a topology.

    Raises:
        UnsupportedError: the format has no topology code and cannot write its topology.
    """
    if fmt.topology_code is not None:
        topology = fmt.topology_bytes(model, carried)
        return topology, fmt.topology_code, fmt.deflate_topology(topology)
    if "topology_bytes" not in fmt.capabilities() or "from_topology" not in fmt.capabilities():
        raise UnsupportedError(
            f"format {fmt.name!r} has no NNR topology code and does not write its topology, so NNR "
            f"cannot carry it; convert the model to a format that has one first (onnx, nnef, "
            f"tensorflow or pytorch)"
        )
    topology = fmt.topology_bytes(model, carried)
    return pack(fmt.name, topology), _UNREC, fmt.deflate_topology(topology)


def owner(code: int, topology: bytes, source: str) -> tuple[FormatPlugin | None, bytes]:
    """The plugin that rebuilds a bitstream's model and the topology bytes it takes; None for a
    model without topology (named tensors).

    Raises:
        UnsupportedError: no installed plugin owns the code, or the plugin a manifest names.
    """
    registry = get_registry()
    if code == _UNREC:
        carried = unpack(topology)
        if carried is None:
            return None, topology
        name, body = carried
        if name not in registry.names():
            raise UnsupportedError(
                f"{source}: the bitstream's topology belongs to format {name!r} (carried by its plugin "
                f"as an unrecognised topology); no installed plugin has that name"
            )
        return registry.get(name), body
    fmt = registry.for_topology(code)
    if fmt is None:
        try:
            label = f"{nnc.TopologyStorageFormat(code).name} ({code})"
        except ValueError:
            label = f"unknown code {code}"
        raise UnsupportedError(f"{source}: the bitstream's topology format is {label}; no installed plugin rebuilds it")
    return fmt, topology
