"""The audit trail of admin actions."""

from __future__ import annotations

import json
import uuid

from billingd.db import Database
from billingd.store.records import AuditEvent, stamp, utcnow
from ktape.log import get_logger

log = get_logger(__name__)


class AuditArea:
    db: Database

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
