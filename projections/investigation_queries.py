"""Reading what investigations need from the views, as parameterised SQL.

Rows come back as the views store them (PHI sealed). Every question is asked *through*
a seq: the answer is the one the ledger gave when it ended there, whatever was appended
since, so an investigation's pages (and its ``as_of`` answers) agree with one another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger.store.base import IN_CHUNK, LedgerStore
from projections.accesses import COLUMNS as ACCESS_COLUMNS
from projections.investigations import Scope

RECORD_ACTIONS = ("create", "update", "delete", "patient_shredded")
_SCOPE_LISTS = (("actor_id", "actors"), ("device_id", "devices"), ("ip", "ips"),
                ("patient_ref", "patient_refs"))


class InvestigationQueries:
    """Read-only questions over the views of one store, for investigations."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store

    def _rows(self, statement: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self.store.reading() as curs:
            curs.execute(self.store.sql(statement), tuple(params))
            return list(curs.fetchall())

    def investigation_entries(self, ledger: str, investigation_id: str | None = None
                              ) -> list[tuple[str, int, str, str]]:
        """``(investigation_id, seq, action, recorded_at)`` of every investigation entry
        (or one investigation's), in seq order."""
        statement = ("SELECT investigation_id, seq, action, recorded_at FROM"
                     " view_investigations WHERE ledger = %s")
        params: list[Any] = [ledger]
        if investigation_id is not None:
            statement += " AND investigation_id = %s"
            params.append(investigation_id)
        rows = self._rows(statement + " ORDER BY seq", params)
        return [(str(i), int(s), str(a), str(r)) for i, s, a, r in rows]

    def seq_as_of(self, ledger: str, recorded_utc: str, upto: int) -> int:
        """The last seq (at most ``upto``) recorded at or before ``recorded_utc``; 0 if none.
        Walks back from ``upto`` on the primary key: cheap for recent instants."""
        rows = self._rows(
            "SELECT seq FROM view_accesses WHERE ledger = %s AND seq <= %s"
            " AND recorded_at <= %s ORDER BY seq DESC LIMIT 1", (ledger, upto, recorded_utc))
        return int(rows[0][0]) if rows else 0

    def in_scope(self, ledger: str, scope: Scope, through: int) -> list[dict[str, Any]]:
        """Every access row in ``scope`` with seq <= ``through``, in time order (ties by
        seq). Each scope list is its own indexed probe; an entry matching several lists
        appears once."""
        found: dict[int, dict[str, Any]] = {}
        names = ", ".join(ACCESS_COLUMNS)
        for column, attribute in _SCOPE_LISTS:
            values = list(getattr(scope, attribute))
            for start in range(0, len(values), IN_CHUNK):
                chunk = values[start:start + IN_CHUNK]
                statement = (
                    f"SELECT {names} FROM view_accesses WHERE ledger = %s"
                    f" AND {column} IN ({', '.join(['%s'] * len(chunk))})"
                    " AND occurred_utc >= %s AND seq <= %s")
                params: list[Any] = [ledger, *chunk, scope.since_utc, through]
                if scope.until_utc is not None:
                    statement += " AND occurred_utc < %s"
                    params.append(scope.until_utc)
                for row in self._rows(statement, params):
                    item = dict(zip(ACCESS_COLUMNS, row, strict=True))
                    found[item["seq"]] = item
        return sorted(found.values(), key=lambda r: (r["occurred_utc"], r["seq"]))

    def record_seqs(self, ledger: str, refs: Sequence[str], through: int
                    ) -> list[tuple[int, str, str]]:
        """``(seq, patient_ref, action)`` of the record events (create, update, delete,
        shred) of the patients ``refs`` with seq <= ``through``, in seq order. Only
        events about the record itself count (no resource, or a ``patient`` resource)."""
        out: list[tuple[int, str, str]] = []
        actions = ", ".join(f"'{a}'" for a in RECORD_ACTIONS)
        for start in range(0, len(refs), IN_CHUNK):
            chunk = list(refs[start:start + IN_CHUNK])
            out.extend(
                (int(s), str(r), str(a)) for s, r, a in self._rows(
                    "SELECT seq, patient_ref, action FROM view_accesses WHERE ledger = %s"
                    f" AND patient_ref IN ({', '.join(['%s'] * len(chunk))})"
                    f" AND action IN ({actions}) AND seq <= %s"
                    " AND (resource_type IS NULL OR resource_type = 'patient')",
                    [ledger, *chunk, through]))
        return sorted(out)
