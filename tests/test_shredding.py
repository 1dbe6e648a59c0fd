"""Crypto-shredding a patient, end to end, on SQLite and PostgreSQL.

Events for patients A and B go in over HTTP (``create`` and ``update`` with ``data``, a
``disclose``, a ``read``); ``phi-ledger shred --patient A`` runs as an operator runs it.
Afterwards every protected field of A's events reads ``[erased]`` while B's events reveal
exactly as posted; the chain still verifies and exports; the ledger records the shredding
naming A by blind index only; a new event for A gets a new data key and reads fine.
Reading goes through the product's own ``load_key_ring`` + ``DataKeys`` +
``EnvelopeProtection.reveal_many``, in fresh objects (no cache shared with the writer).
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from fastapi.testclient import TestClient

from api.app import create_app
from ledger.data_keys import DataKeys
from ledger.protect import ERASED
from ledger.protection import EnvelopeProtection, load_key_ring
from ledger.settings import Settings
from ledger.shredding import SHREDDED
from ledger.store import open_store
from tests.support import contract_example, key_headers, make_event
from tests.test_tamper import LEDGER, run_cli

A = "MRN-0070001"
B = "MRN-0070002"
SHRED_LINE = re.compile(
    r"patient ref ([0-9a-f]{64}): (data key destroyed|no data key held \(nothing to open\));"
    r" recorded at seq (\d+)$"
)


def patient_events(mrn: str, name: str) -> list[dict[str, Any]]:
    """create and update with ``data``, a disclosure and a read, for one patient."""
    patient = {"id": mrn}
    return [
        make_event(action="create", patient=patient,
                   resource={"type": "patient", "phi": ["name", "dob", "phone", "condition"]},
                   data={"name": name, "dob": "1961-04-09", "phone": "(617) 555-0142",
                         "condition": f"{name}'s asthma", "allergies": ["penicillin", "latex"],
                         "notes": None}),
        make_event(action="update", patient=patient,
                   resource={"type": "patient", "phi": ["phone", "address"]},
                   data={"phone": "(617) 555-0199", "address": f"12 Elm St for {name}"}),
        {**contract_example(), "patient": patient,
         "disclosure": {"recipient": {"name": f"Dr. Who treats {name}",
                                      "address": "pager 4471", "kind": "provider"},
                        "description": f"callback for {name}", "encrypted": True}},
        make_event(patient=patient),
    ]


def post(settings: Settings, events: list[dict[str, Any]]) -> list[int]:
    """Post through the HTTP API of a service that is then shut down; the seqs."""
    with TestClient(create_app(settings, configure_logs=False),
                    headers=key_headers(settings.database_url)) as client:
        r = client.post("/v1/events/batch", json={"events": events})
    assert r.status_code == 201, r.text
    return [receipt["seq"] for receipt in r.json()["receipts"]]


def erased(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` as a reader must see it after its patient was shredded (written from
    the recipe's documented behaviour, not with the product's code)."""
    out = copy.deepcopy(event)
    out["patient"] = {"id": ERASED}
    if out.get("data"):
        out["data"] = {k: None if v is None else ERASED for k, v in out["data"].items()}
    if out.get("disclosure"):
        recipient = out["disclosure"]["recipient"]
        recipient["name"] = ERASED
        if recipient.get("address") is not None:
            recipient["address"] = ERASED
        out["disclosure"]["description"] = ERASED
    return out


