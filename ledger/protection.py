"""How events are protected at rest: envelope encryption with per-patient data keys.

:class:`EnvelopeProtection` is the shell around the pure recipe in :mod:`ledger.protect`:
it blind-indexes the patient identifier with the ring's index key, finds (or creates)
the patient's data key, and seals the PHI fields. Fingerprints for idempotency are HMACs
under the index key, so the ``ledger_event_ids`` table holds no unkeyed digest of PHI.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import structlog

from ledger.canonical import canonical
from ledger.crypto.blind_index import blind_index
from ledger.crypto.keyring import (
    FileKeyProvider,
    KeyRing,
    KeyRingError,
    encode_ring,
)
from ledger.data_keys import DataKeys, DataKeyUnusable
from ledger.ingest import Plaintext, Protection
from ledger.keystores import key_provider
from ledger.protect import (
    protect,
    protect_subject,
    reveal,
    seal_patient_id,
    sealed_under,
    subject_of,
)
from ledger.settings import Settings
from ledger.store import LedgerStore
from ledger.writer import Settlement, nothing_to_settle

log = structlog.get_logger(__name__)

PATIENT_KIND = "patient"
SUBJECT_KIND = "subject"  # the person a workforce or partner event is about
ID_TOKENS = 100_000  # patient-id tokens kept for reuse
PATIENT_REFS = 100_000  # blind indexes kept
_FINGERPRINT_TAG = b"phi-ledger/fp/v1"  # BLAKE2b personalisation: at most 16 bytes


class EnvelopeProtection:
    """PHI sealed under per-patient data keys; patient ids replaced by blind indexes.

    The stored ``patient`` object is ``{"ref": <blind index>, "key": <key_id>, "id":
    <token>}``: ``ref`` lets views find a patient without decrypting, ``key`` names the
    data key that opens the tokens (gone after a shred). A workforce or partner event's
    personal data is sealed the same way under its subject's key (``subject: {"ref",
    "key"}``, :func:`ledger.protect.protect_subject`)."""

    def __init__(self, ring: KeyRing, keys: DataKeys) -> None:
        self.ring = ring
        self.keys = keys
        # The same patients recur all day: an HMAC saved per event. A plain dict, read
        # inline by protect_many: lru_cache's wrapper cost a fifth of a microsecond per
        # event more, on the hottest path there is. (Dict reads and writes are atomic, so
        # the sealer and request threads can share it.)
        self._refs: dict[tuple[str, str], str] = {}
        self._fingerprint_state = hashlib.blake2b(
            key=ring.index_key, person=_FINGERPRINT_TAG, digest_size=32)
        # (ledger, ref, key_id) -> the patient id's token; only the sealer thread uses it.
        self._id_tokens: dict[tuple[str, str, str], str] = {}
        self._subject_refs: dict[tuple[str, str], str] = {}

    def patient_ref(self, ledger: str, patient_id: str) -> str:
        return self._blind(self._refs, ledger, PATIENT_KIND, patient_id)

    def subject_ref(self, ledger: str, subject_id: str) -> str:
        return self._blind(self._subject_refs, ledger, SUBJECT_KIND, subject_id)

    def _blind(self, cache: dict[tuple[str, str], str], ledger: str, kind: str,
               value: str) -> str:
        ref = cache.get((ledger, value))
        if ref is None:
            if len(cache) >= PATIENT_REFS:
                cache.clear()
            ref = cache[(ledger, value)] = blind_index(self.ring.index_key, ledger, kind, value)
        return ref

    def fingerprint(self, ledger: str, event: dict[str, Any], encoded: bytes | None = None) -> str:
        # Keyed BLAKE2b is a PRF like HMAC-SHA256, in one pass: half the cost per event.
        digest = self._fingerprint_state.copy()  # the keyed state, set up once
        digest.update(encoded or canonical(event))
        return digest.hexdigest()

    def protect_many(self, ledger: str, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        known, patient_ref = self._refs.get, self.patient_ref
        refs = [
            (known((ledger, pid := e["patient"]["id"])) or patient_ref(ledger, pid))
            if e.get("patient") else None
            for e in events
        ]
        subjects = {i: self.subject_ref(ledger, who) for i, e in enumerate(events)
                    if refs[i] is None and (who := subject_of(e)) is not None}
        keys = self.keys.current(
            ledger, [r for r in refs if r is not None] + list(subjects.values()))
        stored = []
        tokens = self._id_tokens
        for i, (event, ref) in enumerate(zip(events, refs, strict=True)):
            if ref is None:
                subject = subjects.get(i)
                if subject is None:
                    stored.append(event)
                else:
                    key = keys[subject]
                    stored.append(protect_subject(event, ledger, subject, key.key, key.key_id))
                continue
            key = keys[ref]
            # The same patient recurs all day: its id is sealed once per data key.
            token = tokens.get((ledger, ref, key.key_id))
            if token is None:
                if len(tokens) >= ID_TOKENS:
                    tokens.clear()
                token = tokens[(ledger, ref, key.key_id)] = seal_patient_id(
                    event["patient"]["id"], ledger, ref, key.key)
            stored.append(protect(event, ledger, ref, key.key, key.key_id, token))
        return stored

    def settler(
        self, ledger: str, posted: Sequence[dict[str, Any]], stored: Sequence[dict[str, Any]]
    ) -> Settlement:
        """The check of the keys ``stored`` was sealed with, gathered before the write
        lock is taken (every other writer waits while it is held) and made under it:
        the stored forms that must change (by index) because their patient's key is not
        the one they were sealed with -- another process made the patient's first key
        at the same moment, or the patient was shredded since. Those events are sealed
        again, there."""
        used = {
            sealing[0]: sealing[1]
            for e in stored
            if (sealing := sealed_under(e)) is not None and sealing[1] is not None
        }
        if not used:
            return nothing_to_settle
        read_at = self.keys.read_at(ledger, used)

        def settle(tx: Any) -> dict[int, dict[str, Any]]:
            fixes = self.keys.settle(tx, ledger, used, read_at)
            if not fixes:
                return {}
            changed = {}
            for i, (event, sealed) in enumerate(zip(posted, stored, strict=True)):
                ref = (sealed_under(sealed) or ("", None))[0]
                key = fixes.get(ref) if ref else None
                if key is None:
                    continue
                changed[i] = (protect(event, ledger, ref, key.key, key.key_id)
                              if sealed.get("patient") else
                              protect_subject(event, ledger, ref, key.key, key.key_id))
            return changed

        return settle

    def reveal_many(
        self, ledger: str, stored: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Stored events back as posted; a shredded patient's PHI reads as erased."""
        sealings = [sealed_under(s) for s in stored]
        keys = self.keys.lookup(ledger, [s[0] for s in sealings if s is not None])
        out = []
        for event, sealing in zip(stored, sealings, strict=True):
            if sealing is None:
                out.append(event)
                continue
            # A key with another id is a newer key (the patient was shredded since): the
            # event's own key is gone, so its PHI reads as erased.
            ref, key_id = sealing
            key = keys.get(ref)
            current = key is not None and key.key_id == key_id
            out.append(reveal(event, ledger, key.key if current and key else None))
        return out


