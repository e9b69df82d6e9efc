"""`python -m worker.cli`: the same as `kcw`."""

import sys

from worker.cli import main

sys.exit(main())
