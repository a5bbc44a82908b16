# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""nnrconv: move trained neural networks between exchange formats and MPEG NNR (ISO/IEC 15938-17).

Typical use::

    import nnrconv
    nnrconv.convert("model.onnx", "model.nnr")     # native -> NNR bitstream with its topology
    model = nnrconv.load("model.nnr")              # rebuilt by the plugin owning the topology
    nnrconv.save(model, "back.onnx")

Heavy frameworks are imported only by the format plugins that need them, when they need them.
"""

from nnrconv._api import (
    Comparison,
    ConversionResult,
    FormatInfo,
    TensorDifference,
    compare,
    convert,
    decode,
    encode,
    formats,
    inspect,
    inspect_container,
    load,
    save,
)
from nnrconv._merge import MergeResult, merge
from nnrconv._rate._sweep import SweepResult, sweep
from nnrconv._run import session
from nnrconv._signing import sign, verify
from nnrconv._split import SplitResult, split
from nnrconv.core import Model, NNRConvError

__all__ = [
    "Comparison",
    "ConversionResult",
    "FormatInfo",
    "MergeResult",
    "Model",
    "NNRConvError",
    "SplitResult",
    "TensorDifference",
    "compare",
    "convert",
    "decode",
    "encode",
    "formats",
    "inspect",
    "inspect_container",
    "load",
    "merge",
    "save",
    "session",
    "SweepResult",
    "sign",
    "split",
    "sweep",
    "verify",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith(("nnrconv._",)):
        _obj.__module__ = __name__
del _name, _obj
