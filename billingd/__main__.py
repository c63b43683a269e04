"""`python -m billingd`: run the billing services (see billingd/server.py)."""

import sys

from billingd.server import main

sys.exit(main())
