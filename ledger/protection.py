"""Choosing how events are protected at rest, from the settings."""

from __future__ import annotations

from ledger.ingest import Plaintext, Protection
from ledger.settings import Settings
from ledger.store import LedgerStore


def protection_from_settings(settings: Settings, store: LedgerStore) -> Protection:
    # Envelope encryption arrives with the PHI-at-rest work; until then, plaintext.
    return Plaintext()
