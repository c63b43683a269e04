"""`python -m ktape` = the `ktape` console script (used by the supervisor's children)."""

import sys

from ktape.cli import main

sys.exit(main())
