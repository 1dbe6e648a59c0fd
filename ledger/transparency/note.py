"""C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 keys and witness cosignatures.

A note is a text ending in a newline, a blank line, then one or more signature lines
``— <key name> base64(key id || signature)`` (U+2014 em dash). The text is everything up to
the *last* blank line. Keys are named; a key id is
``SHA-256(name || 0x0A || type || public key)[:4]`` with type 0x01 for Ed25519 note
signatures and 0x04 for timestamped Ed25519 cosignatures (https://c2sp.org/tlog-cosignature).

Trust, as the spec has it: :func:`open_note` ignores signatures from keys it was not given
(a key is its name *and* id), checks every signature from a key it was given, rejects the
whole note if any of those fails (the spec's SHOULD), and rejects it unless at least one
verifies (the spec's MUST). Text from an unverified note must not be used.

Key strings follow golang.org/x/mod/sumdb/note, which the spec's verifier keys come from:
``name+hex8(key id)+base64(type || public key)`` and
``PRIVATE+KEY+name+hex8(key id)+base64(type || 32-byte seed)``. A cosigner's private key
string carries type 0x04; transparency-dev/formats also turns a 0x01 key into a cosigner,
which :meth:`Cosigner.from_signer` does explicitly.

Strict parsing, beyond the spec's letter where it is silent: base64 must be canonical
(except in signature lines, where non-zero padding bits are accepted as Go's ``note.Open``
accepts them: the line is outside the signed text, so the bytes decoded, and what they
vouch for, are the same; a re-encoded note spells them canonically), a signature must
carry at least one byte after its key id, a note may hold at most
:data:`MAX_SIGNATURES` signatures (the spec requires accepting 16), and a repeated
signature by the same known key is checked once (as the Go reference does).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger.transparency._codec import b64decode, b64encode, has_control_characters
from ledger.transparency.errors import TransparencyError

EM_DASH = "\u2014"
SIGNATURE_PREFIX = EM_DASH + " "
ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
KEY_ID_SIZE = 4
MAX_SIGNATURES = 100
COSIGNATURE_HEADER = b"cosignature/v1\n"
TIMESTAMP_LIMIT = 1 << 63  # a cosignature's timestamp MUST NOT exceed 2^63 - 1


class NoteError(TransparencyError):
    """A note, key or signature is malformed, or a note does not verify."""


def is_valid_key_name(name: str) -> bool:
    """Non-empty, with no Unicode space and no ``+`` (the spec's rule for key names)."""
    return (
        bool(name)
        and "+" not in name
        and not any(c.isspace() for c in name)
        and not has_control_characters(name)
    )


def key_id(name: str, alg: int, public_key: bytes) -> bytes:
    """``SHA-256(name || 0x0A || alg || public key)[:4]``, the recommended key id."""
    if not is_valid_key_name(name):
        raise NoteError(f"invalid key name {name!r}")
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()[:4]


class Verifier(Protocol):
    """Checks one named key's signatures over note texts."""

    @property
    def name(self) -> str: ...
    @property
    def key_id(self) -> bytes: ...
    def verify(self, message: bytes, signature: bytes) -> bool: ...


class Signer(Protocol):
    """Signs note texts with one named key."""

    @property
    def name(self) -> str: ...
    @property
    def key_id(self) -> bytes: ...
    def sign(self, message: bytes) -> bytes: ...


def _public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class _Ed25519Public:
    name: str
    public_key: bytes
    key_id: bytes = field(init=False)
    _key: Ed25519PublicKey = field(init=False, repr=False, compare=False)
    ALG: ClassVar[int] = ALG_ED25519

    def __post_init__(self) -> None:
        if len(self.public_key) != 32:
            raise NoteError("an Ed25519 public key is 32 bytes")
        try:
            key = Ed25519PublicKey.from_public_bytes(bytes(self.public_key))
        except ValueError:
            raise NoteError("not an Ed25519 public key") from None
        object.__setattr__(self, "key_id", key_id(self.name, self.ALG, self.public_key))
        object.__setattr__(self, "_key", key)

    @property
    def key_string(self) -> str:
        """``name+hex8(key id)+base64(type || public key)``."""
        material = b64encode(bytes([self.ALG]) + self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{material}"

    def _check(self, message: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


class Ed25519Verifier(_Ed25519Public):
    """Checks Ed25519 note signatures (type 0x01) by the key ``name`` / ``public_key``."""

    __slots__ = ()

    def verify(self, message: bytes, signature: bytes) -> bool:
        return len(signature) == 64 and self._check(message, signature)


class CosignatureVerifier(_Ed25519Public):
    """Checks timestamped Ed25519 cosignatures (cosignature/v1, type 0x04) by one witness.

    The signature is an 8-byte big-endian timestamp followed by an Ed25519 signature over
    ``"cosignature/v1\\ntime <timestamp>\\n"`` and the note text.
    """

    __slots__ = ()
    ALG: ClassVar[int] = ALG_COSIGNATURE_V1

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != 8 + 64:
            return False
        timestamp = int.from_bytes(signature[:8], "big")
        if timestamp >= TIMESTAMP_LIMIT:
            return False
        return self._check(cosigned_message(timestamp, message), signature[8:])


def cosigned_message(timestamp: int, text: bytes) -> bytes:
    """What a cosignature/v1 signs: a header line, a time line, then the checkpoint text."""
    return COSIGNATURE_HEADER + b"time %d\n" % timestamp + text


@dataclass(frozen=True, slots=True)
class _Ed25519Private:
    name: str
    seed: bytes = field(repr=False)
    public_key: bytes = field(init=False)
    key_id: bytes = field(init=False)
    _key: Ed25519PrivateKey = field(init=False, repr=False, compare=False)
    ALG: ClassVar[int] = ALG_ED25519

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise NoteError("an Ed25519 private key is a 32-byte seed")
        key = Ed25519PrivateKey.from_private_bytes(bytes(self.seed))
        public = _public_bytes(key.public_key())
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "public_key", public)
        object.__setattr__(self, "key_id", key_id(self.name, self.ALG, public))

    @property
    def key_string(self) -> str:
        """``PRIVATE+KEY+name+hex8(key id)+base64(type || seed)``: keep it secret."""
        material = b64encode(bytes([self.ALG]) + self.seed)
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{material}"


class Ed25519Signer(_Ed25519Private):
    """Signs note texts with Ed25519 (type 0x01): the log's checkpoint key."""

    __slots__ = ()

    @classmethod
    def generate(cls, name: str) -> Ed25519Signer:
        return cls(name, secrets.token_bytes(32))

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def verifier(self) -> Ed25519Verifier:
        return Ed25519Verifier(self.name, self.public_key)


def _unix_now() -> int:
    return int(time.time())


@dataclass(frozen=True, slots=True)
class Cosigner(_Ed25519Private):
    """Signs cosignature/v1 statements (type 0x04): a witness's key.

    ``clock`` gives the POSIX time stamped into each cosignature; pass a fixed one in tests.
    """

    clock: Callable[[], int] = field(default=_unix_now, repr=False, compare=False)
    ALG: ClassVar[int] = ALG_COSIGNATURE_V1

    @classmethod
    def generate(cls, name: str, clock: Callable[[], int] = _unix_now) -> Cosigner:
        return cls(name, secrets.token_bytes(32), clock)

    @classmethod
    def from_signer(cls, signer: Ed25519Signer, clock: Callable[[], int] = _unix_now) -> Cosigner:
        """The same key used for cosignatures (a different key id: type 0x04)."""
        return cls(signer.name, signer.seed, clock)

    def sign(self, message: bytes) -> bytes:
        return self.cosign(message, self.clock())

    def cosign(self, message: bytes, timestamp: int) -> bytes:
        if not 0 <= timestamp < TIMESTAMP_LIMIT:
            raise NoteError("a cosignature timestamp is between 0 and 2^63 - 1")
        signed = cosigned_message(timestamp, message)
        return timestamp.to_bytes(8, "big") + self._key.sign(signed)

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, self.public_key)


_VERIFIERS: dict[int, type[Ed25519Verifier | CosignatureVerifier]] = {
    ALG_ED25519: Ed25519Verifier,
    ALG_COSIGNATURE_V1: CosignatureVerifier,
}
_SIGNERS: dict[int, type[Ed25519Signer | Cosigner]] = {
    ALG_ED25519: Ed25519Signer,
    ALG_COSIGNATURE_V1: Cosigner,
}


def _split_key(name: str, hex_id: str, material: str) -> tuple[int, bytes, bytes]:
    data = b64decode(material)
    if not is_valid_key_name(name) or data is None or len(data) != 33:
        raise NoteError("malformed key string")
    if len(hex_id) != 8 or any(c not in "0123456789abcdefABCDEF" for c in hex_id):
        raise NoteError("malformed key id in key string")
    return data[0], data[1:], bytes.fromhex(hex_id)


def verifier_from_key(vkey: str) -> Ed25519Verifier | CosignatureVerifier:
    """Parse ``name+hex8+base64(type || key)``; the key id must match name, type and key."""
    # The base64 part may itself hold a '+': split off only the first two fields.
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise NoteError("malformed verifier key")
    alg, public, claimed = _split_key(*parts)
    if alg not in _VERIFIERS:
        raise NoteError(f"unsupported verifier key type 0x{alg:02x}")
    verifier = _VERIFIERS[alg](parts[0], public)
    if verifier.key_id != claimed:
        raise NoteError("verifier key id does not match its name and key")
    return verifier


def signer_from_key(skey: str) -> Ed25519Signer | Cosigner:
    """Parse ``PRIVATE+KEY+name+hex8+base64(type || seed)``; the key id must match."""
    parts = skey.split("+", 4)
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise NoteError("malformed signer key")
    alg, seed, claimed = _split_key(*parts[2:])
    if alg not in _SIGNERS:
        raise NoteError(f"unsupported signer key type 0x{alg:02x}")
    signer = _SIGNERS[alg](parts[2], seed)
    if signer.key_id != claimed:
        raise NoteError("signer key id does not match its name and key")
    return signer


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature line: who (name and key id) and the signature bytes after the key id."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{SIGNATURE_PREFIX}{self.name} {b64encode(self.key_id + self.signature)}\n"

    @classmethod
    def parse(cls, line: str) -> Signature:
        """Parse one signature line, without its newline."""
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError("signature line does not start with an em dash and a space")
        name, space, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
        # Go's note.Open decodes with base64.StdEncoding, which ignores padding bits: a
        # note the reference verifier accepts must not fail here (docs/interop.md).
        data = b64decode(encoded, canonical=False)
        if not space or not is_valid_key_name(name) or data is None:
            raise NoteError("malformed signature line")
        if len(data) <= KEY_ID_SIZE:
            raise NoteError("signature holds nothing after its key id")
        return cls(name, data[:KEY_ID_SIZE], data[KEY_ID_SIZE:])


def check_text(text: str) -> None:
    """Raise :class:`NoteError` unless ``text`` can be a note's text."""
    if not text.endswith("\n"):
        raise NoteError("note text does not end with a newline")
    if has_control_characters(text):
        raise NoteError("note text holds a control character other than newline")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise NoteError("note text is not valid Unicode (lone surrogate)") from None


@dataclass(frozen=True, slots=True)
class Note:
    """A note's text and its signature lines, as written; parsing verifies nothing."""

    text: str
    signatures: tuple[Signature, ...] = ()

    def encode(self) -> str:
        check_text(self.text)
        if not self.signatures:
            raise NoteError("a signed note needs at least one signature")
        return self.text + "\n" + "".join(s.line() for s in self.signatures)

    def sign(self, *signers: Signer) -> Note:
        """This note with one more signature per signer (a witness adds its cosignature)."""
        check_text(self.text)
        message = self.text.encode()
        added = tuple(Signature(s.name, s.key_id, s.sign(message)) for s in signers)
        return Note(self.text, self.signatures + added)

    @classmethod
    def parse(cls, note: str | bytes) -> Note:
        """Split a note into text and signatures, strictly; trust none of it yet."""
        if isinstance(note, bytes | bytearray):
            try:
                note = bytes(note).decode("utf-8")
            except UnicodeDecodeError:
                raise NoteError("note is not valid UTF-8") from None
        if has_control_characters(note):
            raise NoteError("note holds a control character other than newline")
        if not note.endswith("\n"):
            raise NoteError("note does not end with a newline")
        cut = note.rfind("\n\n")
        if cut < 0:
            raise NoteError("note has no blank line before its signatures")
        text, block = note[: cut + 1], note[cut + 2 :]
        lines = block[:-1].split("\n") if block else []
        if not lines:
            raise NoteError("note has no signatures")
        if len(lines) > MAX_SIGNATURES:
            raise NoteError(f"note has more than {MAX_SIGNATURES} signatures")
        return cls(text, tuple(Signature.parse(line) for line in lines))


@dataclass(frozen=True, slots=True)
class OpenedNote:
    """A note whose text is vouched for by every signature in ``verified``.

    ``note`` is everything as parsed, unknown signatures included (a witness re-serving a
    checkpoint keeps them).
    """

    text: str
    verified: tuple[Signature, ...]
    note: Note

    def signed_by(self, verifier: Verifier) -> bool:
        return any(s.name == verifier.name and s.key_id == verifier.key_id for s in self.verified)


def sign_note(text: str, *signers: Signer) -> str:
    """The signed note of ``text`` by ``signers``, ready to publish."""
    return Note(text).sign(*signers).encode()


def open_note(note: str | bytes, verifiers: Iterable[Verifier]) -> OpenedNote:
    """Parse ``note`` and check it against the known keys ``verifiers`` (see module doc)."""
    known: dict[tuple[str, bytes], Verifier] = {}
    for v in verifiers:
        if (v.name, v.key_id) in known:
            raise NoteError(f"two verifiers share the name {v.name!r} and key id")
        known[(v.name, v.key_id)] = v
    parsed = Note.parse(note)
    message = parsed.text.encode()
    verified: list[Signature] = []
    seen: set[tuple[str, bytes]] = set()
    for sig in parsed.signatures:
        who = (sig.name, sig.key_id)
        verifier = known.get(who)
        if verifier is None or who in seen:
            continue
        seen.add(who)
        if not verifier.verify(message, sig.signature):
            raise NoteError(f"signature by {sig.name!r} does not verify")
        verified.append(sig)
    if not verified:
        raise NoteError("note has no verifiable signature from a known key")
    return OpenedNote(parsed.text, tuple(verified), parsed)


def cosignature_timestamp(signature: Signature) -> int:
    """The POSIX time a cosignature/v1 signature states (not itself a verification)."""
    if len(signature.signature) != 8 + 64:
        raise NoteError("not an Ed25519 cosignature/v1 signature")
    timestamp = int.from_bytes(signature.signature[:8], "big")
    if timestamp >= TIMESTAMP_LIMIT:
        raise NoteError("cosignature timestamp exceeds 2^63 - 1")
    return timestamp
