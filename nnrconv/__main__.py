# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`python -m nnrconv` runs the command line."""

import sys

try:
    from nnrconv.cli import main
except KeyboardInterrupt:  # Ctrl-C while still starting up
    sys.stderr.write("nnrconv: interrupted\n")
    sys.exit(130)

sys.exit(main())
