"""`python -m ktape.sim` = `ktape sim`."""

import sys

from ktape.sim.cli import main

sys.exit(main())
