"""Questions asked of the alerts view: lists by filter, one alert, alerts by entry.

Rows come back as the view holds them (the patient a blind index and sealed token);
opening them and recording the read is the API's work. ``alerts_for_seqs`` is what a
breach investigation's timeline asks: the alerts raised on given entries.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from ledger.store.base import LedgerStore
from projections.cursor import Position

COLUMNS = ("alert_id, seq, rule, severity, status, event_id, occurred_at, occurred_utc,"
           " actor_id, patient_ref, patient_token, key_id, explained_by, details, triaged_seq")


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """Which alerts a list shows; None (or empty) matches everything."""

    rules: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    actor: str | None = None
    patient_ref: str | None = None
    since: str | None = None  # occurred_utc, inclusive
    until: str | None = None  # occurred_utc, exclusive
    # The action of the entry an alert is about. The view does not keep it: an alert's
    # seq is its entry's, so the entry's row in view_accesses (keyed by ledger, seq) says.
    actions: tuple[str, ...] = ()


def _rows(curs: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in curs.description]
    out = []
    for row in curs.fetchall():
        item = dict(zip(names, row, strict=True))
        item["details"] = orjson.loads(item["details"])
        out.append(item)
    return out


def list_alerts(store: LedgerStore, ledger: str, where: AlertFilter,
                after: Position | None, limit: int) -> list[dict[str, Any]]:
    """Alerts of ``ledger`` matching ``where``, newest entry first (seq descending),
    after the cursor ``after`` (a Position of (occurred_utc, seq), seq being the key)."""
    clauses, params = ["ledger = %s"], list[Any]([ledger])
    for column, values in (("rule", where.rules), ("status", where.statuses)):
        if values:
            clauses.append(f"{column} IN ({', '.join(['%s'] * len(values))})")
            params += list(values)
    if where.actor is not None:
        clauses.append("actor_id = %s")
        params.append(where.actor)
    if where.patient_ref is not None:
        clauses.append("patient_ref = %s")
        params.append(where.patient_ref)
    if where.actions:
        clauses.append("EXISTS (SELECT 1 FROM view_accesses a WHERE a.ledger ="
                       " view_alerts.ledger AND a.seq = view_alerts.seq AND a.action IN"
                       f" ({', '.join(['%s'] * len(where.actions))}))")
        params += list(where.actions)
    if where.since is not None:
        clauses.append("occurred_utc >= %s")
        params.append(where.since)
    if where.until is not None:
        clauses.append("occurred_utc < %s")
        params.append(where.until)
    if after is not None:
        # The cursor's seq, and the alert id's rule part as text after it.
        clauses.append("(seq < %s OR (seq = %s AND alert_id > %s))")
        params += [after.seq, after.seq, after.occurred_utc]
    with store.reading() as curs:
        curs.execute(store.sql(f"SELECT {COLUMNS} FROM view_alerts WHERE"
                               f" {' AND '.join(clauses)} ORDER BY seq DESC, alert_id"
                               " LIMIT %s"), (*params, limit))
        return _rows(curs)


def alert_by_id(store: LedgerStore, ledger: str, alert_id: str) -> dict[str, Any] | None:
    with store.reading() as curs:
        curs.execute(store.sql(f"SELECT {COLUMNS} FROM view_alerts"
                               " WHERE ledger = %s AND alert_id = %s"), (ledger, alert_id))
        rows = _rows(curs)
    return rows[0] if rows else None


def alerts_for_seqs(store: LedgerStore, ledger: str, seqs: Iterable[int]
                    ) -> dict[int, list[dict[str, Any]]]:
    """The alerts raised on each of ``seqs`` (entries of ``ledger``), rule order; an
    entry with none is absent. Rows as the view holds them (patient sealed)."""
    wanted = sorted(set(seqs))
    out: dict[int, list[dict[str, Any]]] = {}
    with store.reading() as curs:
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            curs.execute(store.sql(
                f"SELECT {COLUMNS} FROM view_alerts WHERE ledger = %s AND seq IN"
                f" ({', '.join(['%s'] * len(chunk))}) ORDER BY seq, rule"), (ledger, *chunk))
            for row in _rows(curs):
                out.setdefault(row["seq"], []).append(row)
    return out


def alert_counts(store: LedgerStore) -> dict[tuple[str, str], int]:
    """How many alerts there are of each (rule, status), over every ledger."""
    with store.reading() as curs:
        curs.execute("SELECT rule, status, COUNT(*) FROM view_alerts GROUP BY rule, status")
        return {(rule, status): int(n) for rule, status, n in curs.fetchall()}


def newest_alerts(store: LedgerStore, after_seq: dict[str, int], limit: int = 500
                  ) -> list[tuple[str, str, str, int]]:
    """``(ledger, alert_id, rule, seq)`` of alerts raised after each ledger's ``after_seq``
    (for the webhook: ids and rule codes only)."""
    with store.reading() as curs:
        curs.execute(store.sql("SELECT ledger, alert_id, rule, seq FROM view_alerts"
                               " ORDER BY ledger, seq, alert_id"))
        rows = [r for r in curs.fetchall() if r[3] > after_seq.get(r[0], 0)]
    return [(str(a), str(b), str(c), int(d)) for a, b, c, d in rows[:limit]]