def load_key_ring(settings: Settings, store: LedgerStore) -> KeyRing:
    """The PHI key ring from LEDGER_KEYS or LEDGER_KEY_FILE, checked against the database.

    Creates the key file (0600) on first start, but never beside a database that already
    holds data keys: those were wrapped under some other ring, and new keys would only
    hide that the right file is missing."""
    provider = key_provider(settings)
    if isinstance(provider, FileKeyProvider):
        if not settings.key_file.exists() and DataKeys(store, KeyRing.generate()).kek_usage():
            raise KeyRingError(
                f"{settings.key_file}: does not exist, but the database holds data keys"
                " wrapped under an existing key ring; point LEDGER_KEY_FILE at that ring"
                " (refusing to create a new one)"
            )
        ring = provider.load_or_create()
    else:
        ring = provider.load()
    source = "LEDGER_KEYS" if settings.keys_json else str(settings.key_file)
    try:
        DataKeys(store, ring).check_ring()
    except DataKeyUnusable as error:
        raise KeyRingError(f"{source}: {error}") from None
    except KeyRingError as error:
        raise KeyRingError(f"{source}: {error}") from None
    return ring


def protection_from_settings(settings: Settings, store: LedgerStore) -> Protection:
    if settings.unsafe_plaintext:
        log.warning("protection.disabled", reason="LEDGER_UNSAFE_PLAINTEXT is set")
        return Plaintext()
    ring = load_key_ring(settings, store)
    return EnvelopeProtection(ring, DataKeys(store, ring))


def child_environment(protection: object | None) -> dict[str, str]:
    """The environment a child process needs to open PHI as ``protection`` does: its
    key ring itself, not a path the child might resolve differently (settings given in
    code, a relative ``LEDGER_KEY_FILE`` and another working directory). A process's
    environment is readable by its own user only, as the key file is. The ring holds no
    log signing key: a child that only reads PHI is given nothing that could sign."""
    if isinstance(protection, EnvelopeProtection):
        return {"LEDGER_KEYS": encode_ring(protection.ring).decode()}
    if isinstance(protection, Plaintext):
        return {"LEDGER_UNSAFE_PLAINTEXT": "1"}
    return {}
