"""Envelope encryption of PHI at rest: per-patient data keys wrapped by key-encryption keys.

Two layers, in the manner of pyca/cryptography:

* The hazardous part -- AES-256-GCM with explicit nonces -- is private to this module
  (``_encrypt`` / ``_decrypt``). Nothing outside it ever chooses a nonce.
* The recipe is the public API: :func:`seal` / :func:`open_token` for field values,
  :func:`wrap_key` / :func:`unwrap_key` for data keys, and the AAD builders
  :func:`field_aad` / :func:`dek_aad`. Every call draws a fresh random 96-bit nonce, so the
  signatures have no nonce to get wrong.

Each patient has one :class:`DataKey` (DEK). Forgetting every wrapped copy of it erases
that patient's PHI from every entry at once (crypto-shredding) without touching the
hash chain, which covers only ciphertext.

Failures raise :class:`EnvelopeError`, whose messages never contain plaintext, ciphertext
or key material.
"""

from __future__ import annotations

import binascii
import functools
import hmac
import os
import struct
from collections.abc import Iterator
from threading import get_ident
from typing import Final, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
TOKEN_PREFIX: Final = "enc:v1:"

# Domain-separation tags: an AAD built for one purpose can never equal one built for another.
_FIELD_TAG: Final = b"phi-ledger/field/v1\x00"
_DEK_TAG: Final = b"phi-ledger/dek/v1\x00"
# Wrapped keys carry a format byte so a future wrapping scheme can coexist with this one.
_WRAP_V1: Final = b"\x01"
_WRAPPED_BYTES: Final = len(_WRAP_V1) + NONCE_BYTES + KEY_BYTES + TAG_BYTES

_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_U32 = struct.Struct(">I")


class EnvelopeError(Exception):
    """A token or wrapped key could not be produced or opened.

    Raised on a malformed token, a tampered token, the wrong key or the wrong AAD, which
    GCM cannot tell apart. The message never holds plaintext, ciphertext or key bytes.
    """


class DataKey:
    """A 256-bit AES-GCM data key (one per patient).

    Guarantees: the key bytes never appear in ``repr``/``str``; the AES-GCM context is
    built once per key, so sealing many fields with one key costs no key schedule each.
    Equality compares key bytes in constant time.
    """

    __slots__ = ("_aead", "_material")

    def __init__(self, material: bytes) -> None:
        if not isinstance(material, bytes) or len(material) != KEY_BYTES:
            raise EnvelopeError(f"a data key must be exactly {KEY_BYTES} bytes")
        self._material = material
        self._aead = AESGCM(material)

    @classmethod
    def generate(cls) -> DataKey:
        """A fresh key from the operating system's CSPRNG."""
        return cls(os.urandom(KEY_BYTES))

    @classmethod
    def from_bytes(cls, material: bytes) -> DataKey:
        """Adopt existing key bytes (e.g. handed back by an external KMS)."""
        return cls(material)

    def __repr__(self) -> str:
        return "DataKey(<redacted>)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DataKey):
            return NotImplemented
        return hmac.compare_digest(self._material, other._material)

    # Keys are compared, not hashed: a hash would be a cheap oracle on the key bytes.
    # The ignore: typeshed types __hash__ as a method; None is Python's way to say unhashable.
    __hash__ = None  # type: ignore[assignment]

    def __copy__(self) -> DataKey:
        return self  # immutable, so a copy may share it

    def __deepcopy__(self, memo: dict[int, object]) -> DataKey:
        return self

    def __reduce__(self) -> NoReturn:
        # Pickling would copy raw key bytes into caches, queues and logs without anyone
        # noticing; a key leaves memory only wrapped (see wrap_key).
        raise TypeError("DataKey cannot be pickled; store it wrapped with wrap_key()")


# --- hazardous layer: explicit nonces, private to this module -------------------------


