"""The billing store: accounts, API keys, the credits ledger, usage, audit, Stripe state.

Money rules, all enforced here so every caller gets them:
- The ledger is append-only; every entry has a kind, a reason and an idempotency key
  unique per account — a repeat returns the first entry instead of applying twice.
  Balance = sum of the ledger, never a stored counter.
- Each UTC month an account's plan grants a free allowance (an `allowance` entry, keyed
  by the month) the first time the account is touched; at the first touch of a later
  month the unused rest expires (`allowance_expiry`). Usage draws on the allowance first.
- Debits that must not overdraw lock the account first (see billingd/db.py), so 50
  concurrent callers can never take the balance below zero. Usage arrives after the
  call was served (batched by queryd's interceptor); it is charged up to the balance,
  and what exceeds it is billed through Stripe meters on postpaid plans, or written off
  as `unpaid` (bounded by the interceptor's cache window) on prepaid ones.
- dev keys draw on a daily sandbox quota and never touch the ledger.

Times are stored as ISO-8601 UTC text with microseconds (sortable, dialect-neutral).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from billingd.db import Database, Tx, open_database
from billingd.keys import NewKey, generate_key, parse_key, secret_matches
from billingd.schema import migrate
from ktape.errors import (
    AlreadyExists,
    InsufficientCredits,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from ktape.log import get_logger
from ktape.pricing import DEFAULT_PLAN, PLANS, SANDBOX_CALLS_PER_DAY

log = get_logger(__name__)

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


_ACCOUNT_COLUMNS = "account_id, name, state, plan, admin, spending_cap_credits, created_at"
_KEY_COLUMNS = "key_id, account_id, env, name, created_at, last_used_at, revoked_at"
_ENTRY_COLUMNS = "entry_id, account_id, credits, kind, reason, idempotency_key, created_at"


def _account(row: Sequence[object]) -> Account:
    return Account(str(row[0]), str(row[1]), str(row[2]), str(row[3]), bool(row[4]),
                   int(row[5]), str(row[6]))  # type: ignore[call-overload]


class BillingStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        migrate(db)

    @classmethod
    def from_dsn(cls, dsn: str) -> BillingStore:
        return cls(open_database(dsn))

    def close(self) -> None:
        self.db.close()

    # -- accounts --------------------------------------------------------------------

    def create_account(self, name: str, *, plan: str = DEFAULT_PLAN, admin: bool = False,
                       now: dt.datetime | None = None) -> Account:
        _check_plan(plan)
        with self.db.tx() as tx:
            if tx.one("SELECT 1 FROM accounts WHERE name = ?", (name,)):
                raise AlreadyExists(f"account {name!r} exists", reason="ACCOUNT_EXISTS",
                                    metadata={"name": name})
            account_id = f"acct_{uuid.uuid4().hex[:16]}"
            tx.run("INSERT INTO accounts (account_id, name, plan, admin, created_at) "
                   "VALUES (?, ?, ?, ?, ?)",
                   (account_id, name, plan, int(admin), stamp(now or utcnow())))
        return self.account(account_id)

    def account(self, account_id: str) -> Account:
        with self.db.tx() as tx:
            return _get_account(tx, account_id)

    def account_by_name(self, name: str) -> Account | None:
        with self.db.tx() as tx:
            row = tx.one(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE name = ?", (name,))
        return _account(row) if row else None

    def account_for_name(self, name: str) -> Account:
        """The named account, created on first use (accounts are created lazily)."""
        existing = self.account_by_name(name)
        if existing is not None:
            return existing
        try:
            return self.create_account(name)
        except AlreadyExists:  # created concurrently
            found = self.account_by_name(name)
            assert found is not None
            return found

    def list_accounts(self, *, suspended_only: bool, after_id: str, limit: int) -> list[Account]:
        where = "account_id > ?" + (" AND state = 'suspended'" if suspended_only else "")
        with self.db.tx() as tx:
            rows = tx.all(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE {where} "
                          "ORDER BY account_id LIMIT ?", (after_id, limit))
        return [_account(r) for r in rows]

    def set_state(self, account_id: str, state: str) -> Account:
        return self._update_account(account_id, "state = ?", state)

    def set_plan(self, account_id: str, plan: str) -> Account:
        _check_plan(plan)
        return self._update_account(account_id, "plan = ?", plan)

    def set_spending_cap(self, account_id: str, cap: int) -> Account:
        if cap < 0:
            raise InvalidArgument.field("spending_cap_credits", "must not be negative")
        return self._update_account(account_id, "spending_cap_credits = ?", cap)

    def _update_account(self, account_id: str, assignment: str, value: object) -> Account:
        with self.db.tx() as tx:
            _get_account(tx, account_id)
            tx.run(f"UPDATE accounts SET {assignment} WHERE account_id = ?", (value, account_id))
            return _get_account(tx, account_id)

    # -- keys ------------------------------------------------------------------------

    def create_key(self, account_id: str, *, env: str, name: str = "",
                   now: dt.datetime | None = None) -> NewKey:
        key = generate_key(env)
        with self.db.tx() as tx:
            _get_account(tx, account_id)
            tx.run("INSERT INTO api_keys (key_id, account_id, env, name, secret_sha256, "
                   "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                   (key.key_id, account_id, env, name, key.secret_sha256,
                    stamp(now or utcnow())))
        return key

    def keys(self, account_id: str, *, before: tuple[str, str] | None = None,
             limit: int = 1000) -> list[ApiKeyRow]:
        """Keys newest first; `before` = (created_at, key_id) of the last key seen."""
        sql = f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE account_id = ?"
        params: list[object] = [account_id]
        if before is not None:
            sql += " AND (created_at < ? OR (created_at = ? AND key_id < ?))"
            params += [before[0], before[0], before[1]]
        sql += " ORDER BY created_at DESC, key_id DESC LIMIT ?"
        with self.db.tx() as tx:
            return [ApiKeyRow(*row) for row in tx.all(sql, [*params, limit])]

    def key(self, account_id: str, key_id: str) -> ApiKeyRow:
        with self.db.tx() as tx:
            row = tx.one(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = ? AND "
                         "account_id = ?", (key_id, account_id))
        if row is None:
            raise NotFound(f"unknown key {key_id!r}", reason="UNKNOWN_KEY",
                           metadata={"key_id": key_id})
        return ApiKeyRow(*row)

    def revoke_key(self, account_id: str, key_id: str, *, now: dt.datetime | None = None
                   ) -> ApiKeyRow:
        with self.db.tx() as tx:
            updated = tx.run("UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) "
                             "WHERE key_id = ? AND account_id = ?",
                             (stamp(now or utcnow()), key_id, account_id))
        if not updated:
            raise NotFound(f"unknown key {key_id!r}", reason="UNKNOWN_KEY",
                           metadata={"key_id": key_id})
        return self.key(account_id, key_id)

    def authenticate(self, full_key: str) -> tuple[Account, ApiKeyRow]:
        """The account and key behind a presented key, or UNAUTHENTICATED /
        PERMISSION_DENIED with the reason."""
        try:
            _env, key_id, secret = parse_key(full_key)
        except ValueError as exc:
            raise Unauthenticated(str(exc), reason="API_KEY_MALFORMED") from None
        with self.db.tx() as tx:
            row = tx.one(f"SELECT {_KEY_COLUMNS}, secret_sha256 FROM api_keys "
                         "WHERE key_id = ?", (key_id,))
            if row is None or not secret_matches(secret, str(row[7])):
                raise Unauthenticated("unknown API key", reason="API_KEY_INVALID",
                                      metadata={"key_id": key_id})
            key = ApiKeyRow(*row[:7])
            if key.revoked_at is not None:
                raise Unauthenticated("API key revoked", reason="API_KEY_REVOKED",
                                      metadata={"key_id": key_id})
            account = _get_account(tx, key.account_id)
        return _usable(account), key

    def usable_account(self, account_id: str) -> Account:
        """The account a signed-in person acts for; PERMISSION_DENIED when suspended."""
        return _usable(self.account(account_id))

    # -- ledger ----------------------------------------------------------------------

    def balance(self, account_id: str) -> int:
        with self.db.tx() as tx:
            return _balance(tx, account_id)

    def append(self, account_id: str, credits: int, *, kind: str, reason: str,
               idempotency_key: str, require_funds: bool = False) -> LedgerEntry:
        """Append one entry (idempotent per account and key). A debit with
        `require_funds` fails with INSUFFICIENT_CREDITS rather than overdraw."""
        if not idempotency_key:
            raise ValueError("idempotency_key is required")
        with self.db.tx() as tx:
            _get_account(tx, account_id)
            tx.lock_account(account_id)
            existing = _entry(tx, account_id, idempotency_key)
            if existing is not None:
                return existing
            if require_funds and credits < 0:
                balance = _balance(tx, account_id)
                if balance + credits < 0:
                    raise InsufficientCredits(
                        f"{-credits} credits needed, {balance} available",
                        subject=f"account:{account_id}",
                        metadata={"account_id": account_id, "needed": str(-credits),
                                  "available": str(balance)})
            _insert_entry(tx, account_id, credits, kind, reason, idempotency_key, utcnow())
            entry = _entry(tx, account_id, idempotency_key)
        assert entry is not None
        return entry

    def entries(self, account_id: str) -> list[LedgerEntry]:
        with self.db.tx() as tx:
            rows = tx.all(f"SELECT {_ENTRY_COLUMNS}, balance_after FROM ledger "
                          "WHERE account_id = ? ORDER BY seq", (account_id,))
        return [LedgerEntry(*row[:7], balance_after=int(row[7])) for row in rows]

    def ledger_page(self, account_id: str, *, before_seq: int | None,
                    limit: int) -> list[tuple[int, LedgerEntry]]:
        """Entries newest first, each with its seq (the page position)."""
        with self.db.tx() as tx:
            rows = tx.all(f"SELECT seq, {_ENTRY_COLUMNS}, balance_after FROM ledger "
                          "WHERE account_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                          (account_id, before_seq if before_seq is not None else 2**62, limit))
        return [(int(row[0]), LedgerEntry(*row[1:8], balance_after=int(row[8])))
                for row in rows]

    def standing(self, account_id: str, *, now: dt.datetime | None = None) -> Standing:
        """Balance, allowance left, month's spend and today's sandbox calls — granting
        this month's allowance (and expiring last month's) if not done yet."""
        now = now or utcnow()
        with self.db.tx() as tx:
            account = _get_account(tx, account_id)
            tx.lock_account(account_id)
            _ensure_month(tx, account, now)
            return _standing(tx, account_id, now)

    # -- usage -----------------------------------------------------------------------

    def record_usage(self, events: Iterable[UsageIn], *, now: dt.datetime | None = None
                     ) -> RecordResult:
        """Apply served calls once each (event_id is the idempotency key). Charges go
        to the ledger as one `usage` entry per account per batch."""
        now = now or utcnow()
        result = RecordResult()
        by_key: dict[str, list[UsageIn]] = {}
        for event in events:
            by_key.setdefault(event.key_id, []).append(event)
        with self.db.tx() as tx:
            accounts: dict[str, list[tuple[UsageIn, str]]] = {}
            for key_id, items in by_key.items():
                row = tx.one("SELECT account_id, env FROM api_keys WHERE key_id = ?", (key_id,))
                if row is None:
                    result.unknown_keys.append(key_id)
                    log.error("usage.unknown_key", key_id=key_id, events=len(items))
                    continue
                accounts.setdefault(str(row[0]), []).extend((e, str(row[1])) for e in items)
                last = max(e.served_at for e in items)
                tx.run("UPDATE api_keys SET last_used_at = ? WHERE key_id = ? AND "
                       "(last_used_at IS NULL OR last_used_at < ?)",
                       (stamp(last.replace(second=0, microsecond=0)), key_id,
                        stamp(last.replace(second=0, microsecond=0))))
            for account_id in sorted(accounts):
                self._charge(tx, account_id, accounts[account_id], now, result)
        return result

    def _charge(self, tx: Tx, account_id: str, items: list[tuple[UsageIn, str]],
                now: dt.datetime, result: RecordResult) -> None:
        """Book one account's events: allowance first, then the balance, then (postpaid)
        the Stripe meter or (prepaid) a logged write-off; one ledger entry per batch."""
        account = _get_account(tx, account_id)
        tx.lock_account(account_id)
        plan = PLANS.get(account.plan, PLANS[DEFAULT_PLAN])
        _ensure_month(tx, account, now)
        balance = _balance(tx, account_id)
        allowance_left: dict[str, int] = {}
        totals: dict[str, list[int]] = {}  # period -> [calls, allowance, paid]
        charged = 0
        first_event = ""
        for event, env in sorted(items, key=lambda pair: pair[0].served_at):
            served = event.served_at
            credits = event.credits if env == "prod" else 0
            allowance = ledger = metered = unpaid = 0
            if credits > 0:
                month = month_of(served)
                if month not in allowance_left:
                    allowance_left[month] = _allowance_left(tx, account_id, month)
                ledger = min(credits, max(0, balance - charged))
                allowance = min(ledger, allowance_left[month])
                rest = credits - ledger
                metered, unpaid = (rest, 0) if plan.postpaid else (0, rest)
            calls = 0 if event.continuation else 1
            inserted = tx.run(
                "INSERT INTO usage_events (event_id, account_id, key_id, env, method, calls, "
                "credits, allowance_credits, ledger_credits, metered_credits, unpaid_credits, "
                "day, served_at, recorded_at, ticker, in_gap, answer_start, answer_end) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (event_id) DO NOTHING",
                (event.event_id, account_id, event.key_id, env, event.method, calls, credits,
                 allowance, ledger, metered, unpaid, stamp(served)[:10], stamp(served),
                 stamp(now), event.ticker, int(event.in_gap),
                 stamp(event.answer_start) if event.answer_start else None,
                 stamp(event.answer_end) if event.answer_end else None))
            if not inserted:  # seen before: the first delivery was booked
                result.duplicates += 1
                continue
            if credits > 0:
                allowance_left[month_of(served)] -= allowance
                charged += ledger
            if unpaid:
                log.warning("usage.unpaid", account_id=account_id, event_id=event.event_id,
                            method=event.method, credits=unpaid)
            period = month_of(served) if env == "prod" else f"dev:{stamp(served)[:10]}"
            total = totals.setdefault(period, [0, 0, 0])
            total[0] += calls
            total[1] += allowance
            total[2] += credits - allowance
            first_event = first_event or event.event_id
            result.applied += 1
        for period, (calls, allowance, paid) in totals.items():
            _add_totals(tx, account_id, period, calls=calls, allowance=allowance, paid=paid)
        if charged:
            _insert_entry(tx, account_id, -charged, "usage", "metered API calls",
                          f"usage:{first_event}", now)

    def usage(self, *, account_id: str, start: dt.datetime, end: dt.datetime,
              method: str = "") -> list[UsageRow]:
        """Calls and credits per account, UTC day and method for calls in [start, end)."""
        sql = ("SELECT account_id, day, method, sum(calls), sum(credits) FROM usage_events "
               "WHERE served_at >= ? AND served_at < ?")
        params: list[object] = [stamp(start), stamp(end)]
        if account_id:
            sql += " AND account_id = ?"
            params.append(account_id)
        if method:
            sql += " AND method = ?"
            params.append(method)
        sql += " GROUP BY account_id, day, method ORDER BY account_id, day, method"
        with self.db.tx() as tx:
            return [UsageRow(str(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4]))
                    for r in tx.all(sql, params)]

    def refund_gap_calls(self, start: dt.datetime, end: dt.datetime, *,
                         gaps: GapLookup | None = None, now: dt.datetime | None = None
                         ) -> tuple[int, int]:
        """Refund the ledger credits of calls served in [start, end) whose answer fell in
        a recorded gap — flagged when answered, or (with `gaps`) overlapping a gap of its
        market (or a '*' gap of every market) recorded since; each call at most once.
        Returns (calls, credits) refunded now."""
        now = now or utcnow()
        columns = "SELECT event_id, account_id, ledger_credits FROM usage_events "
        window = "refunded_at IS NULL AND env = 'prod' AND served_at >= ? AND served_at < ?"
        with self.db.tx() as tx:
            refund = tx.all(f"{columns} WHERE in_gap = 1 AND {window}",
                            (stamp(start), stamp(end)))
            # Gaps are rare: look up those of the window once, then only the calls about
            # those markets and spans.
            for ticker, spans in (gaps(start - GAP_DETECTION_SLACK, now) if gaps else {}).items():
                for g_lo, g_hi in spans:
                    by_ticker = "" if ticker == "*" else " AND ticker = ?"
                    refund += tx.all(
                        f"{columns} WHERE in_gap = 0 AND ticker != '' AND {window}{by_ticker} "
                        "AND answer_start IS NOT NULL AND answer_start <= ? AND "
                        "coalesce(answer_end, answer_start) >= ?",
                        (stamp(start), stamp(end), *(() if ticker == "*" else (ticker,)),
                         stamp(g_hi), stamp(g_lo)))
        calls = credits = 0
        with self.db.tx() as tx:
            for event_id, account_id, ledger_credits in refund:
                tx.lock_account(str(account_id))
                if not tx.run("UPDATE usage_events SET refunded_at = ? WHERE event_id = ? AND "
                              "refunded_at IS NULL", (stamp(now), event_id)):
                    continue  # already refunded (another gap, or a concurrent pass)
                if int(ledger_credits) > 0:
                    _insert_entry(tx, str(account_id), int(ledger_credits), "refund",
                                  f"answer fell inside a recorded gap (call {event_id})",
                                  f"gap-refund:{event_id}", now)
                calls += 1
                credits += int(ledger_credits)
        return calls, credits

    def unreported_meter_usage(self, limit: int = 500) -> list[MeterReport]:
        with self.db.tx() as tx:
            rows = tx.all("SELECT event_id, account_id, metered_credits, served_at FROM "
                          "usage_events WHERE metered_credits > 0 AND meter_reported_at IS NULL "
                          "ORDER BY served_at LIMIT ?", (limit,))
        return [MeterReport(str(r[0]), str(r[1]), int(r[2]), str(r[3])) for r in rows]

    def mark_meter_reported(self, event_ids: Sequence[str], *, now: dt.datetime | None = None
                            ) -> None:
        with self.db.tx() as tx:
            for event_id in event_ids:
                tx.run("UPDATE usage_events SET meter_reported_at = ? WHERE event_id = ?",
                       (stamp(now or utcnow()), event_id))

    # -- audit -----------------------------------------------------------------------

    def audit(self, actor_account_id: str, action: str, target_account_id: str,
              detail: dict[str, object]) -> None:
        with self.db.tx() as tx:
            tx.run("INSERT INTO audit_events (event_id, created_at, actor_account_id, action, "
                   "target_account_id, detail_json) VALUES (?, ?, ?, ?, ?, ?)",
                   (f"ae_{uuid.uuid4().hex}", stamp(utcnow()), actor_account_id, action,
                    target_account_id, json.dumps(detail, sort_keys=True, default=str)))

    def audit_events(self, *, target_account_id: str, before_seq: int | None, limit: int
                     ) -> list[AuditEvent]:
        sql = ("SELECT seq, event_id, created_at, actor_account_id, action, target_account_id, "
               "detail_json FROM audit_events WHERE 1 = 1")
        params: list[object] = []
        if target_account_id:
            sql += " AND target_account_id = ?"
            params.append(target_account_id)
        if before_seq is not None:
            sql += " AND seq < ?"
            params.append(before_seq)
        sql += " ORDER BY seq DESC LIMIT ?"
        with self.db.tx() as tx:
            return [AuditEvent(int(r[0]), *(str(v) for v in r[1:]))
                    for r in tx.all(sql, [*params, limit])]

    # -- Stripe ----------------------------------------------------------------------

    def record_checkout(self, session_id: str, account_id: str, pack: str, credits: int) -> None:
        with self.db.tx() as tx:
            if not tx.one("SELECT 1 FROM checkout_sessions WHERE session_id = ?", (session_id,)):
                tx.run("INSERT INTO checkout_sessions (session_id, account_id, pack, credits, "
                       "created_at) VALUES (?, ?, ?, ?, ?)",
                       (session_id, account_id, pack, credits, stamp(utcnow())))

    def checkout(self, session_id: str) -> tuple[str, str, int] | None:
        with self.db.tx() as tx:
            row = tx.one("SELECT account_id, pack, credits FROM checkout_sessions WHERE "
                         "session_id = ?", (session_id,))
        return (str(row[0]), str(row[1]), int(row[2])) if row else None

    def apply_stripe_event(self, event_id: str, event_type: str, created: int,
                           grant: tuple[str, int, str, str] | None) -> bool:
        """Mark a Stripe event applied and, with `grant` = (account_id, credits,
        idempotency_key, reason), add the purchase — in one transaction. Returns False
        for an event applied before. The grant's own key (per checkout session) keeps
        two different events about one payment from granting twice."""
        with self.db.tx() as tx:
            if tx.one("SELECT 1 FROM stripe_events WHERE event_id = ?", (event_id,)):
                return False
            tx.run("INSERT INTO stripe_events (event_id, type, created, applied_at) "
                   "VALUES (?, ?, ?, ?)", (event_id, event_type, created, stamp(utcnow())))
            if grant is not None:
                account_id, credits, key, reason = grant
                _get_account(tx, account_id)
                tx.lock_account(account_id)
                if _entry(tx, account_id, key) is None:
                    _insert_entry(tx, account_id, credits, "purchase", reason, key, utcnow())
                tx.run("UPDATE checkout_sessions SET completed_at = coalesce(completed_at, ?) "
                       "WHERE session_id = ?", (stamp(utcnow()), key.removeprefix("checkout:")))
        return True

    def stripe_customer(self, account_id: str) -> str | None:
        with self.db.tx() as tx:
            row = tx.one("SELECT customer_id FROM stripe_customers WHERE account_id = ?",
                         (account_id,))
        return str(row[0]) if row else None

    def set_stripe_customer(self, account_id: str, customer_id: str) -> str:
        """Remember the account's Stripe customer; the first one stored wins."""
        with self.db.tx() as tx:
            row = tx.one("SELECT customer_id FROM stripe_customers WHERE account_id = ?",
                         (account_id,))
            if row:
                return str(row[0])
            tx.run("INSERT INTO stripe_customers (account_id, customer_id) VALUES (?, ?)",
                   (account_id, customer_id))
        return customer_id


