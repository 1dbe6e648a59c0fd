"""benchmarks.sealing: its third way really stores an encrypted run's rows, unsealed."""

from __future__ import annotations

from pathlib import Path

from benchmarks.ingest import workload
from benchmarks.sealing import MODES, ingest, sealed_beforehand
from ledger.canonical import canonical
from ledger.writer import nothing_to_settle
from tests.support import require_postgres


def test_sealed_beforehand_hands_back_ciphertext_made_earlier(tmp_path: Path) -> None:
    events = workload(60, seed=3)
    beforehand = sealed_beforehand(events, tmp_path)
    stored = beforehand.protect_many("default", events)
    assert stored == beforehand.protect_many("default", events)  # looked up, not sealed again
    with_patient = [(e, s) for e, s in zip(events, stored, strict=True) if e.get("patient")]
    assert with_patient
    for event, sealed in with_patient:
        assert sealed["patient"]["id"].startswith("enc:v1:")
        assert event["patient"]["id"].encode() not in canonical(sealed)
    assert beforehand.settler("default", events, stored) is nothing_to_settle
    # The fingerprints are the encrypted service's (keyed), not the plaintext mode's.
    assert beforehand.fingerprint("default", events[0]) == beforehand.sealer.fingerprint(
        "default", events[0])


def test_each_way_ingests_the_whole_workload(tmp_path: Path) -> None:
    require_postgres()
    events = workload(300, seed=5)
    beforehand = sealed_beforehand(events, tmp_path)
    runs = [ingest(mode, events, tmp_path, beforehand) for mode in MODES]
    assert [run.mode for run in runs] == list(MODES)
    for run in runs:
        assert run.rate > 0 and run.process_us > 0
