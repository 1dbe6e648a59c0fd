"""The audit queries themselves (``projections.queries``), against a real store.

The views' rows are written straight into a migrated database, so each row's time, seq,
action, outcome and patient are exactly what a case needs: ties on ``occurred_utc``
(where only ``seq`` orders), times out of seq order (where the sort key shows), bounds
that fall exactly on a row (inclusive ``since``, exclusive ``until``), a day in another
offset, a failure, an entry without a patient, and a second ledger holding the same actor
and patient ids. One database per backend is filled once and only read. The tenant
filters are tested end to end in ``tests/test_tenant_isolation.py``; the HTTP shape of
the lists in ``tests/test_audit_api.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ledger.migrate import migrate
from ledger.store import open_store
from projections.accesses import COLUMNS as ACCESS_COLUMNS
from projections.cursor import Position
from projections.disclosures import COLUMNS as DISCLOSURE_COLUMNS
from projections.instants import utc_of
from projections.patients import COLUMNS as PATIENT_COLUMNS
from projections.patients import PatientRow
from projections.queries import AccessFilter, AuditQueries
from tests.support import fresh_postgres

L, OTHER, BUSY = "clinic-a", "clinic-b", "clinic-busy"
U1, U2 = "agent-1", "agent-2"
P1, P2, P3, P4 = "ref-p1", "ref-p2", "ref-p3", "ref-p4"

# (seq, occurred_at, actor, patient, action, outcome) of ledger L. Seqs 2 and 3 share
# their instant; seq 4 happened before seq 1; seq 7 is the evening of the 26th in New York
# (the 27th in UTC), seq 8 the small hours of the 27th in Athens (the 26th in UTC); seq 6
# failed, on a patient no other entry touches.
ENTRIES: list[tuple[int, str, str, str | None, str, str]] = [
    (1, "2026-11-26T09:00:00Z", U1, P1, "view", "success"),
    (2, "2026-11-26T10:00:00Z", U1, P2, "create", "success"),
    (3, "2026-11-26T10:00:00Z", U1, P1, "update", "success"),
    (4, "2026-11-26T08:00:00Z", U2, P1, "view", "success"),
    (5, "2026-11-25T11:00:00Z", U1, None, "login", "success"),
    (6, "2026-11-26T12:00:00Z", U1, P4, "view", "failure"),
    (7, "2026-11-26T23:30:00-05:00", U1, P3, "view", "success"),
    (8, "2026-11-27T01:00:00+02:00", U1, P2, "view", "success"),
    (9, "2026-11-28T09:00:00Z", U1, None, "view", "success"),
]
# The other ledger: the same actor and patient ids, at the same instants.
OTHER_ENTRIES = [(1, "2026-11-26T09:00:00Z", U1, P1, "view", "success"),
                 (2, "2026-11-26T10:00:00Z", U1, P2, "view", "success")]
BUSY_COUNT = 51  # one more than recent()'s default limit


def access(ledger: str, seq: int, occurred_at: str, actor: str, patient: str | None,
           action: str, outcome: str) -> dict[str, Any]:
    row = dict.fromkeys(ACCESS_COLUMNS)
    row.update(ledger=ledger, seq=seq, event_id=f"{ledger}-{seq}", occurred_at=occurred_at,
               occurred_utc=utc_of(occurred_at), recorded_at=utc_of(occurred_at),
               action=action, outcome=outcome, actor_id=actor, actor_kind="user",
               patient_ref=patient, patient_token=None if patient is None else f"tok-{patient}",
               purpose="TREAT")
    return row


def disclosure(ledger: str, seq: int, occurred_at: str, patient: str) -> dict[str, Any]:
    row = dict.fromkeys(DISCLOSURE_COLUMNS)
    row.update(ledger=ledger, seq=seq, event_id=f"{ledger}-d{seq}", occurred_at=occurred_at,
               occurred_utc=utc_of(occurred_at), outcome="success", patient_ref=patient,
               recipient_name=f"name-{seq}", recipient_kind="person",
               description=f"why-{seq}", actor_id=U1, exempt=None)
    return row


# Disclosures of P1 in L (seqs 11 and 12 tie on their instant, 13 happened first), one of
# P2 in L, one of P1 in the other ledger.
DISCLOSURES = [
    disclosure(L, 11, "2026-11-26T10:00:00Z", P1),
    disclosure(L, 12, "2026-11-26T10:00:00Z", P1),
    disclosure(L, 13, "2026-11-26T07:00:00Z", P1),
    disclosure(L, 14, "2026-11-26T11:00:00Z", P1),
    disclosure(L, 15, "2026-11-26T10:30:00Z", P2),
    disclosure(OTHER, 11, "2026-11-26T10:00:00Z", P1),
]
PATIENTS = [
    PatientRow(L, P1, "tok-p1", "key-1", {"name": "sealed-a"}, False, False, 2, 3,
               utc_of("2026-11-26T10:00:00Z")),
    PatientRow(OTHER, P1, "tok-p1", None, {"name": "sealed-b"}, True, True, 1, 1,
               utc_of("2026-11-26T09:00:00Z")),
]


@dataclass(frozen=True)
class Filled:
    queries: AuditQueries
    accesses: dict[str, list[dict[str, Any]]]  # by ledger, in seq order


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def filled(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("queries") / "ledger.db"
        yield from _filled(f"sqlite:///{path}")
    else:
        with fresh_postgres() as url:
            yield from _filled(url)


def _filled(url: str) -> Iterator[Filled]:
    migrate(url)
    store = open_store(url)
    accesses = {L: [access(L, *e) for e in ENTRIES],
                OTHER: [access(OTHER, *e) for e in OTHER_ENTRIES],
                BUSY: [access(BUSY, seq, f"2026-11-26T09:{seq:02d}:00Z", U1, P1, "view",
                              "success") for seq in range(1, BUSY_COUNT + 1)]}
    try:
        with store.transaction() as tx:
            for table, columns, rows in (
                ("view_accesses", ACCESS_COLUMNS, [r for rs in accesses.values() for r in rs]),
                ("view_disclosures", DISCLOSURE_COLUMNS, DISCLOSURES),
                ("view_patients", PATIENT_COLUMNS, [dict(zip(PATIENT_COLUMNS, p.as_row(),
                                                             strict=True)) for p in PATIENTS]),
            ):
                statement = (f"INSERT INTO {table} ({', '.join(columns)})"
                             f" VALUES ({', '.join(['%s'] * len(columns))})")
                for row in rows:
                    store.execute(tx, statement, [row[c] for c in columns])
        yield Filled(AuditQueries(store), accesses)
    finally:
        store.close()


def seqs(rows: list[dict[str, Any]]) -> list[int]:
    return [r["seq"] for r in rows]


def utc(seq: int) -> str:
    """The ``occurred_utc`` of ledger L's entry ``seq``."""
    return utc_of(next(e[1] for e in ENTRIES if e[0] == seq))


