"""Interoperability with other C2SP verifiers and logs, pure (no database, no server).

- A log's origin may differ from its key's name: sum.golang.org signs checkpoints of
  ``go.sum database tree`` with the key ``sum.golang.org``. ``verify-proof --origin``
  checks such a log; without it the origin must be the key's name.
- Signature lines whose base64 has non-zero padding bits are accepted, as Go's
  ``note.Open`` accepts them; the signed text itself stays strictly canonical.

The checkpoint below is real: served by https://sum.golang.org/latest on 2024-09-23 (as
quoted in the sigsum-go project's checkpoint tests); the key is sum.golang.org's public
verifier key, built into the go command (src/cmd/go/internal/modfetch/key.go). Both are
public data, used here as data only.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from ledger.transparency.bundle import Bundle
from ledger.transparency.checkpoint import (
    Checkpoint,
    CheckpointError,
    open_checkpoint,
    sign_checkpoint,
)
from ledger.transparency.note import (
    EM_DASH,
    Ed25519Signer,
    Note,
    NoteError,
    open_note,
    sign_note,
    verifier_from_key,
)
from ledger.transparency.offline import verify_document

SUMDB_KEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_ORIGIN = "go.sum database tree"
SUMDB_SIGNATURE = ("Az3grpgEild5qw7+5dtV13Kf1C2Xurm8q4fhdxvcsDHnqNTaxL2AFjBY+2TyGKevucFcAAlWFJ"
                   "JYle3EJlDCrQ+y3A8=")
SUMDB_TEXT = "go.sum database tree\n30055305\nmXfgRcJ0bG0j3CPdKwgGWtUzBUbX67saZGRmFuJGGsM=\n"
SUMDB_NOTE = f"{SUMDB_TEXT}\n{EM_DASH} sum.golang.org {SUMDB_SIGNATURE}\n"


def test_a_real_sum_golang_org_checkpoint_verifies_with_its_key() -> None:
    verifier = verifier_from_key(SUMDB_KEY)
    opened = open_note(SUMDB_NOTE, [verifier])
    assert opened.text == SUMDB_TEXT and opened.signed_by(verifier)
    # The signature is over the text: one changed digit and it no longer verifies.
    with pytest.raises(NoteError, match="does not verify"):
        open_note(SUMDB_NOTE.replace("30055305", "30055306"), [verifier])


def test_the_origin_is_checked_against_the_one_given_or_the_key_name() -> None:
    verifier = verifier_from_key(SUMDB_KEY)
    checkpoint = open_checkpoint(SUMDB_NOTE, verifier, origin=SUMDB_ORIGIN)
    assert (checkpoint.origin, checkpoint.size) == (SUMDB_ORIGIN, 30055305)
    assert checkpoint.root == base64.b64decode("mXfgRcJ0bG0j3CPdKwgGWtUzBUbX67saZGRmFuJGGsM=")
    with pytest.raises(CheckpointError, match=r"origin 'go\.sum database tree', not "
                                               r"'sum\.golang\.org'"):
        open_checkpoint(SUMDB_NOTE, verifier)
    with pytest.raises(CheckpointError, match="origin"):
        open_checkpoint(SUMDB_NOTE, verifier, origin="sum.golang.org/other")


def verify_proof(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["verify-proof", *args])
    return result.exit_code, result.output


def test_verify_proof_checks_sum_golang_org_with_origin(tmp_path: Path) -> None:
    note = tmp_path / "latest"
    note.write_text(SUMDB_NOTE, encoding="utf-8")
    code, out = verify_proof(str(note), "--key", SUMDB_KEY, "--origin", SUMDB_ORIGIN)
    assert code == 0, out
    assert out.startswith("OK: checkpoint of go.sum database tree: 30055305 entries")
    code, out = verify_proof(str(note), "--key", SUMDB_KEY)
    assert code == 1, out
    assert out.startswith("FAILED: checkpoint is for origin 'go.sum database tree', not "
                          "'sum.golang.org'")
    code, out = verify_proof(str(note), "--key", SUMDB_KEY, "--origin", "go.sum database")
    assert code == 1 and out.startswith("FAILED:"), out


def test_origin_applies_to_a_bundle_too() -> None:
    """A bundle's checkpoint is held to ``origin`` like a bare checkpoint (one-leaf tree:
    the root is the leaf hash and the proof is empty)."""
    signer = Ed25519Signer("keys.example", hashlib.sha256(b"interop").digest())
    leaf = hashlib.sha256(b"an entry").digest()
    note = sign_checkpoint(Checkpoint("log.example/audit", 1, leaf), signer)
    bundle = Bundle(0, (), note).encode()
    key = signer.verifier().key_string
    verified = verify_document(bundle, key, leaf_hash=leaf, origin="log.example/audit")
    assert (verified.kind, verified.checkpoint.size) == ("bundle", 1)
    with pytest.raises(CheckpointError, match="origin"):
        verify_document(bundle, key, leaf_hash=leaf)


def _stray(encoded: str) -> str:
    """``encoded`` with its last character's padding bits set: the same bytes, spelled
    differently (what Go's non-strict decoder accepts)."""
    head = encoded.rstrip("=")
    pad = encoded[len(head):]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    bits = 0b11 if len(pad) == 1 else 0b1111  # one '=': 2 padding bits; two: 4
    last = alphabet[alphabet.index(head[-1]) | bits]
    stray = head[:-1] + last + pad
    assert stray != encoded and base64.b64decode(stray) == base64.b64decode(encoded)
    return stray


def test_a_signature_with_non_zero_padding_bits_is_accepted_as_go_does() -> None:
    verifier = verifier_from_key(SUMDB_KEY)
    stray = SUMDB_NOTE.replace(SUMDB_SIGNATURE, _stray(SUMDB_SIGNATURE))
    assert stray != SUMDB_NOTE
    opened = open_note(stray, [verifier])
    assert opened.verified == open_note(SUMDB_NOTE, [verifier]).verified
    assert open_checkpoint(stray, verifier, origin=SUMDB_ORIGIN).size == 30055305
    # Re-encoding spells the signature canonically.
    assert Note.parse(stray).encode() == SUMDB_NOTE


def test_lenient_padding_is_about_padding_only() -> None:
    verifier = verifier_from_key(SUMDB_KEY)
    # A changed data character (not padding bits) is another signature: it fails.
    changed = SUMDB_SIGNATURE[:-3] + ("B" if SUMDB_SIGNATURE[-3] != "B" else "C") + "8="
    with pytest.raises(NoteError, match="does not verify"):
        open_note(SUMDB_NOTE.replace(SUMDB_SIGNATURE, changed), [verifier])
    # Unpadded or non-alphabet base64 stays refused.
    for bad in (SUMDB_SIGNATURE[:-1], SUMDB_SIGNATURE.replace("+", "-")):
        with pytest.raises(NoteError, match="malformed signature line"):
            Note.parse(SUMDB_NOTE.replace(SUMDB_SIGNATURE, bad))


def test_stray_padding_bits_in_the_signed_text_are_still_refused() -> None:
    """The signed text keeps one spelling per value: a root hash with padding bits set is
    refused even under a valid signature."""
    signer = Ed25519Signer("log.example", hashlib.sha256(b"strict").digest())
    root = base64.b64encode(hashlib.sha256(b"root").digest()).decode()
    note = sign_note(f"log.example\n7\n{_stray(root)}\n", signer)
    with pytest.raises(CheckpointError, match="root hash"):
        open_checkpoint(note, signer.verifier())
    assert open_checkpoint(sign_note(f"log.example\n7\n{root}\n", signer),
                           signer.verifier()).size == 7
