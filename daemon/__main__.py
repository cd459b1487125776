"""`python -m daemon` is the same as the `linewatch` console script."""

import sys

from daemon.cli import main

sys.exit(main())
