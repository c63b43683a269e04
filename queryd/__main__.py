"""`python -m queryd`: run the MarketDataService (see queryd/server.py)."""

import sys

from queryd.server import main

sys.exit(main())