def _encrypt(aead: AESGCM, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    return nonce + aead.encrypt(nonce, plaintext, aad)


_NONCE_POOL: Final = 256 * NONCE_BYTES


def _nonce_stream() -> Iterator[bytes]:
    """Random 96-bit nonces drawn from the OS a few hundred at a time.

    One ``getrandom`` call per nonce was a fifth of the cost of sealing a field. Every
    nonce is still fresh CSPRNG output, yielded once."""
    while True:
        pool = os.urandom(_NONCE_POOL)
        for start in range(0, _NONCE_POOL, NONCE_BYTES):
            yield pool[start : start + NONCE_BYTES]


# One stream per thread, so no two threads can take the same slice (a generator is never
# run by two threads at once); a thread that reuses a dead thread's ident goes on with
# its stream, which only yields slices not yet taken. Found by thread ident rather than
# through threading.local, whose attribute access was a quarter of sealing's overhead.
_nonce_streams: dict[int, Iterator[bytes]] = {}


def _new_stream() -> Iterator[bytes]:
    stream = _nonce_streams[get_ident()] = _nonce_stream()
    return stream


# A forked child would otherwise replay its parent's remaining nonces under the same keys.
os.register_at_fork(after_in_child=_nonce_streams.clear)


def _decrypt(aead: AESGCM, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise EnvelopeError("ciphertext is too short to be AES-GCM output")
    try:
        return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise EnvelopeError(
            "ciphertext failed authentication (wrong key, wrong context, or tampered)"
        ) from None


def _b64url(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode(
        "ascii"
    )


def _unb64url(text: str) -> bytes:
    try:
        padded = text.encode("ascii").translate(_FROM_URLSAFE) + b"=" * (-len(text) % 4)
        data = binascii.a2b_base64(padded, strict_mode=True)
    except (UnicodeEncodeError, binascii.Error):
        raise EnvelopeError("token body is not unpadded base64url") from None
    # The translation above also lets '+' and '/' through, and unused trailing bits would
    # let two strings decode to the same bytes. Insisting on the one canonical spelling
    # rejects both, so a stored token cannot be altered even in ways GCM would not notice.
    if _b64url(data) != text:
        raise EnvelopeError("token body is not canonical unpadded base64url")
    return data


# --- the recipe ----------------------------------------------------------------------


def _lp(part: str) -> bytes:
    raw = part.encode("utf-8")
    return _U32.pack(len(raw)) + raw


def field_aad(ledger: str, patient_ref: str, field: str) -> bytes:
    """The AAD binding a field token to its ledger, its patient and its dotted field path.

    Encoding: a domain tag, then each part length-prefixed (4-byte big-endian + UTF-8), so
    distinct triples always give distinct AADs and never collide with :func:`dek_aad`.
    """
    return _FIELD_TAG + _lp(ledger) + _lp(patient_ref) + _lp(field)


@functools.lru_cache(maxsize=65_536)
def field_aad_prefix(ledger: str, patient_ref: str) -> bytes:
    """``field_aad(ledger, patient_ref, f)`` minus the field part; for per-event reuse.
    Cached: a patient's events recur, and its prefix is needed for every one.

    ``field_aad_prefix(l, p) + field_aad_suffix(f) == field_aad(l, p, f)``.
    """
    return _FIELD_TAG + _lp(ledger) + _lp(patient_ref)


@functools.lru_cache(maxsize=4096)
def field_aad_suffix(field: str) -> bytes:
    """The field part of :func:`field_aad` (see :func:`field_aad_prefix`). Cached: the
    same few field names recur in every event."""
    return _lp(field)


def dek_aad(ledger: str, patient_ref: str) -> bytes:
    """The AAD binding a wrapped data key to its ledger and patient (domain-separated)."""
    return _DEK_TAG + _lp(ledger) + _lp(patient_ref)


def seal(key: DataKey, plaintext: bytes, aad: bytes) -> str:
    """Encrypt ``plaintext`` under ``key`` and a fresh random nonce; return a token.

    The token is ``"enc:v1:" + base64url(nonce || ciphertext || tag)`` without padding.
    It opens only with the same key and the same ``aad`` (build it with :func:`field_aad`).
    Sealing the same plaintext twice gives different tokens.
    """
    # _next_nonce inlined: sealing runs for every PHI field of every event ingested.
    stream = _nonce_streams.get(get_ident()) or _new_stream()
    nonce = next(stream)
    body = binascii.b2a_base64(nonce + key._aead.encrypt(nonce, plaintext, aad), newline=False)
    # _b64url inlined: sealing runs for every PHI field of every event ingested.
    return TOKEN_PREFIX + body.translate(_TO_URLSAFE).rstrip(b"=").decode("ascii")


def open_token(key: DataKey, token: str, aad: bytes) -> bytes:
    """The plaintext of a token made by :func:`seal` with this ``key`` and ``aad``.

    Raises :class:`EnvelopeError` on anything else: a non-token, a token altered in any
    character, the wrong key, or a different ``aad`` (another ledger, patient or field).
    """
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX):
        raise EnvelopeError("value is not an enc:v1 token")
    return _decrypt(key._aead, _unb64url(token[len(TOKEN_PREFIX) :]), aad)


def is_token(value: object) -> bool:
    """Whether ``value`` looks like a token (a string with the ``enc:v1:`` prefix).

    A syntactic check only: it says what a stored field *claims* to be, not that it opens.
    """
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX)


def _kek_aead(kek: bytes) -> AESGCM:
    if not isinstance(kek, bytes) or len(kek) != KEY_BYTES:
        raise EnvelopeError(f"a key-encryption key must be exactly {KEY_BYTES} bytes")
    return _kek_context(kek)


@functools.lru_cache(maxsize=16)
def _kek_context(kek: bytes) -> AESGCM:
    # A ring holds a few KEKs, and each new patient's key is wrapped (and read back by
    # every other worker) under one of them: the AES key schedule once per KEK, not per
    # data key. The KEK bytes are held here no longer than by the ring that gave them.
    return AESGCM(kek)


def wrap_key(kek: bytes, dek: DataKey, aad: bytes) -> bytes:
    """``dek`` encrypted under the key-encryption key ``kek`` (AES-256-GCM, fresh nonce).

    The result (61 bytes: format byte, nonce, ciphertext, tag) is safe to store next to
    the data; it unwraps only with the same ``kek`` and ``aad`` (use :func:`dek_aad`).
    """
    return _WRAP_V1 + _encrypt(_kek_aead(kek), os.urandom(NONCE_BYTES), dek._material, aad)


def unwrap_key(kek: bytes, wrapped: bytes | bytearray | memoryview, aad: bytes) -> DataKey:
    """The :class:`DataKey` inside ``wrapped``; :class:`EnvelopeError` on any mismatch."""
    aead = _kek_aead(kek)
    # Database drivers hand back bytea/BLOB as bytes, bytearray or memoryview.
    if isinstance(wrapped, bytearray | memoryview):
        wrapped = bytes(wrapped)
    if (
        not isinstance(wrapped, bytes)
        or len(wrapped) != _WRAPPED_BYTES
        or wrapped[:1] != _WRAP_V1
    ):
        raise EnvelopeError("wrapped key is not in the v1 wrapping format")
    return DataKey(_decrypt(aead, wrapped[1:], aad))
