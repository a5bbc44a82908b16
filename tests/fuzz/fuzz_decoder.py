# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""atheris (libFuzzer) harness over the NNR decoder: bitstream bytes -> units, tensors.

Every input goes through `inspect_units`, `decode_model` (with the base model when it is an
incremental update) and `decode_parts` (the parameter sets and NDUs as integration mode 2 keeps
them), so the framing, the unit syntax, the payload decoders and the DeepCABAC C extension all
see the mutated bytes. A finding is:

* any exception other than nnrconv's own errors (`NNRConvError`: BitstreamError,
  UnsupportedError, FormatError, BaseMismatchError...), MemoryError included;
* a crash of the process (a signal in the C extension);
* an input that runs longer than libFuzzer's `-timeout` (1 s in the test suite);
* memory beyond the budget: the address space is capped (RLIMIT_AS, `NNRCONV_FUZZ_MAX_GB`,
  default 4) and libFuzzer's `-rss_limit_mb` stops runaway resident memory.

Short run (what the test suite does, about a minute):
    python tests/fuzz/fuzz_decoder.py -max_total_time=50 -timeout=1 -rss_limit_mb=3072 NEW_DIR tests/fuzz/corpus
Long run (a night; NEW_DIR collects the inputs that found new coverage):
    python tests/fuzz/fuzz_decoder.py -timeout=1 -rss_limit_mb=3072 -jobs=2 build/fuzz tests/fuzz/corpus
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

import atheris
import numpy  # noqa: F401  (imported first: only nnrconv's own code is instrumented)

with atheris.instrument_imports():
    from nnrconv import nnc  # noqa: F401  (instrument the decoder before the targets import it)

    sys.path.insert(0, str(Path(__file__).parents[2]))
    from tests.fuzz._targets import decode_every_way


def _cap_address_space() -> None:
    limit = int(float(os.environ.get("NNRCONV_FUZZ_MAX_GB", "4")) * (1 << 30))
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def main() -> None:
    _cap_address_space()
    atheris.Setup(sys.argv, decode_every_way)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
