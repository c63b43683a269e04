"""`python -m ingestd`: run the recorder (see ingestd/app.py)."""

import sys

from ingestd.app import main

sys.exit(main())
