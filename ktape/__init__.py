"""ktape: reliable, complete order-book history for every Kalshi market.

This package holds the CLI (`ktape`), the supervisor, the exchange simulator and what the
services share (config, logging, errors). The services themselves are the top-level
packages `ingestd`, `queryd` and `billingd`; they never import each other.
"""

__version__ = "0.1.0"
