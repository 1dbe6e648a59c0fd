"""Crypto-shredding: destroying a patient's data key and recording that in the ledger.

The key is deleted in the same transaction that appends the ``patient_shredded`` entry,
so the ledger says a patient was shredded exactly when their key is gone. The entry names
the patient only by blind index; the chain keeps verifying, because nothing already in it
changes: its ciphertexts simply no longer open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.admission import Accepted, Pending
from ledger.attestation import BY_SERVICE
from ledger.clock import Clock
from ledger.entry import Receipt
from ledger.event_ids import new_event_id
from ledger.protection import EnvelopeProtection
from ledger.store import LedgerStore

SHREDDED = "patient_shredded"


@dataclass(frozen=True)
class Shredding:
    receipt: Receipt
    patient_ref: str
    keys_destroyed: int


def shred_patient(
    store: LedgerStore,
    protection: EnvelopeProtection,
    ledger: str,
    patient_id: str,
    *,
    actor: str,
    reason: str | None,
    clock: Clock,
) -> Shredding:
    ref = protection.patient_ref(ledger, patient_id)
    had = len(protection.keys.lookup(ledger, [ref]))
    now = clock()
    event: dict[str, Any] = {
        "event_id": new_event_id(),
        "occurred_at": now.isoformat(timespec="microseconds"),
        "action": SHREDDED,
        "outcome": "success",
        "actor": {"id": actor, "kind": "system"},
        "patient": {"ref": ref},
    }
    if reason:
        # The reason is an operator's note (a request number, "patient request"): never PHI.
        event["source"] = {"system": "phi-ledger shred", "site": reason[:256]}
    pending = Pending(event["event_id"], protection.fingerprint(ledger, event), event,
                      BY_SERVICE.members())
    outcome = store.append(
        {ledger: [[pending]]}, now, before=protection.keys.shredder(ledger, ref)
    )[ledger][0]
    assert isinstance(outcome, Accepted)
    protection.keys.forget(ledger, ref)
    return Shredding(outcome.receipts[0], ref, had)
