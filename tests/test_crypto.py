"""Envelope encryption, blind indexes and the key ring (ledger.crypto)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pickle
import re
import stat
import struct
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.crypto import (
    DataKey,
    EnvelopeError,
    EnvKeyProvider,
    FileKeyProvider,
    KeyProvider,
    KeyRing,
    KeyRingError,
    blind_index,
    dek_aad,
    field_aad,
    is_token,
    open_token,
    seal,
    unwrap_key,
    wrap_key,
)
from ledger.crypto.envelope import field_aad_prefix, field_aad_suffix
from ledger.crypto.keyring import encode_ring

KEY = bytes(range(32))
AAD = field_aad("default", "ref-1", "patient.id")
URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def spellings(key: bytes) -> list[str]:
    """Every way key bytes could leak into text."""
    return [
        key.hex(),
        key.hex().upper(),
        base64.b64encode(key).decode(),
        base64.urlsafe_b64encode(key).decode().rstrip("="),
        repr(key),
    ]


def assert_no_key_material(text: str, *keys: bytes) -> None:
    for key in keys:
        for spelling in spellings(key):
            assert spelling not in text
        # A partial leak is a leak too: no 12-character window of the base64 either.
        b64 = base64.b64encode(key).decode()
        assert b64[:12] not in text and b64[-14:-2] not in text


def assert_no_chained_error(error: BaseException) -> None:
    # A chained low-level error could carry bytes into a logged traceback.
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def body(token: str) -> bytes:
    text = token.removeprefix("enc:v1:")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_of(raw: bytes) -> str:
    return "enc:v1:" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --- DataKey -------------------------------------------------------------------------


def test_generated_keys_are_random_and_distinct() -> None:
    a, b = DataKey.generate(), DataKey.generate()
    assert a != b
    assert a == DataKey.from_bytes(a._material)
    assert len(a._material) == 32


@pytest.mark.parametrize("material", [b"", b"\x00" * 16, b"\x00" * 31, b"\x00" * 33, "x" * 32])
def test_data_key_refuses_wrong_lengths(material: bytes) -> None:
    with pytest.raises(EnvelopeError, match="32 bytes"):
        DataKey.from_bytes(material)


def test_data_key_repr_and_str_show_no_key_bytes() -> None:
    key = DataKey.from_bytes(KEY)
    for text in (repr(key), str(key), f"{key}", repr([key]), repr({"k": key})):
        assert "redacted" in text
        assert_no_key_material(text, KEY)


def test_data_key_cannot_be_pickled_and_copies_are_itself() -> None:
    import copy

    key = DataKey.generate()
    with pytest.raises(TypeError, match="wrap_key"):
        pickle.dumps(key)
    assert copy.deepcopy({"k": key})["k"] is key


# --- seal / open ---------------------------------------------------------------------


@given(st.binary(max_size=2048), st.binary(max_size=256))
def test_seal_open_round_trip(plaintext: bytes, aad: bytes) -> None:
    key = DataKey.generate()
    token = seal(key, plaintext, aad)
    assert open_token(key, token, aad) == plaintext


def test_one_key_is_safe_to_share_between_threads() -> None:
    # DataKey caches one AES-GCM context per key; the writer seals from many threads.
    key = DataKey.generate()
    failures: list[int] = []

    def work(n: int) -> None:
        for i in range(300):
            plaintext = f"{n}-{i}".encode() * 7
            aad = field_aad("default", str(n), str(i))
            if open_token(key, seal(key, plaintext, aad), aad) != plaintext:
                failures.append(n)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_token_format() -> None:
    key = DataKey.generate()
    token = seal(key, b"x" * 100, AAD)
    assert token.startswith("enc:v1:")
    text = token.removeprefix("enc:v1:")
    assert set(text) <= set(URLSAFE)  # url-safe and unpadded
    assert len(body(token)) == 12 + 100 + 16  # nonce || ciphertext || tag
    assert is_token(token)


def test_two_seals_of_the_same_plaintext_use_different_nonces() -> None:
    key = DataKey.generate()
    tokens = [seal(key, b"same", AAD) for _ in range(50)]
    nonces = {body(t)[:12] for t in tokens}
    assert len(nonces) == 50
    assert len(set(tokens)) == 50


def test_flipping_any_bit_of_a_token_fails() -> None:
    key = DataKey.generate()
    raw = body(seal(key, b"MRN-0012345", AAD))
    for i in range(len(raw)):
        for bit in range(8):
            tampered = bytearray(raw)
            tampered[i] ^= 1 << bit
            with pytest.raises(EnvelopeError):
                open_token(key, token_of(bytes(tampered)), AAD)


# Sealed once: a fresh nonce per example would change which replacements the strategy
# filters out, and hypothesis rejects data generation that depends on outside state.
_TOKEN = seal(DataKey.from_bytes(KEY), b"MRN-0012345", AAD)


@given(st.data())
def test_changing_any_character_of_a_token_fails(data: st.DataObject) -> None:
    key = DataKey.from_bytes(KEY)
    token = _TOKEN
    i = data.draw(st.integers(0, len(token) - 1))
    alphabet = st.sampled_from(URLSAFE + "+/=.: \u00e9")
    replacement = data.draw(alphabet.filter(lambda c: c != token[i]))
    with pytest.raises(EnvelopeError):
        open_token(key, token[:i] + replacement + token[i + 1 :], AAD)


def test_non_canonical_base64_spelling_fails() -> None:
    # 12 bytes of plaintext make a 40-byte body: 54 characters, the last of which carries
    # 4 unused bits. Setting one decodes to the same bytes, yet must not open.
    key = DataKey.generate()
    token = seal(key, b"MRN-00123456", AAD)
    text = token.removeprefix("enc:v1:")
    last = URLSAFE.index(text[-1])
    assert len(text) == 54 and last & 0b1111 == 0
    variant = "enc:v1:" + text[:-1] + URLSAFE[last | 0b0001]
    assert body(variant) == body(token)
    with pytest.raises(EnvelopeError, match="canonical"):
        open_token(key, variant, AAD)


def test_standard_base64_alphabet_fails() -> None:
    # '+' and '/' spell the same bytes as '-' and '_'; only the url-safe spelling opens.
    key = DataKey.generate()
    tokens = (seal(key, b"x" * 30, AAD) for _ in range(1000))
    token = next(t for t in tokens if "-" in t or "_" in t)
    standard = "enc:v1:" + base64.b64encode(body(token)).decode().rstrip("=")
    assert standard != token and body(standard) == body(token)
    with pytest.raises(EnvelopeError):
        open_token(key, standard, AAD)


def test_truncated_or_extended_tokens_fail() -> None:
    key = DataKey.generate()
    token = seal(key, b"hello", AAD)
    for bad in (token[:-1], token[:-4], token + "A", token + "AAAA", token + "=="):
        with pytest.raises(EnvelopeError):
            open_token(key, bad, AAD)


@pytest.mark.parametrize(
    "value",
    ["", "enc:v1:", "enc:v1:AAAA", "enc:v2:" + "A" * 40, "plain text", "ENC:V1:" + "A" * 40,
     "enc:v1:" + "é" * 40, b"enc:v1:AAAA", None, 42],
)
def test_malformed_tokens_fail(value: object) -> None:
    with pytest.raises(EnvelopeError):
        # The ignore: values of every type, as a caller that skipped validation would pass.
        open_token(DataKey.generate(), value, AAD)  # type: ignore[arg-type]


def test_wrong_key_fails() -> None:
    token = seal(DataKey.generate(), b"secret", AAD)
    with pytest.raises(EnvelopeError, match="failed authentication"):
        open_token(DataKey.generate(), token, AAD)


@pytest.mark.parametrize(
    "other",
    [
        field_aad("other", "ref-1", "patient.id"),  # another ledger
        field_aad("default", "ref-2", "patient.id"),  # another patient
        field_aad("default", "ref-1", "disclosure.description"),  # another field
        dek_aad("default", "ref-1"),  # another purpose
        b"",
    ],
)
def test_wrong_aad_fails(other: bytes) -> None:
    key = DataKey.generate()
    token = seal(key, b"secret", AAD)
    with pytest.raises(EnvelopeError):
        open_token(key, token, other)


def test_errors_hold_no_plaintext_or_key() -> None:
    key = DataKey.from_bytes(KEY)
    token = seal(key, b"MRN-0012345", AAD)
    with pytest.raises(EnvelopeError) as caught:
        open_token(DataKey.generate(), token, AAD)
    message = str(caught.value)
    assert "MRN-0012345" not in message and token[7:20] not in message
    assert_no_key_material(message, KEY)
    assert_no_chained_error(caught.value)


def test_is_token() -> None:
    assert is_token(seal(DataKey.generate(), b"", b""))
    assert not is_token("MRN-0012345")
    assert not is_token(None)
    assert not is_token(b"enc:v1:AAAA")


# --- AAD builders --------------------------------------------------------------------


def test_field_aad_is_unambiguous() -> None:
    assert field_aad("ab", "c", "d") != field_aad("a", "bc", "d")
    assert field_aad("a", "b\x00c", "d") != field_aad("a\x00b", "c", "d")
    assert field_aad("l", "p", "") != dek_aad("l", "p")


@given(st.tuples(st.text(), st.text(), st.text()), st.tuples(st.text(), st.text(), st.text()))
def test_field_aad_is_injective(a: tuple[str, str, str], b: tuple[str, str, str]) -> None:
    assert (field_aad(*a) == field_aad(*b)) == (a == b)


@given(st.text(), st.text(), st.text())
def test_field_aad_prefix_and_suffix_compose(ledger: str, ref: str, field: str) -> None:
    assert field_aad_prefix(ledger, ref) + field_aad_suffix(field) == field_aad(ledger, ref, field)
    assert field_aad(ledger, ref, field) != dek_aad(ledger, ref)


def test_field_aad_encoding_is_stable() -> None:
    # Stored tokens depend on these exact bytes; changing them strands every token.
    def lp(s: str) -> bytes:
        return struct.pack(">I", len(s.encode())) + s.encode()

    assert field_aad("default", "r", "patient.id") == (
        b"phi-ledger/field/v1\x00" + lp("default") + lp("r") + lp("patient.id")
    )
    assert dek_aad("default", "r") == b"phi-ledger/dek/v1\x00" + lp("default") + lp("r")


# --- wrap / unwrap -------------------------------------------------------------------


def test_wrap_unwrap_round_trip() -> None:
    kek, dek = os.urandom(32), DataKey.generate()
    aad = dek_aad("default", "ref-1")
    wrapped = wrap_key(kek, dek, aad)
    assert len(wrapped) == 1 + 12 + 32 + 16
    assert dek._material not in wrapped
    assert unwrap_key(kek, wrapped, aad) == dek
    assert unwrap_key(kek, bytearray(wrapped), aad) == dek
    assert unwrap_key(kek, memoryview(wrapped), aad) == dek
    assert wrap_key(kek, dek, aad) != wrapped  # fresh nonce each time


def test_unwrap_with_wrong_kek_or_aad_fails() -> None:
    kek, dek = os.urandom(32), DataKey.generate()
    wrapped = wrap_key(kek, dek, dek_aad("default", "ref-1"))
    with pytest.raises(EnvelopeError):
        unwrap_key(os.urandom(32), wrapped, dek_aad("default", "ref-1"))
    with pytest.raises(EnvelopeError):
        unwrap_key(kek, wrapped, dek_aad("default", "ref-2"))
    with pytest.raises(EnvelopeError):
        unwrap_key(kek, wrapped, dek_aad("other", "ref-1"))
    with pytest.raises(EnvelopeError):
        unwrap_key(kek, wrapped, field_aad("default", "ref-1", ""))


def test_tampered_wrapped_key_fails() -> None:
    kek, dek = os.urandom(32), DataKey.generate()
    aad = dek_aad("default", "ref-1")
    wrapped = wrap_key(kek, dek, aad)
    for i in range(len(wrapped)):
        tampered = bytearray(wrapped)
        tampered[i] ^= 0x80
        with pytest.raises(EnvelopeError):
            unwrap_key(kek, bytes(tampered), aad)
    for bad in (wrapped[:-1], wrapped + b"\x00", b"", "text"):
        with pytest.raises(EnvelopeError):
            unwrap_key(kek, bad, aad)  # type: ignore[arg-type]  # text too: refused as well


@pytest.mark.parametrize("kek", [b"", b"\x00" * 16, b"\x00" * 31, "k" * 32])
def test_wrap_refuses_keks_of_the_wrong_length(kek: bytes) -> None:
    with pytest.raises(EnvelopeError, match="32 bytes"):
        wrap_key(kek, DataKey.generate(), b"")
    with pytest.raises(EnvelopeError, match="32 bytes"):
        unwrap_key(kek, b"\x01" + b"\x00" * 60, b"")


# --- blind index ---------------------------------------------------------------------


def test_blind_index_is_deterministic_hex() -> None:
    a = blind_index(KEY, "default", "patient", "MRN-0012345")
    assert a == blind_index(KEY, "default", "patient", "MRN-0012345")
    assert len(a) == 64 and int(a, 16) >= 0 and a == a.lower()
    assert "MRN-0012345" not in a


def test_blind_index_separates_ledgers_kinds_values_and_keys() -> None:
    base = blind_index(KEY, "default", "patient", "MRN-1")
    others = {
        blind_index(KEY, "tenant-b", "patient", "MRN-1"),
        blind_index(KEY, "default", "actor", "MRN-1"),
        blind_index(KEY, "default", "patient", "MRN-2"),
        blind_index(bytes(32), "default", "patient", "MRN-1"),
        # Shifting characters between parts must not collide (length prefixes).
        blind_index(KEY, "defaul", "tpatient", "MRN-1"),
        blind_index(KEY, "default", "patien", "tMRN-1"),
    }
    assert base not in others and len(others) == 6


def test_blind_index_known_answer() -> None:
    # Pins the documented construction: refs are stored, so it may never drift.
    def lp(s: str) -> bytes:
        return struct.pack(">I", len(s.encode())) + s.encode()

    message = b"phi-ledger/blind-index/v1\x00" + lp("patient") + lp("default") + lp("MRN-é")
    expected = hmac.new(KEY, message, hashlib.sha256).hexdigest()
    assert blind_index(KEY, "default", "patient", "MRN-é") == expected


@pytest.mark.parametrize("key", [b"", b"\x00" * 31, b"\x00" * 33, "k" * 32])
def test_blind_index_refuses_bad_keys(key: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        blind_index(key, "default", "patient", "x")


# --- KeyRing -------------------------------------------------------------------------


def test_generated_ring_is_valid() -> None:
    ring = KeyRing.generate()
    kek_id, kek = ring.active_kek()
    assert kek_id.startswith("kek-") and len(kek) == 32
    assert ring.kek(kek_id) == kek
    assert len(ring.index_key) == 32 and ring.index_key != kek


def test_ring_repr_shows_ids_only() -> None:
    ring = KeyRing.generate().with_new_kek()
    text = repr(ring) + str(ring) + repr([ring])
    for kek_id in ring.keks:
        assert kek_id in text
    assert_no_key_material(text, ring.index_key, *ring.keks.values())


def test_missing_kek_names_the_id() -> None:
    ring = KeyRing.generate()
    with pytest.raises(KeyRingError, match="kek-missing") as caught:
        ring.kek("kek-missing")
    assert_no_key_material(str(caught.value), *ring.keks.values())


def test_with_new_kek_keeps_old_keks_and_changes_active() -> None:
    ring = KeyRing.generate()
    old_id, old_kek = ring.active_kek()
    rotated = ring.with_new_kek()
    new_id, new_kek = rotated.active_kek()
    assert new_id != old_id and new_kek != old_kek
    assert rotated.kek(old_id) == old_kek
    assert set(rotated.keks) == {old_id, new_id}
    assert rotated.index_key == ring.index_key
    assert ring.active_kek() == (old_id, old_kek) and set(ring.keks) == {old_id}


def test_wrapped_keys_survive_rotation() -> None:
    ring = KeyRing.generate()
    old_id, old_kek = ring.active_kek()
    dek_old, dek_new = DataKey.generate(), DataKey.generate()
    aad = dek_aad("default", "ref-1")
    wrapped_old = wrap_key(old_kek, dek_old, aad)
    ring = ring.with_new_kek()
    new_id, new_kek = ring.active_kek()
    wrapped_new = wrap_key(new_kek, dek_new, aad)
    assert unwrap_key(ring.kek(old_id), wrapped_old, aad) == dek_old
    assert unwrap_key(ring.kek(new_id), wrapped_new, aad) == dek_new
    with pytest.raises(EnvelopeError):
        unwrap_key(ring.kek(old_id), wrapped_new, aad)
    # Rewrap under the active KEK, then the old one can be retired.
    rewrapped = wrap_key(new_kek, unwrap_key(ring.kek(old_id), wrapped_old, aad), aad)
    ring = ring.without_kek(old_id)
    assert unwrap_key(ring.kek(new_id), rewrapped, aad) == dek_old
    with pytest.raises(KeyRingError, match=old_id):
        ring.kek(old_id)


def test_without_kek_refuses_the_active_and_unknown_ids() -> None:
    ring = KeyRing.generate().with_new_kek()
    with pytest.raises(KeyRingError, match="active"):
        ring.without_kek(ring.active_kek_id)
    with pytest.raises(KeyRingError, match="kek-nope"):
        ring.without_kek("kek-nope")


def test_ring_validates_and_owns_its_keks() -> None:
    keks = {"kek-a": bytes(32)}
    ring = KeyRing(keks, "kek-a", bytes(32))
    keks["kek-b"] = bytes(32)
    assert set(ring.keks) == {"kek-a"}
    with pytest.raises(KeyRingError, match="kek-a"):
        KeyRing({"kek-a": bytes(31)}, "kek-a", bytes(32))
    with pytest.raises(KeyRingError, match="not in the ring"):
        KeyRing({"kek-a": bytes(32)}, "kek-b", bytes(32))
    with pytest.raises(KeyRingError, match="index key"):
        KeyRing({"kek-a": bytes(32)}, "kek-a", bytes(16))
    with pytest.raises(KeyRingError, match="at least one"):
        KeyRing({}, "kek-a", bytes(32))


# --- FileKeyProvider -----------------------------------------------------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_file_provider_creates_0600_and_reloads_the_same_keys(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "keys.json"
    provider = FileKeyProvider(path)
    ring = provider.load_or_create()
    assert mode_of(path) == 0o600
    assert FileKeyProvider(path).load() == ring
    assert FileKeyProvider(path).load_or_create() == ring  # never overwritten
    document = json.loads(path.read_text())
    assert document["version"] == 1 and document["active_kek"] == ring.active_kek_id
    assert base64.b64decode(document["index_key"]) == ring.index_key
    assert {k: base64.b64decode(v) for k, v in document["keks"].items()} == ring.keks
    assert [p.name for p in path.parent.iterdir()] == ["keys.json"]  # no temp files left


def test_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        FileKeyProvider(tmp_path / "keys.json").load_or_create()
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "keys.json") == 0o600


def test_concurrent_creation_yields_one_ring(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    barrier = threading.Barrier(8)
    rings: list[KeyRing] = []

    def start() -> None:
        barrier.wait()
        rings.append(FileKeyProvider(path).load_or_create())

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(rings) == 8
    assert all(r == rings[0] for r in rings)
    assert FileKeyProvider(path).load() == rings[0]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601])
def test_file_provider_refuses_exposed_files(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "keys.json"
    ring = FileKeyProvider(path).load_or_create()
    path.chmod(mode)
    with pytest.raises(KeyRingError) as caught:
        FileKeyProvider(path).load_or_create()
    message = str(caught.value)
    assert str(path) in message and "chmod 600" in message and f"{mode:04o}" in message
    assert_no_key_material(message, ring.index_key, *ring.keks.values())
    path.chmod(0o400)
    assert FileKeyProvider(path).load() == ring


def write_private(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


def valid_document(ring: KeyRing) -> dict[str, object]:
    return json.loads(encode_ring(ring))


def corruptions(ring: KeyRing) -> list[tuple[str, str]]:
    kek_id = ring.active_kek_id
    b64 = base64.b64encode
    doc = valid_document

    def changed(**fields: object) -> str:
        d = doc(ring)
        d.update(fields)
        return json.dumps(d)

    def without(field: str) -> str:
        d = doc(ring)
        del d[field]
        return json.dumps(d)

    full = encode_ring(ring).decode()
    return [
        (full[: len(full) // 2], "not valid JSON"),
        ("", "not valid JSON"),
        ("[]", "must be a JSON object"),
        (changed(index_key=b64(ring.index_key[:31]).decode()), "index_key must decode to 32"),
        (changed(keks={kek_id: b64(ring.keks[kek_id] + b"\x00").decode()}), "must decode to 32"),
        (changed(keks={kek_id: "not base64!"}), "not valid base64"),
        (changed(keks={kek_id: 12}), "must be a base64 string"),
        (changed(keks={}), "non-empty"),
        (changed(active_kek="kek-other"), "active_kek"),
        (changed(version=2), "version must be 1"),
        (changed(extra=1), "unexpected field"),
        (without("index_key"), "missing field(s) index_key"),
        (without("keks"), "missing field(s) keks"),
        (without("active_kek"), "missing field(s) active_kek"),
    ]


def test_file_provider_refuses_invalid_files_naming_the_path(tmp_path: Path) -> None:
    ring = KeyRing.generate()
    path = tmp_path / "keys.json"
    for text, expected in corruptions(ring):
        write_private(path, text)
        with pytest.raises(KeyRingError) as caught:
            FileKeyProvider(path).load_or_create()
        message = str(caught.value)
        assert str(path) in message, text
        assert expected in message, (expected, message)
        assert_no_key_material(message, ring.index_key, *ring.keks.values())
        assert_no_chained_error(caught.value)


def test_file_provider_refuses_non_utf8_and_non_regular_files(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_bytes(b"\xff\xfe{")
    path.chmod(0o600)
    with pytest.raises(KeyRingError, match="is not UTF-8 text"):
        FileKeyProvider(path).load()
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(KeyRingError, match=re.escape(f"{directory}: is not a regular file")):
        FileKeyProvider(directory).load_or_create()


def test_load_of_a_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(KeyRingError, match=re.escape(f"{path}: does not exist")):
        FileKeyProvider(path).load()
    assert not path.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    FileKeyProvider(path).load_or_create()
    path.chmod(0o000)
    with pytest.raises(KeyRingError, match=re.escape(f"{path}: cannot be read")):
        FileKeyProvider(path).load()


def test_save_replaces_atomically_with_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    provider = FileKeyProvider(path)
    ring = provider.load_or_create()
    rotated = ring.with_new_kek()
    provider.save(rotated)
    assert mode_of(path) == 0o600
    assert provider.load() == rotated != ring
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]


def test_providers_satisfy_the_protocol_and_hide_keys(tmp_path: Path) -> None:
    ring = KeyRing.generate()
    value = encode_ring(ring).decode()
    env = EnvKeyProvider(value)
    assert isinstance(env, KeyProvider)
    assert isinstance(FileKeyProvider(tmp_path / "k.json"), KeyProvider)
    assert_no_key_material(repr(env), ring.index_key, *ring.keks.values())
    assert value not in repr(env)


# --- EnvKeyProvider ------------------------------------------------------------------


def test_env_provider_loads_the_file_format() -> None:
    ring = KeyRing.generate().with_new_kek()
    assert EnvKeyProvider(encode_ring(ring).decode()).load() == ring


def test_env_provider_refuses_bad_values_naming_the_variable() -> None:
    ring = KeyRing.generate()
    for text, expected in corruptions(ring):
        with pytest.raises(KeyRingError) as caught:
            EnvKeyProvider(text).load()
        message = str(caught.value)
        assert "LEDGER_KEYS" in message and expected in message
        assert_no_key_material(message, ring.index_key, *ring.keks.values())


def test_env_provider_cannot_save() -> None:
    ring = KeyRing.generate()
    with pytest.raises(KeyRingError, match="cannot be rotated in place"):
        EnvKeyProvider(encode_ring(ring).decode()).save(ring.with_new_kek())


def test_a_forked_child_never_replays_its_parents_nonces() -> None:
    # Nonces are drawn a few hundred at a time; a child forked with part of the pool
    # left must draw its own rather than take the slices its parent will take next.
    key = DataKey.generate()
    seal(key, b"fill the pool", AAD)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        os.write(write_end, body(seal(key, b"child", AAD))[:12])
        os._exit(0)
    os.close(write_end)
    parent_nonce = body(seal(key, b"parent", AAD))[:12]
    with os.fdopen(read_end, "rb") as pipe:
        child_nonce = pipe.read()
    os.waitpid(child, 0)
    assert len(child_nonce) == 12
    assert child_nonce != parent_nonce


def test_nonces_stay_unique_across_pool_refills_and_threads() -> None:
    key = DataKey.generate()
    nonces: list[bytes] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [body(seal(key, b"x", AAD))[:12] for _ in range(1500)]
        with lock:
            nonces.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(nonces) == 6000 and len(set(nonces)) == 6000