class Reader:
    """The ledger as stored, and revealed with the key file: a fresh process's view."""

    def __init__(self, settings: Settings) -> None:
        store = open_store(settings.database_url)
        try:
            ring = load_key_ring(settings, store)
            protection = EnvelopeProtection(ring, DataKeys(store, ring))
            self.lines = [data for _, data in store.stream(LEDGER)]
            self.entries = [json.loads(data) for data in self.lines]
            self.stored = [e["event"] for e in self.entries]
            self.revealed = protection.reveal_many(LEDGER, self.stored)
            self.ref = {mrn: protection.patient_ref(LEDGER, mrn) for mrn in (A, B)}
            with store.transaction() as tx:
                tx.execute("SELECT patient_ref, key_id FROM patient_keys")
                self.key_rows = dict(tx.fetchall())
        finally:
            store.close()

    def at(self, seq: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(stored, revealed) event at ``seq``."""
        return self.stored[seq - 1], self.revealed[seq - 1]


def shred(settings: Settings, mrn: str, *extra: str) -> tuple[str, str, int]:
    result = run_cli(settings, "shred", "--patient", mrn, "--yes", *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.strip().splitlines()
    match = SHRED_LINE.fullmatch(lines[-1]) if lines else None
    assert match, result.stdout
    assert mrn not in result.stdout + result.stderr
    return match.group(1), match.group(2), int(match.group(3))


def test_shredding_erases_one_patient_and_keeps_the_chain(settings: Settings) -> None:
    a_events = patient_events(A, "Abigail Quist")
    b_events = patient_events(B, "Bartholomew Yarrow")
    interleaved = [e for pair in zip(a_events, b_events, strict=True) for e in pair]
    seqs = post(settings, interleaved)
    a_seqs, b_seqs = seqs[0::2], seqs[1::2]

    before = Reader(settings)
    assert [before.at(s)[1] for s in a_seqs] == a_events  # readable before the shred
    old_key = before.at(a_seqs[0])[0]["patient"]["key"]

    ref, what, shred_seq = shred(settings, A, "--reason", "ticket PRIV-42")
    assert what == "data key destroyed"
    assert shred_seq == len(interleaved) + 1

    after = Reader(settings)
    assert ref == after.ref[A]
    assert len(after.entries) == shred_seq

    # A's events: every protected field erased, everything else intact.
    for seq, posted in zip(a_seqs, a_events, strict=True):
        stored, revealed = after.at(seq)
        assert revealed == erased(posted), seq
        assert stored["patient"]["ref"] == ref and stored["patient"]["key"] == old_key
    # B's events: exactly as posted.
    assert [after.at(s)[1] for s in b_seqs] == b_events

    # A's data key is gone from the database; B's is there.
    assert ref not in after.key_rows
    assert after.ref[B] in after.key_rows

    # The ledger says so, naming A by blind index only.
    entry = after.entries[shred_seq - 1]
    assert entry["seq"] == shred_seq
    assert entry["event"]["action"] == SHREDDED
    assert entry["event"]["patient"] == {"ref": ref}
    assert entry["event"]["source"] == {"system": "phi-ledger shred", "site": "ticket PRIV-42"}
    line = after.lines[shred_seq - 1].decode()
    for phi in (A, A.removeprefix("MRN-"), "Abigail", "Quist"):
        assert phi not in line

    # The chain verifies, and every entry but the shredding one is byte-for-byte unchanged.
    verify = run_cli(settings, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"{LEDGER}: intact through seq {shred_seq} " in verify.stdout
    assert after.lines[: shred_seq - 1] == before.lines

    # A comes back: a new event gets a new data key and reads fine; the old ones stay erased.
    again = make_event(action="create", patient={"id": A},
                       resource={"type": "patient", "phi": ["name"]},
                       data={"name": "Abigail Quist", "phone": "(617) 555-0777"})
    (new_seq,) = post(settings, [again])
    assert new_seq == shred_seq + 1
    later = Reader(settings)
    new_stored, new_revealed = later.at(new_seq)
    assert new_revealed == again
    assert new_stored["patient"]["ref"] == ref
    assert new_stored["patient"]["key"] != old_key
    assert later.key_rows[ref] == new_stored["patient"]["key"]
    for seq, posted in zip(a_seqs, a_events, strict=True):
        assert later.at(seq)[1] == erased(posted), seq
    assert [later.at(s)[1] for s in b_seqs] == b_events

    # Export still writes every entry, exactly as stored, and the chain still verifies.
    export = run_cli(settings, "export")
    assert export.returncode == 0, export.stderr
    assert export.stdout.encode().splitlines() == later.lines
    assert run_cli(settings, "verify").returncode == 0


def test_shredding_an_unknown_patient_is_recorded_and_says_no_key_was_held(
    settings: Settings,
) -> None:
    seqs = post(settings, patient_events(B, "Bartholomew Yarrow"))
    before = Reader(settings)
    unknown = "MRN-0079999"

    ref, what, seq = shred(settings, unknown)
    assert what == "no data key held (nothing to open)"
    assert seq == seqs[-1] + 1

    after = Reader(settings)
    entry = after.entries[-1]
    assert entry["seq"] == seq
    assert entry["event"]["action"] == SHREDDED
    assert entry["event"]["patient"] == {"ref": ref}
    assert unknown not in after.lines[-1].decode()
    assert after.key_rows == before.key_rows  # B's key untouched
    assert after.revealed[: len(seqs)] == before.revealed

    # Shredding the same patient twice: the second finds nothing left to destroy.
    ref_b, first, _ = shred(settings, B)
    ref_b2, second, last = shred(settings, B)
    assert ref_b == ref_b2 == after.ref[B]
    assert (first, second) == ("data key destroyed", "no data key held (nothing to open)")
    assert run_cli(settings, "verify").returncode == 0
    assert len(Reader(settings).entries) == last


def test_an_event_posted_to_a_running_service_right_after_a_shred_stays_readable(
    settings: Settings,
) -> None:
    """Shredding from the CLI while the service runs (the normal case): an event the
    service accepts after the shred must be sealed under a new key, not the destroyed one."""
    with TestClient(create_app(settings, configure_logs=False),
                    headers=key_headers(settings.database_url)) as client:
        r = client.post("/v1/events", json=make_event(patient={"id": A}))
        assert r.status_code == 201, r.text
        _, what, shred_seq = shred(settings, A)
        assert what == "data key destroyed"
        late = make_event(action="update", patient={"id": A},
                          resource={"type": "patient", "phi": ["phone"]},
                          data={"phone": "(617) 555-0123"})
        r = client.post("/v1/events", json=late)
        assert r.status_code == 201, r.text
        assert r.json()["seq"] == shred_seq + 1
    reader = Reader(settings)
    assert reader.at(shred_seq + 1)[1] == late
