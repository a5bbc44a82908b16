"""Build the compiled parts of nnrconv; all metadata lives in pyproject.toml."""

import sys

from setuptools import Extension, setup

_CABAC_SOURCES = [
    "nnrconv/nnc/_cabac/module.c",
    "nnrconv/nnc/_cabac/encoder.c",
    "nnrconv/nnc/_cabac/enc_engine.c",
    "nnrconv/nnc/_cabac/enc_levels.c",
    "nnrconv/nnc/_cabac/enc_params.c",
    "nnrconv/nnc/_cabac/enc_spans.c",
    "nnrconv/nnc/_cabac/enc_incremental.c",
    "nnrconv/nnc/_cabac/dec_engine.c",
    "nnrconv/nnc/_cabac/dec_fast.c",
    "nnrconv/nnc/_cabac/dec_levels.c",
    "nnrconv/nnc/_cabac/dec_spans.c",
    "nnrconv/nnc/_cabac/ctxmodel.c",
    "nnrconv/nnc/_cabac/quant.c",
    "nnrconv/nnc/_cabac/rdq.c",
    "nnrconv/nnc/_cabac/tables.c",
    "nnrconv/nnc/_cabac/threads.c",
]
if sys.platform == "win32":
    _CABAC_FLAGS = ["/O2", "/fp:precise"]
else:
    # -ffp-contract=off: no fused multiply-add, so quantization matches the reference bit for bit.
    _CABAC_FLAGS = [
        "-std=c11",
        "-O3",
        "-ffp-contract=off",
        "-fvisibility=hidden",
        "-fno-semantic-interposition",
        "-Wall",
        "-Wextra",
        "-Wno-unused-parameter",
    ]

EXTENSIONS: list = [
    Extension(
        "nnrconv.nnc._cabac",
        sources=_CABAC_SOURCES,
        depends=[
            "nnrconv/nnc/_cabac/cabac.h",
            "nnrconv/nnc/_cabac/scan.h",
            "nnrconv/nnc/_cabac/encoder.h",
            "nnrconv/nnc/_cabac/decoder.h",
        ],
        extra_compile_args=_CABAC_FLAGS,
    )
]

setup(ext_modules=EXTENSIONS)