# -- one patient's record ----------------------------------------------------------------

def test_a_patients_record_is_the_rows_of_its_own_ledger(filled: Filled) -> None:
    q = filled.queries
    assert q.patient(L, P1) == PATIENTS[0]
    assert q.patient(OTHER, P1) == PATIENTS[1]
    assert q.patient(L, P2) is None
    assert q.patient(BUSY, P1) is None  # accesses alone make no record


# -- whether anything is recorded --------------------------------------------------------

def test_has_accesses_looks_in_the_column_asked_for(filled: Filled) -> None:
    q = filled.queries
    assert q.has_accesses(L, patient_ref=P3) is True
    assert q.has_accesses(L, actor_id=U2) is True
    assert q.has_accesses(OTHER, patient_ref=P3) is False
    assert q.has_accesses(OTHER, actor_id=U2) is False
    # an actor id asked for as a patient (and a patient as an actor) is not found
    assert q.has_accesses(L, patient_ref=U1) is False
    assert q.has_accesses(L, actor_id=P1) is False
    # the patient decides when both are given
    assert q.has_accesses(L, patient_ref=P3, actor_id="nobody") is True
    assert q.has_accesses(L, patient_ref="nobody", actor_id=U1) is False


# -- histories: a patient's or a user's accesses -----------------------------------------

