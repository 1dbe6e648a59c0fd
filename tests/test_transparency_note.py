"""C2SP signed notes, cosignatures, checkpoints and proof bundles, pure.

Known answers come from outside this code base: the signed-note spec's example key and
note, the golang.org/x/mod/sumdb/note examples (PeterNeumann, EnochRoot) and the
transparency-dev/formats cosignature timestamp vector, all used as data only.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.transparency.bundle import HEADER, Bundle, BundleError, verify_bundle
from ledger.transparency.checkpoint import (
    Checkpoint,
    CheckpointError,
    open_checkpoint,
    sign_checkpoint,
)
from ledger.transparency.errors import TransparencyError
from ledger.transparency.note import (
    EM_DASH,
    MAX_SIGNATURES,
    CosignatureVerifier,
    Cosigner,
    Ed25519Signer,
    Ed25519Verifier,
    Note,
    NoteError,
    Signature,
    cosignature_timestamp,
    cosigned_message,
    key_id,
    open_note,
    sign_note,
    signer_from_key,
    verifier_from_key,
)
from ledger.transparency.proof import ProofError
from ledger.transparency.tree import inclusion_proof, leaf_hash, root_of

SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    f"{EM_DASH} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYj"
    "OBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    f"{EM_DASH} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgK"
    "vqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    f"{EM_DASH} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01o"
    "OTGwnWLox33WWd1RvMc+QQ=\n"
)
COSIG_TIMESTAMP_VECTOR = (  # transparency-dev/formats: a cosignature/v1 stamped 1727964367
    "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFi"
    "EBYJXORmnFBOBA=="
)
NOT_A_COSIGNATURE_VECTOR = (
    "eQjRQm6eSKzFoiYalgwCPXu2y3ijtg68is9M46JKxuZB+dRfTmeQeDBoXnvxZx2ugnkyV+MUMLXpWs1hPb/W/4xkNQY="
)

ORIGIN = "ledger.example/default"
NOW = 1_800_000_000
LOG = Ed25519Signer(ORIGIN, bytes(range(32)))
W1 = Cosigner("witness1.example", b"\x11" * 32, lambda: NOW)
W2 = Cosigner("witness2.example", b"\x22" * 32, lambda: NOW + 1)


def _names(signatures: tuple[Signature, ...]) -> list[str]:
    return [s.name for s in signatures]


# --- signed notes ---------------------------------------------------------------------------


def test_go_reference_key_signs_byte_for_byte() -> None:
    signer = signer_from_key(GO_SKEY)
    assert isinstance(signer, Ed25519Signer)
    assert signer.key_string == GO_SKEY
    assert signer.key_id.hex() == "c74f20a3"
    assert signer.verifier().key_string == GO_VKEY
    assert sign_note(GO_TEXT, signer) == GO_TEXT + "\n" + PETER_SIG


def test_spec_example_note_verifies() -> None:
    verifier = verifier_from_key(SPEC_VKEY)
    assert isinstance(verifier, Ed25519Verifier)
    assert verifier.key_string == SPEC_VKEY
    opened = open_note(SPEC_NOTE, [verifier])
    assert opened.text == "This is an example message.\n"
    assert _names(opened.verified) == ["example.com/foo"]
    assert open_note(SPEC_NOTE.encode(), [verifier]).text == opened.text


def test_signatures_from_unknown_keys_are_ignored() -> None:
    note = GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG
    peter, enoch = verifier_from_key(GO_VKEY), verifier_from_key(ENOCH_VKEY)
    assert _names(open_note(note, [peter]).verified) == ["PeterNeumann"]
    assert _names(open_note(note, [enoch]).verified) == ["EnochRoot"]
    assert _names(open_note(note, [enoch, peter]).verified) == ["PeterNeumann", "EnochRoot"]
    assert len(open_note(note, [peter]).note.signatures) == 2  # the unknown one is kept
    with pytest.raises(NoteError, match="no verifiable signature"):
        open_note(note, [])
    with pytest.raises(NoteError, match="no verifiable signature"):
        open_note(note, [Ed25519Signer.generate("PeterNeumann").verifier()])


def test_a_key_is_its_name_and_its_id() -> None:
    signer = Ed25519Signer.generate("log.example")
    note = Note.parse(sign_note("hello\n", signer))
    real = note.signatures[0]
    renamed = Signature("other.example", real.key_id, real.signature)
    reid = Signature(real.name, bytes(4), real.signature)
    for impostor in (renamed, reid):
        with pytest.raises(NoteError, match="no verifiable signature"):
            open_note(Note(note.text, (impostor,)).encode(), [signer.verifier()])
        opened = open_note(Note(note.text, (impostor, real)).encode(), [signer.verifier()])
        assert opened.verified == (real,)


def test_a_known_key_with_a_bad_signature_rejects_the_whole_note() -> None:
    a, b = Ed25519Signer.generate("a.example"), Ed25519Signer.generate("b.example")
    note = Note.parse(sign_note("text\n", a, b))
    bad = Signature("b.example", b.key_id, bytes(64))
    forged = Note(note.text, (note.signatures[0], bad)).encode()
    with pytest.raises(NoteError, match=r"'b\.example' does not verify"):
        open_note(forged, [a.verifier(), b.verifier()])
    assert _names(open_note(forged, [a.verifier()]).verified) == ["a.example"]


def test_a_repeated_signature_counts_once() -> None:
    note = GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG + PETER_SIG
    peter, enoch = verifier_from_key(GO_VKEY), verifier_from_key(ENOCH_VKEY)
    assert _names(open_note(note, [peter, enoch]).verified) == ["PeterNeumann", "EnochRoot"]


def test_every_flipped_bit_is_caught() -> None:
    signer = Ed25519Signer(ORIGIN, b"\x05" * 32)
    data = sign_note("origin\n42\nthe text\n", signer).encode()
    for position in range(len(data)):
        for bit in (0, 5):
            damaged = bytearray(data)
            damaged[position] ^= 1 << bit
            with pytest.raises(NoteError):
                open_note(bytes(damaged), [signer.verifier()])


def test_generated_keys_round_trip_through_their_key_strings() -> None:
    for factory in (Ed25519Signer.generate, Cosigner.generate):
        signer = factory("round.example/trip")
        again = signer_from_key(signer.key_string)
        assert type(again) is type(signer)
        assert (again.public_key, again.key_id) == (signer.public_key, signer.key_id)
        verifier = verifier_from_key(signer.verifier().key_string)
        assert verifier == signer.verifier()
        assert "PRIVATE" not in repr(signer) and signer.seed.hex() not in repr(signer)


def test_key_strings_whose_base64_holds_a_plus_parse() -> None:
    found = 0
    for seed in range(64):
        signer = Ed25519Signer("plus.example", bytes([seed]) * 32)
        vkey = signer.verifier().key_string
        if "+" in vkey.split("+", 2)[2]:
            assert verifier_from_key(vkey) == signer.verifier()
            assert signer_from_key(signer.key_string).key_id == signer.key_id
            found += 1
    assert found > 0


def test_key_id_is_the_recommended_hash() -> None:
    public = LOG.public_key
    expected = hashlib.sha256(ORIGIN.encode() + b"\n\x01" + public).digest()[:4]
    assert LOG.key_id == key_id(ORIGIN, 0x01, public) == expected
    cosigner = Cosigner.from_signer(LOG)
    assert cosigner.public_key == public
    assert cosigner.key_id == hashlib.sha256(ORIGIN.encode() + b"\n\x04" + public).digest()[:4]
    assert cosigner.key_id != LOG.key_id
    for name in ("", "has space", "has+plus", "tab\there", "nbsp\u00a0name"):
        with pytest.raises(NoteError, match="invalid key name"):
            key_id(name, 0x01, public)


@pytest.mark.parametrize(
    "vkey",
    [
        GO_VKEY.replace("c74f20a3", "c74f20a4"),  # id does not match
        GO_VKEY.replace("c74f20a3", "c74f20a"),  # id not 8 hex digits
        GO_VKEY.replace("c74f20a3", "c74f20ag"),
        "PeterNeumann+c74f20a3",  # no key
        "PeterNeumann",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",  # short key
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW=",  # bad base64
        "PeterNeumann+c74f20a3+Apc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWA",  # type 0x02
    ],
)
def test_malformed_verifier_keys_are_refused(vkey: str) -> None:
    with pytest.raises(NoteError):
        verifier_from_key(vkey)


@pytest.mark.parametrize(
    "skey",
    [
        GO_SKEY.replace("PRIVATE+KEY+", ""),
        GO_SKEY.replace("PRIVATE+KEY+", "PRIVATE+KEYS+"),
        GO_SKEY.replace("c74f20a3", "00000000"),
        GO_SKEY[:-4],
        GO_VKEY,
    ],
)
def test_malformed_signer_keys_are_refused(skey: str) -> None:
    with pytest.raises(NoteError):
        signer_from_key(skey)


def test_two_verifiers_for_one_key_are_refused() -> None:
    with pytest.raises(NoteError, match="share the name"):
        open_note(SPEC_NOTE, [verifier_from_key(SPEC_VKEY), verifier_from_key(SPEC_VKEY)])


_SIG = PETER_SIG[len(f"{EM_DASH} PeterNeumann ") : -1]


@pytest.mark.parametrize(
    ("note", "reason"),
    [
        (GO_TEXT + "\n" + PETER_SIG[:-1], "end with a newline"),
        (GO_TEXT + PETER_SIG, "no blank line"),
        (GO_TEXT + "\n", "no signatures"),
        (GO_TEXT + "\n" + PETER_SIG + "\n", "no signatures"),
        (GO_TEXT + "\n" + PETER_SIG.replace(EM_DASH, "-"), "em dash"),
        (GO_TEXT + "\n" + PETER_SIG.replace(EM_DASH, "\u2013"), "em dash"),
        (GO_TEXT + "\n" + PETER_SIG.replace(f"{EM_DASH} ", EM_DASH), "em dash"),
        (GO_TEXT + "\n" + PETER_SIG.replace("Neumann ", "Neumann  "), "malformed"),
        (GO_TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Peter+Neumann"), "malformed"),
        (GO_TEXT + "\n" + f"{EM_DASH}  {_SIG}\n", "malformed"),
        (GO_TEXT + "\n" + f"{EM_DASH} PeterNeumann\n", "malformed"),
        (GO_TEXT + "\n" + f"{EM_DASH} PeterNeumann !!!!\n", "malformed"),
        (GO_TEXT + "\n" + f"{EM_DASH} PeterNeumann x08gow==\n", "nothing after its key id"),
        (GO_TEXT + "\n" + PETER_SIG + "trailing text\n", "em dash"),
        ("tab\there\n\n" + PETER_SIG, "control character"),
        ("carriage\r\n\n" + PETER_SIG, "control character"),
        (b"\xff\xfe\n\n" + PETER_SIG.encode(), "UTF-8"),
        (GO_TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1), "more than"),
    ],
)
def test_malformed_notes_are_refused(note: str | bytes, reason: str) -> None:
    with pytest.raises(NoteError, match=reason):
        Note.parse(note)
    with pytest.raises(NoteError):
        open_note(note, [verifier_from_key(GO_VKEY)])


def test_at_least_sixteen_signatures_are_accepted() -> None:
    signers = [Ed25519Signer(f"s{i}.example", bytes([i]) * 32) for i in range(16)]
    opened = open_note(sign_note("many\n", *signers), [s.verifier() for s in signers])
    assert len(opened.verified) == 16


def test_text_may_hold_blank_lines_and_ends_at_the_last_one() -> None:
    text = "first paragraph\n\nsecond paragraph\n\n"
    opened = open_note(sign_note(text, LOG), [LOG.verifier()])
    assert opened.text == text


@pytest.mark.parametrize("text", ["no newline", "", "bell\x07\n", "lone \ud800 surrogate\n"])
def test_texts_that_cannot_be_signed(text: str) -> None:
    with pytest.raises(NoteError):
        sign_note(text, LOG)


def test_a_note_without_signatures_cannot_be_encoded() -> None:
    with pytest.raises(NoteError, match="at least one signature"):
        Note("text\n").encode()


# --- cosignatures ---------------------------------------------------------------------------


def _checkpoint(size: int = 7) -> Checkpoint:
    return Checkpoint(ORIGIN, size, root_of([leaf_hash(b"%d" % i) for i in range(size)]))


def test_cosignature_round_trip_and_message_layout() -> None:
    body = _checkpoint().body()
    signed = Note.parse(sign_checkpoint(_checkpoint(), LOG)).sign(W1).encode()
    opened = open_note(signed, [LOG.verifier(), W1.verifier()])
    assert _names(opened.verified) == [ORIGIN, "witness1.example"]
    cosignature = opened.verified[1]
    assert cosignature.key_id == W1.key_id
    assert cosignature_timestamp(cosignature) == NOW
    assert cosignature.signature[:8] == NOW.to_bytes(8, "big")
    # Checked with the bare primitive against the message the spec spells out.
    message = b"cosignature/v1\ntime 1800000000\n" + body.encode()
    assert cosigned_message(NOW, body.encode()) == message
    Ed25519PublicKey.from_public_bytes(W1.public_key).verify(cosignature.signature[8:], message)


def test_cosignature_keys_round_trip_and_use_type_4() -> None:
    verifier = verifier_from_key(W1.verifier().key_string)
    assert isinstance(verifier, CosignatureVerifier)
    assert base64.b64decode(W1.verifier().key_string.split("+", 2)[2])[0] == 0x04
    signer = signer_from_key(W1.key_string)
    assert isinstance(signer, Cosigner) and signer.key_id == W1.key_id
    # The same key as a plain Ed25519 verifier has another id: the cosignature is unknown.
    signed = sign_note(_checkpoint().body(), W1)
    with pytest.raises(NoteError, match="no verifiable"):
        open_note(signed, [Ed25519Verifier(W1.name, W1.public_key)])


def test_a_cosignature_with_another_timestamp_does_not_verify() -> None:
    signed = Note.parse(sign_note(_checkpoint().body(), W1))
    sig = signed.signatures[0]
    restamped = Signature(sig.name, sig.key_id, (NOW + 1).to_bytes(8, "big") + sig.signature[8:])
    with pytest.raises(NoteError, match="does not verify"):
        open_note(Note(signed.text, (restamped,)).encode(), [W1.verifier()])


def test_cosignature_timestamps_stay_below_two_to_the_63() -> None:
    with pytest.raises(NoteError):
        W1.cosign(b"x\n", 1 << 63)
    with pytest.raises(NoteError):
        W1.cosign(b"x\n", -1)
    body = _checkpoint().body().encode()
    too_late = 1 << 63
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    raw = Ed25519PrivateKey.from_private_bytes(W1.seed).sign(cosigned_message(too_late, body))
    assert not W1.verifier().verify(body, too_late.to_bytes(8, "big") + raw)
    assert W1.verifier().verify(body, W1.cosign(body, (1 << 63) - 1))


def test_cosignature_timestamp_reference_vector() -> None:
    assert cosignature_timestamp(Signature.parse(f"{EM_DASH} w {COSIG_TIMESTAMP_VECTOR}")) == (
        1727964367
    )
    with pytest.raises(NoteError):
        cosignature_timestamp(Signature.parse(f"{EM_DASH} w {NOT_A_COSIGNATURE_VECTOR}"))


# --- checkpoints ----------------------------------------------------------------------------


def test_checkpoint_formats_and_parses() -> None:
    root = bytes(range(32))
    cp = Checkpoint("example.com/log", 7, root)
    assert cp.body() == f"example.com/log\n7\n{base64.b64encode(root).decode()}\n"
    assert Checkpoint.parse(cp.body()) == cp
    extended = Checkpoint("example.com/log", 0, root, ("ext one", "ext two"))
    assert extended.body().endswith("\next one\next two\n")
    assert Checkpoint.parse(extended.body()) == extended


def test_spec_example_checkpoint_parses() -> None:
    body = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    cp = Checkpoint.parse(body)
    assert (cp.origin, cp.size, cp.extensions) == ("example.com/behind-the-sofa", 20852163, ())
    assert cp.root == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert cp.body() == body


_ROOT = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(
    "body",
    [
        f"o\n07\n{_ROOT}\n",
        f"o\n+7\n{_ROOT}\n",
        f"o\n 7\n{_ROOT}\n",
        f"o\n7 \n{_ROOT}\n",
        f"o\n-1\n{_ROOT}\n",
        f"o\n1_000\n{_ROOT}\n",
        f"o\n\u0667\n{_ROOT}\n",  # an Arabic-Indic seven is not an ASCII digit
        f"o\n{1 << 64}\n{_ROOT}\n",
        f"o\n\n{_ROOT}\n",
        "o\n7\nAAAA\n",
        f"o\n7\n{_ROOT[:-2]}B=\n",  # stray bits: not the canonical encoding
        f"\n7\n{_ROOT}\n",
        f"o\n7\n{_ROOT}\n\next\n",
        f"o\n7\n{_ROOT}",
        "o\n7\n",
        f"o\t1\n7\n{_ROOT}\n",
    ],
)
def test_malformed_checkpoints_are_refused(body: str) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint.parse(body)


@pytest.mark.parametrize(
    ("origin", "size", "root"),
    [("o", -1, bytes(32)), ("o", 1 << 64, bytes(32)), ("o", 1, bytes(31)), ("o\nx", 1, bytes(32))],
)
def test_invalid_checkpoints_cannot_be_built(origin: str, size: int, root: bytes) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint(origin, size, root)


def test_open_checkpoint_needs_the_log_and_its_origin() -> None:
    cp = _checkpoint()
    signed = sign_checkpoint(cp, LOG)
    assert open_checkpoint(signed, LOG.verifier()) == cp
    assert open_checkpoint(signed, LOG.verifier(), origin=ORIGIN) == cp
    with pytest.raises(CheckpointError, match="origin"):
        open_checkpoint(signed, LOG.verifier(), origin="ledger.example/other")
    other = Ed25519Signer("other.example/log", b"\x33" * 32)
    with pytest.raises(CheckpointError, match="origin"):
        open_checkpoint(sign_checkpoint(cp, other), other.verifier())
    with pytest.raises(NoteError, match="no verifiable"):
        open_checkpoint(sign_checkpoint(cp, other), LOG.verifier())
    # A witness's cosignature alone is not the log's signature.
    with pytest.raises(CheckpointError, match="not signed by the log"):
        open_checkpoint(sign_checkpoint(cp, W1), LOG.verifier(), witnesses=[W1.verifier()])


def test_open_checkpoint_counts_distinct_witnesses() -> None:
    cp = _checkpoint()
    once = Note.parse(sign_checkpoint(cp, LOG)).sign(W1)
    witnesses = [W1.verifier(), W2.verifier()]
    assert open_checkpoint(once.encode(), LOG.verifier(), witnesses=witnesses, quorum=1) == cp
    with pytest.raises(CheckpointError, match="needs 2"):
        open_checkpoint(once.encode(), LOG.verifier(), witnesses=witnesses, quorum=2)
    twice_by_one = once.sign(Cosigner(W1.name, W1.seed, lambda: NOW + 9))
    with pytest.raises(CheckpointError, match="needs 2"):
        open_checkpoint(twice_by_one.encode(), LOG.verifier(), witnesses=witnesses, quorum=2)
    both = once.sign(W2)
    assert open_checkpoint(both.encode(), LOG.verifier(), witnesses=witnesses, quorum=2) == cp


# --- proof bundles --------------------------------------------------------------------------


LEAVES = [leaf_hash(b"entry %d" % i) for i in range(13)]


def _subtree(level: int, index: int) -> bytes:
    return root_of(LEAVES[index << level : (index + 1) << level])


def _bundle(index: int = 6, size: int = 10, extra: bytes | None = b"seq 7") -> Bundle:
    cp = Checkpoint(ORIGIN, size, root_of(LEAVES[:size]))
    signed = Note.parse(sign_checkpoint(cp, LOG)).sign(W1).encode()
    return Bundle(index, tuple(inclusion_proof(index, size, _subtree)), signed, extra)


def test_bundle_round_trips_and_verifies() -> None:
    bundle = _bundle()
    text = bundle.encode()
    lines = text.split("\n")
    assert lines[0] == HEADER == "c2sp.org/tlog-proof@v1"
    assert lines[1] == "extra " + base64.b64encode(b"seq 7").decode()
    assert lines[2] == "index 6"
    assert [base64.b64decode(x) for x in lines[3 : 3 + len(bundle.proof)]] == list(bundle.proof)
    assert lines[3 + len(bundle.proof)] == ""
    assert text.endswith(bundle.checkpoint)
    assert Bundle.parse(text) == bundle
    cp = verify_bundle(text, LEAVES[6], LOG.verifier().key_string)
    assert (cp.origin, cp.size, cp.root) == (ORIGIN, 10, root_of(LEAVES[:10]))
    witnessed = verify_bundle(
        text,
        LEAVES[6],
        LOG.verifier().key_string,
        witness_keys=[W1.verifier().key_string],
        quorum=1,
    )
    assert witnessed == cp
    with pytest.raises(CheckpointError, match="needs 2"):
        verify_bundle(
            text,
            LEAVES[6],
            LOG.verifier().key_string,
            witness_keys=[W1.verifier().key_string, W2.verifier().key_string],
            quorum=2,
        )


def test_bundle_for_every_leaf_and_without_extra() -> None:
    for size in (1, 2, 10, 13):
        for index in range(size):
            text = _bundle(index, size, extra=None).encode()
            assert "\nextra " not in text
            verify_bundle(text, LEAVES[index], LOG.verifier().key_string)


def test_tampered_bundles_fail() -> None:
    bundle = _bundle()
    vkey = LOG.verifier().key_string

    def fails(text: str, leaf: bytes = LEAVES[6], key: str = vkey) -> None:
        with pytest.raises(TransparencyError):
            verify_bundle(text, leaf, key)

    for j in range(len(bundle.proof)):
        proof = list(bundle.proof)
        proof[j] = bytes([proof[j][0] ^ 1]) + proof[j][1:]
        fails(Bundle(6, tuple(proof), bundle.checkpoint, bundle.extra).encode())
    fails(Bundle(6, bundle.proof[:-1], bundle.checkpoint).encode())
    for index in (0, 5, 7, 9):
        fails(Bundle(index, bundle.proof, bundle.checkpoint).encode())
    with pytest.raises(ProofError, match="not below tree size"):
        verify_bundle(Bundle(10, bundle.proof, bundle.checkpoint).encode(), LEAVES[6], vkey)
    fails(bundle.encode(), leaf=LEAVES[5])
    fails(bundle.encode(), key=Ed25519Signer(ORIGIN, b"\x44" * 32).verifier().key_string)
    fails(bundle.encode(), key=W1.verifier().key_string)
    # The checkpoint text changed under its signature: a bigger size, another root.
    fails(bundle.encode().replace(f"{ORIGIN}\n10\n", f"{ORIGIN}\n11\n"))
    other_root = base64.b64encode(root_of(LEAVES[:9])).decode()
    fails(bundle.encode().replace(base64.b64encode(root_of(LEAVES[:10])).decode(), other_root))
    # Re-signed honestly by the log for another size, the old proof no longer fits.
    resigned = sign_checkpoint(Checkpoint(ORIGIN, 13, root_of(LEAVES)), LOG)
    fails(Bundle(6, bundle.proof, resigned).encode())


def test_extra_data_is_not_authenticated() -> None:
    """The spec: applications MUST NOT trust it; verification ignores it entirely."""
    original = _bundle(extra=b"seq 7")
    swapped = Bundle(original.index, original.proof, original.checkpoint, b"seq 999")
    vkey = LOG.verifier().key_string
    assert verify_bundle(swapped.encode(), LEAVES[6], vkey) == verify_bundle(
        original.encode(), LEAVES[6], vkey
    )


_CP = sign_checkpoint(Checkpoint(ORIGIN, 1, LEAVES[0]), LOG)
_H = base64.b64encode(LEAVES[1]).decode()


@pytest.mark.parametrize(
    "text",
    [
        f"c2sp.org/tlog-proof@v2\nindex 0\n\n{_CP}",
        f"c2sp.org/tlog-proof@v1\n\n{_CP}",
        f"c2sp.org/tlog-proof@v1\nindex 00\n\n{_CP}",
        f"c2sp.org/tlog-proof@v1\nindex -1\n\n{_CP}",
        f"c2sp.org/tlog-proof@v1\nindex  0\n\n{_CP}",
        f"c2sp.org/tlog-proof@v1\nindex {1 << 64}\n\n{_CP}",
        f"c2sp.org/tlog-proof@v1\nextra \nindex 0\n\n{_CP}",
        f"c2sp.org/tlog-proof@v1\nextra !!\nindex 0\n\n{_CP}",
        f"c2sp.org/tlog-proof@v1\nindex 0\nextra AAAA\n\n{_CP}",
        f"c2sp.org/tlog-proof@v1\nextra AAAA\nextra AAAA\nindex 0\n\n{_CP}",
        f"c2sp.org/tlog-proof@v1\nindex 0\nAAAA\n\n{_CP}",
        f"c2sp.org/tlog-proof@v1\nindex 0\n{_H}x\n\n{_CP}",
        f"c2sp.org/tlog-proof@v1\nindex 0\n{_H}\n{_CP}",
        "c2sp.org/tlog-proof@v1\nindex 0\n" + f"{_H}\n" * 65 + f"\n{_CP}",
        "c2sp.org/tlog-proof@v1\nindex 0\n\nnot a note\n",
        f"c2sp.org/tlog-proof@v1\nindex 0\n\n{_CP}".encode()[:-3] + b"\xff\n",
    ],
)
def test_malformed_bundles_are_refused(text: str | bytes) -> None:
    with pytest.raises(BundleError):
        Bundle.parse(text)
    with pytest.raises(TransparencyError):
        verify_bundle(text, LEAVES[0], LOG.verifier().key_string)


def test_a_well_formed_minimal_bundle_parses() -> None:
    """The control for the malformed cases above: the same pieces, put together right."""
    text = f"c2sp.org/tlog-proof@v1\nindex 0\n\n{_CP}"
    assert Bundle.parse(text) == Bundle(0, (), _CP)
    assert verify_bundle(text, LEAVES[0], LOG.verifier().key_string).size == 1
