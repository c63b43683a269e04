"""`ktape keys`: API key management.

Keys, accounts and credits belong to billingd (issue 8), which is not implemented yet:
until then the stack runs without authentication and this command says so plainly
instead of pretending to create a key.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    print("ktape keys: API keys arrive with billingd (issue 8); this build serves every "
          "call without a key.", file=sys.stderr)
    return 2