# -- helpers inside one transaction ------------------------------------------------------

def _check_plan(plan: str) -> None:
    if plan not in PLANS:
        raise InvalidArgument.field("plan", f"unknown plan (one of {', '.join(sorted(PLANS))})",
                                    plan=plan)


def _usable(account: Account) -> Account:
    if account.state != "active":
        raise PermissionDenied("account suspended", reason="ACCOUNT_SUSPENDED",
                               metadata={"account_id": account.account_id})
    return account


def _get_account(tx: Tx, account_id: str) -> Account:
    row = tx.one(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE account_id = ?", (account_id,))
    if row is None:
        raise NotFound(f"unknown account {account_id!r}", reason="UNKNOWN_ACCOUNT",
                       metadata={"account_id": account_id})
    return _account(row)


def _balance(tx: Tx, account_id: str) -> int:
    """The running balance of the newest entry (= the sum of the ledger, kept per entry
    so a balance is one index lookup, not a scan of the account's history)."""
    row = tx.one("SELECT balance_after FROM ledger WHERE account_id = ? ORDER BY seq DESC "
                 "LIMIT 1", (account_id,))
    return int(row[0]) if row else 0


def _entry(tx: Tx, account_id: str, key: str) -> LedgerEntry | None:
    row = tx.one(f"SELECT {_ENTRY_COLUMNS}, balance_after FROM ledger WHERE account_id = ? AND "
                 "idempotency_key = ?", (account_id, key))
    return LedgerEntry(*row[:7], balance_after=int(row[7])) if row else None


def _insert_entry(tx: Tx, account_id: str, credits: int, kind: str, reason: str, key: str,
                  now: dt.datetime) -> None:
    """Append one entry; callers hold the account lock, so the running balance is exact."""
    tx.run("INSERT INTO ledger (entry_id, account_id, credits, kind, reason, idempotency_key, "
           "created_at, balance_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
           (f"le_{uuid.uuid4().hex}", account_id, credits, kind, reason, key, stamp(now),
            _balance(tx, account_id) + credits))


def _add_totals(tx: Tx, account_id: str, period: str, *, calls: int = 0, allowance: int = 0,
                paid: int = 0) -> None:
    tx.run("INSERT INTO usage_totals (account_id, period, calls, allowance_credits, "
           "paid_credits) VALUES (?, ?, ?, ?, ?) ON CONFLICT (account_id, period) DO UPDATE SET "
           "calls = usage_totals.calls + excluded.calls, "
           "allowance_credits = usage_totals.allowance_credits + excluded.allowance_credits, "
           "paid_credits = usage_totals.paid_credits + excluded.paid_credits",
           (account_id, period, calls, allowance, paid))


def _totals(tx: Tx, account_id: str, period: str) -> tuple[int, int, int]:
    """(calls, allowance credits, paid credits) of a month ("YYYY-MM", prod keys) or a
    sandbox day ("dev:YYYY-MM-DD")."""
    row = tx.one("SELECT calls, allowance_credits, paid_credits FROM usage_totals WHERE "
                 "account_id = ? AND period = ?", (account_id, period))
    return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)


