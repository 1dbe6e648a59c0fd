"""Entries a view could not apply, set aside so that the view goes on.

A view that cannot apply an entry (a value no view column can hold, a field of the
wrong type, a time that overflows when converted to UTC) must not stop there: every
later entry would then wait for someone to edit the database. The projector retries the
batch entry by entry, and an entry that still fails -- while the database answers, and
with an error that blames a value of the entry (not a lost connection, a timeout, a
lock, a missing table) -- is recorded here, in the same transaction that moves the view's
position past it.

A row names the view, the entry (notification id, ledger, seq) and the error as its
type and a fixed short reason: never the exception's message, which can quote the
entry's values (PHI). The entry itself stays in the ledger, verifiable as ever; once the
view's code can apply it, ``phi-ledger rebuild VIEW`` applies it (a rebuild empties the
view's quarantine rows with its tables and projects every entry again).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

TABLE = "projection_quarantine"

# The SQLSTATE classes that blame a value: data exception (22: out of range, bad
# encoding, NUL) and integrity constraint violation (23). Every other class is about the
# database or the view's code, not the entry -- connection (08), deadlock or
# serialization (40), resources (53), lock timeout (55), statement timeout or shutdown
# (57), a missing table or privilege (42) -- and would fail any entry: setting the entry
# aside for one would lose an entry that applies once it is fixed or has passed.
_ENTRY_SQLSTATE = ("22", "23")

# A fixed reason per error family: the exception's own text can quote the entry.
_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (OverflowError, "a value is out of range"),
    (UnicodeError, "text cannot be encoded"),
    (KeyError, "a field the view reads is missing"),
    (IndexError, "a field the view reads is missing"),
    (TypeError, "a field the view reads has the wrong type"),
    (AttributeError, "a field the view reads has the wrong type"),
    (ValueError, "a value is not valid"),
)


@dataclass(frozen=True, slots=True)
class Quarantined:
    """One entry a view set aside."""

    view: str
    notification_id: int
    ledger: str | None
    seq: int | None
    error: str
    quarantined_at: str

    def as_dict(self) -> dict[str, object]:
        return {"view": self.view, "notification_id": self.notification_id,
                "ledger": self.ledger, "seq": self.seq, "error": self.error,
                "quarantined_at": self.quarantined_at}


def error_text(error: BaseException) -> str:
    """``error`` as ``Type: reason`` without anything it quotes. A database error gives
    its SQLSTATE (a code, never a value) where the driver knows it."""
    name = type(error).__name__
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return f"{name}: the database refused a value (SQLSTATE {sqlstate})"
    if name == "StoreUnavailable":
        # Its text is made by the store from the driver error's class name only.
        return f"{name}: {str(error)[:120]}"
    for family, reason in _REASONS:
        if isinstance(error, family):
            return f"{name}: {reason}"
    if type(error).__module__.startswith("sqlite3"):
        return f"{name}: the database refused a value"
    return f"{name}: the view could not apply the entry"


def not_the_entry(error: BaseException) -> bool:
    """Whether ``error`` says the database could not do the work (a lost connection, a
    timeout, a lock, a missing table or privilege: to be waited out or fixed, with the
    view paused), rather than that it refused a value of this entry."""
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return not sqlstate.startswith(_ENTRY_SQLSTATE)
    if type(error).__module__.startswith("psycopg"):
        # Without a SQLSTATE these are the driver's own: a connection lost or closed.
        return type(error).__name__ in ("OperationalError", "InterfaceError")
    if type(error).__module__.startswith("sqlite3"):
        # OperationalError is SQLite's "locked", "busy", "disk I/O error", "no such
        # table"; a value it cannot bind or store is a ProgrammingError, InterfaceError,
        # IntegrityError, DataError, or an OverflowError from Python.
        return type(error).__name__ == "OperationalError"
    return False


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def record(tx: Any, sql: Any, view: str, notification_id: int, ledger: str | None,
           seq: int | None, error: str, at: str) -> None:
    """Set one entry aside for ``view``, inside the transaction that moves the view past
    it (a second record of the same entry changes nothing)."""
    tx.execute(
        sql(f"INSERT INTO {TABLE} (view, notification_id, ledger, seq, error, quarantined_at)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (view, notification_id) DO NOTHING"),
        (view, notification_id, ledger, seq, error, at),
    )


def clear(tx: Any, sql: Any, views: list[str]) -> None:
    """Forget what ``views`` set aside (their rebuild applies every entry again)."""
    if views:
        tx.execute(sql(f"DELETE FROM {TABLE} WHERE view IN ({', '.join(['%s'] * len(views))})"),
                   views)


def listing(store: Any, limit: int | None = None) -> list[Quarantined]:
    """Entries set aside, oldest entry first (at most ``limit``)."""
    statement = (f"SELECT view, notification_id, ledger, seq, error, quarantined_at FROM {TABLE}"
                 " ORDER BY notification_id, view")
    params: tuple[int, ...] = ()
    if limit is not None:
        statement += " LIMIT %s"
        params = (limit,)
    with store.reading() as curs:
        curs.execute(store.sql(statement), params)
        rows = curs.fetchall()
    return [Quarantined(str(view), int(position), ledger, None if seq is None else int(seq),
                        str(error), str(at))
            for view, position, ledger, seq, error, at in rows]


def counts(store: Any) -> dict[str, int]:
    """How many entries each view set aside (views with none are absent)."""
    with store.reading() as curs:
        curs.execute(f"SELECT view, count(*) FROM {TABLE} GROUP BY view")
        return {str(view): int(n) for view, n in curs.fetchall()}
