"""Verifying a ledger's chain on request, and remembering the verdict.

One path for the API (``POST /v1/ledger/verify``) and the console's "Verify now": the
whole chain (and its signed checkpoints) is recomputed by :func:`ledger.verifier.verify`,
and the verdict is kept in the ``verifications`` table with when and by whom, so the
ledger page can say when the chain was last known good. Only seqs, hashes' verdicts and
identity ids are kept: no PHI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.chain import Verdict
from ledger.verifier import verify as verify_chain
from projections.instants import format_utc


@dataclass(frozen=True, slots=True)
class VerificationRecord:
    """A verification made through the service: when, by whom, and its verdict."""

    verified_at: str
    verified_by: str
    ok: bool
    verified_through: int
    first_bad_seq: int | None
    reason: str | None


def verify_and_record(svc: Any, ledger: str, by: str) -> Verdict:
    """Recompute ``ledger``'s chain now and record the verdict (blocking: run it off the
    event loop)."""
    verdict = verify_chain(svc.store, svc.settings.database_url, ledger)
    with svc.store.transaction() as tx:
        svc.store.execute(
            tx, "INSERT INTO verifications (ledger, verified_at, verified_by, ok,"
            " verified_through, first_bad_seq, reason) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (ledger, format_utc(svc.clock()), by, int(verdict.ok), verdict.verified_through,
             verdict.first_bad_seq, verdict.reason))
    return verdict


def last_verification(svc: Any, ledger: str) -> VerificationRecord | None:
    """The newest verification of ``ledger`` recorded here, if any."""
    with svc.store.transaction() as tx:
        row = svc.store.execute(
            tx, "SELECT verified_at, verified_by, ok, verified_through, first_bad_seq, reason"
            " FROM verifications WHERE ledger = %s ORDER BY id DESC LIMIT 1",
            (ledger,)).fetchone()
    if row is None:
        return None
    return VerificationRecord(row[0], row[1], bool(row[2]), int(row[3]),
                              None if row[4] is None else int(row[4]), row[5])
