# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Round-trip runs of NNEF models in the interpreter nnef-tools ships (PyTorch-based, CPU).

NOTE: the interpreter is built in memory (`_session`), no model folder is written. torch runs
single-threaded for the call, so that identical models on identical inputs give identical outputs.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from nnrconv.core import DType, FormatError, InputSpec, Model, UnsupportedError
from nnrconv_nnef._graph import NNEF_DTYPES
from nnrconv_nnef._io import native
from nnrconv_nnef._session import interpreter

__all__ = ["input_specs", "run"]


def input_specs(model: Model) -> list[InputSpec]:
    """One spec per `external` in graph-input order; NNEF shapes are always concrete."""
    externals = {e.name: e for e in native(model).parsed.externals}
    specs = []
    for value in model.graph.inputs:
        external = externals.get(value.name)
        if external is None:
            raise UnsupportedError(f"graph input {value.name!r} is not declared by an external operation")
        specs.append(InputSpec(value.name, NNEF_DTYPES.get(external.nnef_type, DType.FLOAT), external.shape))
    return specs


def run(model: Model, inputs: Mapping[str, np.ndarray], names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Outputs of nnef-tools' interpreter for `inputs`, by output tensor name; or, given `names`,
    those tensors of the graph (intermediate ones too, as the interpreter produces them)."""
    feeds = [spec.name for spec in input_specs(model)]
    absent = [n for n in feeds if n not in inputs]
    if absent:
        raise FormatError(f"inputs {absent!r} of the NNEF graph were not given")
    built = interpreter(model)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            # nnef-tools' operators trip torch deprecation warnings; they are not the user's.
            warnings.simplefilter("ignore", UserWarning)
            wanted = None if names is None else list(dict.fromkeys(names))
            outputs = built([np.asarray(inputs[n]) for n in feeds], output_names=wanted)
    except (NotImplementedError, KeyError, AssertionError, TypeError, ValueError) as exc:
        raise UnsupportedError(f"nnef-tools' interpreter cannot run this model: {exc!r}") from exc
    finally:
        torch.set_num_threads(threads)
    return {str(name): np.asarray(value) for name, value in outputs.items()}