def page(filled: Filled, where: AccessFilter, *, after: Position | None = None,
         order: str = "asc", limit: int = 100) -> list[int]:
    assert order in ("asc", "desc")
    return seqs(filled.queries.accesses(L, where, after=after,
                                        order="asc" if order == "asc" else "desc",
                                        limit=limit))


def test_a_history_is_ordered_by_time_then_seq(filled: Filled) -> None:
    # seq 4 happened first; 2 and 3 tie on their instant; 7 is later in UTC than 8
    assert page(filled, AccessFilter(patient_ref=P1)) == [4, 1, 3]
    assert page(filled, AccessFilter(actor_id=U1)) == [5, 1, 2, 3, 6, 8, 7, 9]
    assert page(filled, AccessFilter(actor_id=U1), order="desc") == [9, 7, 8, 6, 3, 2, 1, 5]
    assert page(filled, AccessFilter(patient_ref=P1, actor_id=U1)) == [1, 3]
    assert page(filled, AccessFilter()) == [5, 4, 1, 2, 3, 6, 8, 7, 9]


def test_a_history_holds_the_rows_as_stored(filled: Filled) -> None:
    rows = filled.queries.accesses(OTHER, AccessFilter(patient_ref=P1), after=None,
                                   order="asc", limit=10)
    assert rows == [filled.accesses[OTHER][0]]


def test_a_history_is_cut_at_its_limit(filled: Filled) -> None:
    assert page(filled, AccessFilter(actor_id=U1), limit=3) == [5, 1, 2]
    assert page(filled, AccessFilter(actor_id=U1), order="desc", limit=1) == [9]


def test_a_histories_period_includes_its_start_and_excludes_its_end(filled: Filled) -> None:
    # from the instant of seqs 2 and 3 to that of seq 7: both ties in, seq 7 out
    where = AccessFilter(actor_id=U1, since_utc=utc(2), until_utc=utc(7))
    assert page(filled, where) == [2, 3, 6, 8]
    assert page(filled, AccessFilter(actor_id=U1, since_utc=utc(6))) == [6, 8, 7, 9]
    assert page(filled, AccessFilter(actor_id=U1, until_utc=utc(2))) == [5, 1]


def test_a_history_narrowed_to_actions(filled: Filled) -> None:
    assert page(filled, AccessFilter(actor_id=U1, actions=("create",))) == [2]
    assert page(filled, AccessFilter(actor_id=U1, actions=("login", "update"))) == [5, 3]
    where = AccessFilter(actor_id=U1, actions=("view", "create"), since_utc=utc(2),
                         until_utc=utc(7))
    assert page(filled, where) == [2, 6, 8]


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_keyset_pages_continue_after_the_last_row_shown(filled: Filled, order: str) -> None:
    """Paging by 2 through a user's history gives every row once, in order, each page
    starting right after the previous page's last ``(occurred_utc, seq)``; the tie of
    seqs 2 and 3 falls across a page boundary in both orders."""
    where = AccessFilter(actor_id=U1)
    everything = page(filled, where, order=order)
    walked: list[int] = []
    after: Position | None = None
    for _ in range(len(everything)):  # bounded: a position not honoured repeats a page
        rows = filled.queries.accesses(L, where, after=after,
                                       order="asc" if order == "asc" else "desc", limit=2)
        if not rows:
            break
        walked += seqs(rows)
        after = Position(rows[-1]["occurred_utc"], rows[-1]["seq"])
    assert walked == everything
    assert len(everything) == len([e for e in ENTRIES if e[2] == U1])


def test_a_keyset_position_between_two_rows_of_one_instant(filled: Filled) -> None:
    where = AccessFilter(actor_id=U1)
    assert page(filled, where, after=Position(utc(2), 2), limit=2) == [3, 6]
    assert page(filled, where, after=Position(utc(3), 3), order="desc", limit=2) == [2, 1]
    # after a position combined with the period and actions
    narrowed = AccessFilter(actor_id=U1, since_utc=utc(1), until_utc=utc(7),
                            actions=("view", "update"))
    assert page(filled, narrowed, after=Position(utc(1), 1)) == [3, 6, 8]
    assert page(filled, narrowed, after=Position(utc(8), 8), order="desc") == [6, 3, 1]


