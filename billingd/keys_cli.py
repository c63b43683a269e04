"""`ktape keys create --account NAME [--credits N] [--env dev|prod] [--name LABEL]`.

Creates the account on first use, a key (printed once; only its SHA-256 is stored) and,
with --credits, an idempotent grant. Writes to the billing store named by
KTAPE_BILLING_DSN (default: SQLite in KTAPE_DATA_DIR).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from billingd.store import BillingStore
from ktape.entrypoint import settings_or_report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ktape keys", description="Manage API keys.")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create an API key (shown once)")
    create.add_argument("--account", required=True, help="account name (created if new)")
    create.add_argument("--credits", type=int, default=0, help="credits to grant with the key")
    create.add_argument("--env", choices=("dev", "prod"), default="prod")
    create.add_argument("--name", default="", help="a label for the key")
    return parser


def create_key(dsn: str, account: str, *, env: str, credits: int, name: str) -> tuple[str, str]:
    """Returns (account_id, full key)."""
    store = BillingStore.from_dsn(dsn)
    try:
        acct = store.account_for_name(account)
        key = store.create_key(acct.account_id, env=env, name=name)
        if credits:
            store.append(acct.account_id, credits, kind="grant", reason="ktape keys create",
                         idempotency_key=f"grant-with-key:{key.key_id}")
    finally:
        store.close()
    return acct.account_id, key.full


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_or_report("ktape keys")
    if settings is None:
        return 2
    if args.credits < 0:
        print("ktape keys: --credits must not be negative", file=sys.stderr)
        return 2
    account_id, full = create_key(settings.billing_dsn_effective, args.account, env=args.env,
                                  credits=args.credits, name=args.name)
    print(full)
    print(f"account {args.account} ({account_id}); the key is shown only now", file=sys.stderr)
    return 0


if __name__ == "__main__":  # `ktape keys` runs this module as its own process
    raise SystemExit(main())
