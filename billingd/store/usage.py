"""Usage: served calls booked once each, charged allowance first; gap refunds; meters."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from billingd.db import Database, Tx
from billingd.store.records import (
    GAP_DETECTION_SLACK,
    GapLookup,
    MeterReport,
    RecordResult,
    UsageIn,
    UsageRow,
    month_of,
    stamp,
    utcnow,
)
from billingd.store.tx import (
    add_totals,
    allowance_left,
    balance_of,
    get_account,
    insert_entry,
    open_month,
    standing_of,
    usable,
)
from ktape.errors import InsufficientCredits, NotFound, PermissionDenied
from ktape.log import get_logger
from ktape.pricing import DEFAULT_PLAN, PLANS

log = get_logger(__name__)


class UsageArea:
    db: Database

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

    def charge_purchase(self, key_id: str, method: str, items: Sequence[tuple[str, int, str]],
                        *, now: dt.datetime | None = None) -> tuple[int, list[str]]:
        """Charge priced items (item id, credits, subject) to the key's account, all or
        none: the new items' total must fit what the account may spend now, checked
        under the account lock in the transaction that books them, so two purchases at
        once cannot both pass on the same credits. Items are booked as usage (allowance
        first, like calls), so they appear in usage and the ledger like any call. An
        item id booked before is not charged again. Returns (charged, already charged)."""
        now = now or utcnow()
        with self.db.tx() as tx:
            row = tx.one("SELECT account_id, env FROM api_keys WHERE key_id = ?", (key_id,))
            if row is None:
                raise NotFound(f"no key {key_id!r}", reason="API_KEY_INVALID")
            account_id, env = str(row[0]), str(row[1])
            if env != "prod":
                raise PermissionDenied(
                    "dev keys draw on a sandbox quota and cannot buy files; use a prod key",
                    reason="DEV_KEY_NOT_ALLOWED", metadata={"key_id": key_id})
            account = usable(get_account(tx, account_id))
            tx.lock_account(account_id)
            open_month(tx, account, now)
            already = [item_id for item_id, _credits, _subject in items
                       if tx.one("SELECT 1 FROM usage_events WHERE event_id = ?", (item_id,))]
            new = [(i, c, s) for i, c, s in items if i not in set(already)]
            need = sum(c for _i, c, _s in new)
            available = standing_of(tx, account, now).available(account, "prod")
            if need > available:
                plan = PLANS.get(account.plan, PLANS[DEFAULT_PLAN])
                metadata = {"account_id": account_id, "needed": str(need),
                            "available": str(available)}
                if plan.postpaid:
                    raise InsufficientCredits(
                        f"{need} credits needed, {available} left under the spending cap",
                        reason="SPENDING_CAP_REACHED", subject=f"account:{account_id}",
                        metadata=metadata)
                raise InsufficientCredits(
                    f"{need} credits needed, {available} available; buy credits first",
                    subject=f"account:{account_id}", metadata=metadata)
            result = RecordResult()
            self._charge(tx, account_id, [
                (UsageIn(event_id=item_id, key_id=key_id, method=method, credits=credits,
                         served_at=now, ticker=subject), "prod")
                for item_id, credits, subject in new], now, result)
        log.info("purchase.charged", account_id=account_id, key_id=key_id, method=method,
                 items=len(new), credits=need, already=len(already))
        return need, already

    def _charge(self, tx: Tx, account_id: str, items: list[tuple[UsageIn, str]],
                now: dt.datetime, result: RecordResult) -> None:
        """Book one account's events: allowance first, then the balance, then (postpaid)
        the Stripe meter or (prepaid) a logged write-off; one ledger entry per batch."""
        account = get_account(tx, account_id)
        tx.lock_account(account_id)
        plan = PLANS.get(account.plan, PLANS[DEFAULT_PLAN])
        open_month(tx, account, now)
        balance = balance_of(tx, account_id)
        left_by_month: dict[str, int] = {}
        totals: dict[str, list[int]] = {}  # period -> [calls, allowance, paid]
        charged = 0
        first_event = ""
        for event, env in sorted(items, key=lambda pair: pair[0].served_at):
            served = event.served_at
            credits = event.credits if env == "prod" else 0
            allowance = ledger = metered = unpaid = 0
            if credits > 0:
                month = month_of(served)
                if month not in left_by_month:
                    left_by_month[month] = allowance_left(tx, account_id, month)
                ledger = min(credits, max(0, balance - charged))
                allowance = min(ledger, left_by_month[month])
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
                left_by_month[month_of(served)] -= allowance
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
            add_totals(tx, account_id, period, calls=calls, allowance=allowance, paid=paid)
        if charged:
            insert_entry(tx, account_id, -charged, "usage", "metered API calls",
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

    def recent_calls(self, account_id: str, *, limit: int) -> list[tuple[str, str, str, str,
                                                                      int, int, bool]]:
        """The account's latest booked calls, newest first: (served_at, method, ticker,
        key_id, calls, credits, in_gap). A stream's later minutes are rows of their own."""
        with self.db.tx() as tx:
            rows = tx.all("SELECT served_at, method, ticker, key_id, calls, credits, in_gap "
                          "FROM usage_events WHERE account_id = ? "
                          "ORDER BY served_at DESC, event_id LIMIT ?", (account_id, limit))
        return [(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5]), bool(r[6]))
                for r in rows]

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
                    insert_entry(tx, str(account_id), int(ledger_credits), "refund",
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