# -- the newest entries of a ledger ------------------------------------------------------

def recent(filled: Filled, ledger: str = L, **kw: Any) -> list[int]:
    return seqs(filled.queries.recent(ledger, **kw))


def test_the_newest_entries_come_by_seq_newest_first(filled: Filled) -> None:
    # by seq, not by time: seq 4 happened before seq 1 and still comes after seq 5
    assert recent(filled) == [9, 8, 7, 6, 5, 4, 3, 2, 1]
    assert filled.queries.recent(OTHER) == filled.accesses[OTHER][::-1]
    assert recent(filled, limit=2) == [9, 8]


def test_the_newest_entries_are_fifty_unless_asked(filled: Filled) -> None:
    assert recent(filled, BUSY) == list(range(BUSY_COUNT, BUSY_COUNT - 50, -1))
    assert len(recent(filled, BUSY, limit=BUSY_COUNT)) == BUSY_COUNT


def test_older_entries_page_before_a_seq(filled: Filled) -> None:
    assert recent(filled, before_seq=4) == [3, 2, 1]
    assert recent(filled, before_seq=4, limit=2) == [3, 2]
    assert recent(filled, before_seq=1) == []


def test_the_newest_entries_in_a_period_and_of_actions(filled: Filled) -> None:
    # from the instant of seqs 2 and 3 (in) to that of seq 7 (out)
    assert recent(filled, since_utc=utc(2), until_utc=utc(7)) == [8, 6, 3, 2]
    assert recent(filled, since_utc=utc(6)) == [9, 8, 7, 6]
    assert recent(filled, until_utc=utc(1)) == [5, 4]
    assert recent(filled, actions=("login",)) == [5]
    assert recent(filled, actions=("create", "update")) == [3, 2]
    assert recent(filled, actions=("view", "login"), since_utc=utc(1), until_utc=utc(9),
                  before_seq=8) == [7, 6, 1]


# -- a user's distinct patients a day ----------------------------------------------------

def test_daily_patients_count_distinct_patients_of_successes_by_local_day(
    filled: Filled
) -> None:
    q = filled.queries
    everything = ("view", "create", "update", "login")
    week = ("2026-11-20T00:00:00Z", "2026-12-01T00:00:00Z")
    # the 26th: P1 (seqs 1, 3), P2 (2), P3 (7, the 27th in UTC), and not P4, whose only
    # entry (6) failed; the 27th: P2 (8, the 26th in UTC); the 25th and the 28th hold
    # entries without a patient only, so they are not days with patients
    assert q.daily_patients(L, U1, everything, *week) == {"2026-11-26": 3, "2026-11-27": 1}
    assert q.daily_patients(L, U1, ("create",), *week) == {"2026-11-26": 1}
    assert q.daily_patients(L, U2, everything, *week) == {"2026-11-26": 1}
    assert q.daily_patients(OTHER, U1, everything, *week) == {"2026-11-26": 2}
    # from seqs 2 and 3 (in) to seq 7 (out): P2 and P1 on the 26th, P2 on the 27th
    assert q.daily_patients(L, U1, everything, utc(2), utc(7)) == {"2026-11-26": 2,
                                                                   "2026-11-27": 1}


# -- the accounting of disclosures -------------------------------------------------------

def test_disclosures_of_a_patient_oldest_first_within_the_period(filled: Filled) -> None:
    q = filled.queries
    by_seq = {(r["ledger"], r["seq"]): r for r in DISCLOSURES}
    ten, eleven = utc_of("2026-11-26T10:00:00Z"), utc_of("2026-11-26T11:00:00Z")
    assert q.disclosures(L, P1, None, None) == [by_seq[(L, s)] for s in (13, 11, 12, 14)]
    assert [r["seq"] for r in q.disclosures(L, P1, ten, eleven)] == [11, 12]
    assert [r["seq"] for r in q.disclosures(L, P1, ten, None)] == [11, 12, 14]
    assert [r["seq"] for r in q.disclosures(L, P1, None, ten)] == [13]
    assert q.disclosures(OTHER, P1, None, None) == [by_seq[(OTHER, 11)]]
    assert q.disclosures(L, P3, None, None) == []
