"""The billing store's values (rows as frozen dataclasses) and its time helpers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ktape.pricing import DEFAULT_PLAN, PLANS, SANDBOX_CALLS_PER_DAY

UNLIMITED = 1 << 62  # available credits of a postpaid account without a cap

# (earliest, latest) -> recorded gap spans per ticker ('*' = every market) overlapping it
GapLookup = Callable[[dt.datetime, dt.datetime], dict[str, list[tuple[dt.datetime, dt.datetime]]]]
# A gap that should refund a call was detected after it (one known earlier would have
# flagged the answer); a day of slack covers clocks and batches.
GAP_DETECTION_SLACK = dt.timedelta(days=1)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def stamp(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="microseconds")


def month_of(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m")


@dataclass(frozen=True)
class Account:
    account_id: str
    name: str
    state: str
    plan: str
    admin: bool
    spending_cap_credits: int
    created_at: str


@dataclass(frozen=True)
class LedgerEntry:
    entry_id: str
    account_id: str
    credits: int
    kind: str
    reason: str
    idempotency_key: str
    created_at: str
    balance_after: int


@dataclass(frozen=True)
class ApiKeyRow:
    key_id: str
    account_id: str
    env: str
    name: str
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


@dataclass(frozen=True)
class Standing:
    """An account's money position at one instant."""

    balance: int  # ledger sum, including the rest of this month's allowance
    allowance_remaining: int
    spent_this_month: int  # credits charged this month beyond the allowance
    dev_calls_today: int

    def available(self, account: Account, env: str) -> int:
        """What the account may spend now with a key of `env` (calls for dev keys)."""
        if env == "dev":
            return max(0, SANDBOX_CALLS_PER_DAY - self.dev_calls_today)
        plan = PLANS.get(account.plan, PLANS[DEFAULT_PLAN])
        cap_left = (max(0, account.spending_cap_credits - self.spent_this_month)
                    + self.allowance_remaining if account.spending_cap_credits else UNLIMITED)
        if plan.postpaid:
            return cap_left
        return max(0, min(self.balance, cap_left))


@dataclass(frozen=True)
class UsageIn:
    """One served call as reported by a metering interceptor."""

    event_id: str
    key_id: str
    method: str
    credits: int
    served_at: dt.datetime
    ticker: str = ""
    in_gap: bool = False
    continuation: bool = False  # a further minute of an already-counted stream
    answer_start: dt.datetime | None = None  # market time the answer described
    answer_end: dt.datetime | None = None


@dataclass(frozen=True)
class UsageRow:
    account_id: str
    day: str
    method: str
    calls: int
    credits: int


@dataclass(frozen=True)
class AuditEvent:
    seq: int
    event_id: str
    created_at: str
    actor_account_id: str
    action: str
    target_account_id: str
    detail_json: str


@dataclass(frozen=True)
class MeterReport:
    event_id: str
    account_id: str
    credits: int
    served_at: str


@dataclass
class RecordResult:
    applied: int = 0
    duplicates: int = 0
    unknown_keys: list[str] = field(default_factory=list)


ACCOUNT_COLUMNS = "account_id, name, state, plan, admin, spending_cap_credits, created_at"
KEY_COLUMNS = "key_id, account_id, env, name, created_at, last_used_at, revoked_at"
ENTRY_COLUMNS = "entry_id, account_id, credits, kind, reason, idempotency_key, created_at"


def account_row(row: Sequence[object]) -> Account:
    return Account(str(row[0]), str(row[1]), str(row[2]), str(row[3]), bool(row[4]),
                   int(row[5]), str(row[6]))  # type: ignore[call-overload]
