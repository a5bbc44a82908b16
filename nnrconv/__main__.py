# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`python -m nnrconv` runs the command line."""

import sys

from nnrconv.cli import main

sys.exit(main())
