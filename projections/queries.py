"""Reading the views: the questions auditors ask, as parameterised SQL.

Rows come back as the views store them -- PHI still sealed; the API opens it for the
caller. Lists are keyset-paged on ``(occurred_utc, seq)`` (see :mod:`projections.cursor`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ledger.store.base import LedgerStore
from projections.accesses import COLUMNS as ACCESS_COLUMNS
from projections.cursor import Position
from projections.disclosures import COLUMNS as DISCLOSURE_COLUMNS
from projections.patients import PatientRow, PatientsView

Order = Literal["asc", "desc"]


@dataclass(frozen=True, slots=True)
class AccessFilter:
    """Which accesses a list shows. ``patient_ref``/``actor_id`` choose whose history;
    the rest narrow it."""

    patient_ref: str | None = None
    actor_id: str | None = None
    since_utc: str | None = None
    until_utc: str | None = None
    actions: tuple[str, ...] = field(default_factory=tuple)


class AuditQueries:
    """Read-only questions over the views of one store."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store

    def patient(self, ledger: str, patient_ref: str) -> PatientRow | None:
        with self.store.reading() as curs:
            curs.execute(
                self.store.sql(f"SELECT {PatientsView.columns} FROM view_patients"
                               " WHERE ledger = %s AND patient_ref = %s"),
                (ledger, patient_ref),
            )
            row = curs.fetchone()
        return None if row is None else PatientRow.from_row(row)

    def has_accesses(self, ledger: str, *, patient_ref: str | None = None,
                     actor_id: str | None = None) -> bool:
        column, value = ("patient_ref", patient_ref) if patient_ref else ("actor_id", actor_id)
        with self.store.reading() as curs:
            curs.execute(
                self.store.sql(
                    f"SELECT 1 FROM view_accesses WHERE ledger = %s AND {column} = %s LIMIT 1"
                ),
                (ledger, value),
            )
            return curs.fetchone() is not None

    def accesses(self, ledger: str, where: AccessFilter, *, after: Position | None,
                 order: Order, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` access rows (as column -> value) after ``after``, in
        ``(occurred_utc, seq)`` order."""
        clauses = ["ledger = %s"]
        params: list[Any] = [ledger]
        for column, value in (("patient_ref", where.patient_ref), ("actor_id", where.actor_id)):
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        return self._page("view_accesses", ACCESS_COLUMNS, clauses, params, where, after,
                          order, limit)

    def recent(self, ledger: str, *, actions: tuple[str, ...] = (),
               since_utc: str | None = None, until_utc: str | None = None,
               before_seq: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The newest entries of ``ledger`` (as access rows, PHI sealed), newest first by
        seq, keyset-paged with ``before_seq``; narrowed by action and time."""
        clauses, params = ["ledger = %s"], list[Any]([ledger])
        if before_seq is not None:
            clauses.append("seq < %s")
            params.append(before_seq)
        for clause, bound in (("occurred_utc >= %s", since_utc), ("occurred_utc < %s", until_utc)):
            if bound is not None:
                clauses.append(clause)
                params.append(bound)
        if actions:
            clauses.append(f"action IN ({', '.join(['%s'] * len(actions))})")
            params.extend(actions)
        statement = (f"SELECT {', '.join(ACCESS_COLUMNS)} FROM view_accesses"
                     f" WHERE {' AND '.join(clauses)} ORDER BY seq DESC LIMIT %s")
        with self.store.reading() as curs:
            curs.execute(self.store.sql(statement), [*params, limit])
            return [dict(zip(ACCESS_COLUMNS, row, strict=True)) for row in curs.fetchall()]

    def daily_patients(self, ledger: str, actor_id: str, actions: Sequence[str],
                       since_utc: str, until_utc: str) -> dict[str, int]:
        """Distinct patients of ``actor_id``'s successful ``actions`` per local day (the
        date of ``occurred_at`` as the event gave it, in its own offset), in the period.
        Counts of blind indexes: no patient is opened."""
        marks = ", ".join(["%s"] * len(actions))
        statement = (
            "SELECT substr(occurred_at, 1, 10) AS day, COUNT(DISTINCT patient_ref)"
            " FROM view_accesses WHERE ledger = %s AND actor_id = %s"
            " AND occurred_utc >= %s AND occurred_utc < %s AND outcome = 'success'"
            f" AND patient_ref IS NOT NULL AND action IN ({marks})"
            " GROUP BY substr(occurred_at, 1, 10)")
        with self.store.reading() as curs:
            curs.execute(self.store.sql(statement),
                         [ledger, actor_id, since_utc, until_utc, *actions])
            return {str(day): int(count) for day, count in curs.fetchall()}

    def disclosures(self, ledger: str, patient_ref: str, since_utc: str | None,
                    until_utc: str | None) -> list[dict[str, Any]]:
        """Every disclosure of one patient's PHI in the period, oldest first."""
        where = AccessFilter(since_utc=since_utc, until_utc=until_utc)
        return self._page("view_disclosures", DISCLOSURE_COLUMNS,
                          ["ledger = %s", "patient_ref = %s"], [ledger, patient_ref], where,
                          None, "asc", None)

    def _page(self, table: str, columns: Sequence[str], clauses: list[str],
              params: list[Any], where: AccessFilter, after: Position | None, order: Order,
              limit: int | None) -> list[dict[str, Any]]:
        for clause, bound in (("occurred_utc >= %s", where.since_utc),
                              ("occurred_utc < %s", where.until_utc)):
            if bound is not None:
                clauses.append(clause)
                params.append(bound)
        if where.actions:
            clauses.append(f"action IN ({', '.join(['%s'] * len(where.actions))})")
            params.extend(where.actions)
        if after is not None:
            # Row-value comparison: both databases use the (…, occurred_utc, seq) index.
            clauses.append("(occurred_utc, seq) > (%s, %s)" if order == "asc"
                           else "(occurred_utc, seq) < (%s, %s)")
            params.extend((after.occurred_utc, after.seq))
        direction = "ASC" if order == "asc" else "DESC"
        statement = (
            f"SELECT {', '.join(columns)} FROM {table} WHERE {' AND '.join(clauses)}"
            f" ORDER BY occurred_utc {direction}, seq {direction}"
        )
        if limit is not None:
            statement += " LIMIT %s"
            params.append(limit)
        with self.store.reading() as curs:
            curs.execute(self.store.sql(statement), params)
            return [dict(zip(columns, row, strict=True)) for row in curs.fetchall()]