def _allowance_granted(tx: Tx, account_id: str, month: str) -> int:
    row = tx.one("SELECT credits FROM ledger WHERE account_id = ? AND idempotency_key = ?",
                 (account_id, f"allowance:{month}"))
    return int(row[0]) if row else 0


def _allowance_used(tx: Tx, account_id: str, month: str) -> int:
    return _totals(tx, account_id, month)[1]


def _allowance_left(tx: Tx, account_id: str, month: str) -> int:
    if tx.one("SELECT 1 FROM ledger WHERE account_id = ? AND idempotency_key = ?",
              (account_id, f"allowance_expiry:{month}")):
        return 0
    return max(0, _allowance_granted(tx, account_id, month) - _allowance_used(tx, account_id, month))


def _ensure_month(tx: Tx, account: Account, now: dt.datetime) -> None:
    """Grant this month's allowance once; first expire what earlier months left unused."""
    month = month_of(now)
    if tx.one("SELECT 1 FROM ledger WHERE account_id = ? AND idempotency_key = ?",
              (account.account_id, f"allowance:{month}")):
        return
    earlier = tx.all("SELECT idempotency_key FROM ledger WHERE account_id = ? AND kind = "
                     "'allowance' AND idempotency_key < ?",
                     (account.account_id, f"allowance:{month}"))
    for (key,) in earlier:
        old = str(key).removeprefix("allowance:")
        left = _allowance_left(tx, account.account_id, old)
        if not tx.one("SELECT 1 FROM ledger WHERE account_id = ? AND idempotency_key = ?",
                      (account.account_id, f"allowance_expiry:{old}")):
            _insert_entry(tx, account.account_id, -left, "allowance_expiry",
                          f"unused free allowance of {old} expired", f"allowance_expiry:{old}",
                          now)
    plan = PLANS.get(account.plan, PLANS[DEFAULT_PLAN])
    _insert_entry(tx, account.account_id, plan.monthly_allowance_credits, "allowance",
                  f"free allowance for {month} ({plan.name} plan)", f"allowance:{month}", now)


def _standing(tx: Tx, account_id: str, now: dt.datetime) -> Standing:
    month = month_of(now)
    return Standing(balance=_balance(tx, account_id),
                    allowance_remaining=_allowance_left(tx, account_id, month),
                    spent_this_month=_totals(tx, account_id, month)[2],
                    dev_calls_today=_totals(tx, account_id, f"dev:{stamp(now)[:10]}")[0])
