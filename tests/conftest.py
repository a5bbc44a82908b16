# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Suite-wide setup: the suite decides which plugins exist."""

import os

# Only built-in formats load in-process; tests that need a third-party plugin install it and
# run nnrconv in a subprocess with their own environment.
os.environ["NNRCONV_LOAD_PLUGINS"] = ""
