"""Verifiability commands: ``verify-proof`` (offline), ``witness``, ``checkpoint``, and the
log-key commands under ``keys``. Registered on the ``phi-ledger`` app by :func:`register`.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from api.cli.common import fail, load_settings, log_key_provider, protected_store

KeyOption = Annotated[str, typer.Option(
    "--key", help="The log's verifier key (GET /v1/checkpoints/key): name+id+base64.")]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise fail(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise fail(f"{path} is not UTF-8 text") from None


# -- verify-proof ---------------------------------------------------------------------------


def verify_proof(
    document: Annotated[Path, typer.Argument(
        help="A proof bundle (GET /v1/proofs/bundle), a signed checkpoint, or a JSON "
        "inclusion or consistency proof (GET /v1/proofs/...).")],
    key: KeyOption,
    entry: Annotated[Path | None, typer.Option(
        help="The entry the bundle or inclusion proof is about, as exported (JSON).")] = None,
    leaf_hash: Annotated[str | None, typer.Option(
        help="...or its hash (a receipt's `hash`), hex.")] = None,
    checkpoint: Annotated[list[Path] | None, typer.Option(
        help="Signed checkpoint(s) a JSON proof is checked against (two for consistency).")
    ] = None,
    witness_key: Annotated[list[str] | None, typer.Option(
        help="A witness's verifier key whose cosignature counts towards --quorum.")] = None,
    quorum: Annotated[int, typer.Option(
        help="How many of the --witness-key witnesses must have cosigned.")] = 0,
    origin: Annotated[str | None, typer.Option(
        help="The origin line the checkpoint must carry, when it differs from the key's "
        "name (sum.golang.org: 'go.sum database tree'). Default: the key's name.")] = None,
) -> None:
    """Check a proof bundle, a proof or a checkpoint offline, with only the log's public
    key: no database, no server. Exit 0 when it verifies, 1 when it does not."""
    from ledger.transparency.errors import TransparencyError
    from ledger.transparency.offline import entry_leaf_hash, verify_document

    leaf = None
    seq = None
    try:
        if entry is not None and leaf_hash is not None:
            raise fail("give --entry or --leaf-hash, not both")
        if entry is not None:
            seq, leaf = entry_leaf_hash(_read(entry))
        elif leaf_hash is not None:
            try:
                leaf = bytes.fromhex(leaf_hash)
            except ValueError:
                raise fail("--leaf-hash is not hex") from None
            if len(leaf) != 32:
                raise fail("--leaf-hash is not 32 bytes of hex")
        verified = verify_document(
            _read(document), key, leaf_hash=leaf,
            checkpoints=[_read(p) for p in checkpoint or []],
            witness_keys=witness_key or [], quorum=quorum, origin=origin)
    except TransparencyError as error:
        typer.echo(f"FAILED: {error}")
        raise typer.Exit(1) from None
    if seq is not None and verified.leaf_index is not None and verified.leaf_index != seq - 1:
        typer.echo(f"FAILED: the proof is for another position than the entry's seq {seq}")
        raise typer.Exit(1)
    typer.echo(f"OK: {verified.summary}")


# -- witness --------------------------------------------------------------------------------


def _write(path: Path, text: str, what: str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text`` atomically and durably (as the key files are)."""
    from ledger.crypto.keyfile import KeyRingError, replace_private

    try:
        replace_private(path, text.encode("utf-8"), what, mode)
    except KeyRingError as error:
        raise fail(str(error)) from None


def _cosigner(path: Path, name: str | None) -> Any:
    from ledger.transparency.note import Cosigner, NoteError, signer_from_key

    if path.exists():
        if path.stat().st_mode & 0o077:
            raise fail(f"witness key {path}: is accessible to group or others; chmod 600 it")
        try:
            signer = signer_from_key(_read(path).strip())
        except NoteError as error:
            raise fail(f"witness key {path}: {error}") from None
        if not isinstance(signer, Cosigner):
            raise fail(f"witness key {path}: not a cosignature/v1 (type 0x04) key")
        return signer
    signer = Cosigner.generate(name or f"witness.{socket.gethostname()}")
    _write(path, signer.key_string + "\n", f"witness key {path}")
    from api.cli.common import err

    err.print(f"witness key created in {path}; its verifier key:", highlight=False)
    err.print(signer.verifier().key_string, highlight=False, soft_wrap=True, markup=False)
    return signer


def _fetch(client: Any, path: str, **params: Any) -> Any:
    import httpx

    try:
        response = client.get(path, params=params)
    except httpx.HTTPError as error:
        raise fail(f"cannot reach the log: {type(error).__name__}") from None
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        raise fail(f"the log answered {response.status_code} to {path}: {message}")
    return response


def _witness_once(client: Any, log: Any, cosigner: Any, state: Path) -> str:
    from ledger.transparency.checkpoint import Checkpoint
    from ledger.transparency.note import Note
    from ledger.transparency.witness import WitnessRefused, accept

    held = _read(state) if state.exists() else None
    offered = _fetch(client, "/v1/checkpoints/latest").text
    proof: list[bytes] = []
    if held is not None:
        try:
            old = Checkpoint.parse(Note.parse(held).text).size
            new = Checkpoint.parse(Note.parse(offered).text).size
        except ValueError as error:
            typer.echo(f"REFUSED: {error}", err=True)
            raise typer.Exit(1) from None
        if new > old:
            body = _fetch(client, "/v1/proofs/consistency", first=old, second=new).json()
            try:
                proof = [bytes.fromhex(h) for h in body["proof"]]
            except (KeyError, TypeError, ValueError):
                typer.echo("REFUSED: the consistency proof is malformed", err=True)
                raise typer.Exit(1) from None
    try:
        accepted = accept(log, cosigner, held, offered, proof)
    except WitnessRefused as error:
        typer.echo(f"REFUSED: {error}", err=True)
        raise typer.Exit(1) from None
    _write(state, accepted.note, f"witness state {state}", 0o644)
    return accepted.note


def witness(
    log_url: Annotated[str, typer.Option("--log", help="The log's base URL.")],
    key: KeyOption,
    state: Annotated[Path, typer.Option(
        help="Where the last accepted (cosigned) checkpoint is kept.")],
    witness_key: Annotated[Path, typer.Option(
        help="This witness's private key file (cosignature/v1); created 0600 if absent.")],
    name: Annotated[str | None, typer.Option(
        help="The witness's key name when the key is created (default witness.<host>).")
    ] = None,
    api_key: Annotated[str | None, typer.Option(
        envvar="LEDGER_API_KEY", help="A verifier key of the log (or LEDGER_API_KEY).")] = None,
    follow: Annotated[float, typer.Option(
        help="Check again every this many seconds (0: once).")] = 0.0,
) -> None:
    """Witness a log: accept its newest checkpoint only if it consistently extends the
    last one accepted (a rollback or a fork exits 1 and changes nothing), cosign it, keep
    it in --state and print it. `phi-ledger verify --checkpoint STATE` uses it."""
    import httpx

    from ledger.transparency.note import NoteError, verifier_from_key

    try:
        log = verifier_from_key(key)
    except NoteError as error:
        raise fail(f"--key: {error}") from None
    cosigner = _cosigner(witness_key, name)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=log_url, headers=headers, timeout=10) as client:
        while True:
            typer.echo(_witness_once(client, log, cosigner, state), nl=False)
            if not follow:
                return
            time.sleep(follow)


# -- checkpoint -----------------------------------------------------------------------------


def checkpoint(
    ledger: Annotated[str | None, typer.Option(
        "--ledger", "-l", help="One ledger; default: every ledger.")] = None,
) -> None:
    """Sign a checkpoint of each ledger that grew since its newest one, now (the service
    does this by itself within a second of each append). Exit 1 if one is refused."""
    from ledger.crypto.keyring import KeyRingError
    from ledger.tlog import CheckpointRefused, TransparencyLog, load_log_identity

    settings = load_settings()
    store, _ = protected_store(settings)
    refused = False
    try:
        try:
            tlog = TransparencyLog(store, load_log_identity(settings))
        except KeyRingError as error:
            raise fail(str(error)) from None
        for name in [ledger] if ledger else store.ledgers():
            try:
                signed = tlog.sign(name)
            except CheckpointRefused as error:
                refused = True
                typer.echo(f"{name}: REFUSED: {error}")
                continue
            if signed is None:
                newest = tlog.latest(name)
                size = newest.size if newest else 0
                typer.echo(f"{name}: nothing new since the checkpoint of {size} entries")
            else:
                typer.echo(f"{name}: signed the checkpoint of {signed.size} entries")
    finally:
        store.close()
    raise typer.Exit(1 if refused else 0)


# -- phi-ledger verify: checkpoints from elsewhere ------------------------------------------


def signed_elsewhere(paths: list[Path], key: str | None) -> dict[str, dict[int, Any]]:
    """Checkpoints handed to ``verify`` (a witness's state file), by ledger: size ->
    (root, source). With the log's ``key`` each must verify; without, it is only parsed
    (its origin names its ledger: ``<log name>/<ledger>``)."""
    from ledger.transparency.checkpoint import Checkpoint, open_checkpoint
    from ledger.transparency.errors import TransparencyError
    from ledger.transparency.note import Note, verifier_from_key

    found: dict[str, dict[int, Any]] = {}
    for path in paths:
        text = _read(path)
        try:
            if key:
                checkpoint = open_checkpoint(text, verifier_from_key(key))
            else:
                checkpoint = Checkpoint.parse(Note.parse(text).text)
        except TransparencyError as error:
            raise fail(f"checkpoint {path}: {error}") from None
        ledger = checkpoint.origin.rsplit("/", 1)[-1]
        found.setdefault(ledger, {})[checkpoint.size] = (checkpoint.root,
                                                         f"checkpoint in {path}")
    return found


def newest_note_problem(store: Any, ledger: str, key: str) -> str | None:
    """Why the newest stored checkpoint of ``ledger`` does not verify with ``key`` (or
    does not say what its row says), or None when it does (or there is none)."""
    from ledger.tlog import TransparencyLog
    from ledger.transparency.checkpoint import open_checkpoint
    from ledger.transparency.errors import TransparencyError
    from ledger.transparency.note import verifier_from_key

    newest = TransparencyLog(store).latest(ledger)
    if newest is None:
        return None
    try:
        checkpoint = open_checkpoint(newest.note, verifier_from_key(key))
    except TransparencyError as error:
        return f"the newest stored checkpoint ({newest.size} entries) does not verify: {error}"
    if (checkpoint.size, checkpoint.root) != (newest.size, newest.root):
        return f"the newest stored checkpoint's note does not match its row ({newest.size})"
    return None


# -- keys: the log's signing keys -----------------------------------------------------------


def log_keys(
    ledger: Annotated[str | None, typer.Option("--ledger", "-l",
                                               help="Show verifier keys for this ledger.")
                      ] = None,
) -> None:
    """The log's checkpoint keys: id, state and verifier key (no secret is shown)."""
    from ledger.crypto.keyring import KeyRingError
    from ledger.crypto.log_keys import FileLogKeyProvider
    from ledger.tlog import LogIdentity

    settings = load_settings()
    try:
        provider = log_key_provider(settings)
        if isinstance(provider, FileLogKeyProvider) and not provider.path.exists():
            raise fail(f"the log key file {provider.path} does not exist yet: it is made on"
                       " the next start")
        keys = provider.load()
    except KeyRingError as error:
        raise fail(str(error)) from None
    identity = LogIdentity.from_keys(keys)
    for key in identity.published(ledger or settings.default_ledger):
        state = "active" if key["active"] else ("co-signing" if key["signing"] else "retired")
        typer.echo(f"{key['id']} ({state}, created {key['created_at']}): {key['key']}")


def rotate_log_key() -> None:
    """Add a new checkpoint key and make it active. Older keys keep co-signing until
    retired, so verifiers and witnesses that know only them keep working; restart the
    service to sign with the new key, move verifiers to it, then `keys retire-log-key`."""
    from ledger.crypto.keyring import KeyRingError
    from ledger.crypto.log_keys import FileLogKeyProvider
    from ledger.tlog import LogIdentity

    settings = load_settings()
    try:
        provider = log_key_provider(settings)
        if isinstance(provider, FileLogKeyProvider) and not provider.path.exists():
            # No log key yet: making the first one is the rotation (and it alone signs).
            keys = provider.load_or_create(settings.log_name)
        else:
            keys = provider.load().with_new_key()
            provider.save(keys)
    except KeyRingError as error:
        raise fail(str(error)) from None
    identity = LogIdentity.from_keys(keys)
    typer.echo(f"active log key {keys.active}; its verifier key for ledger"
               f" '{settings.default_ledger}':")
    typer.echo(identity.verifier_key(settings.default_ledger))


def retire_log_key(key_id: Annotated[str, typer.Argument(help="The log key to retire.")]
                   ) -> None:
    """Stop signing with an old checkpoint key: its seed leaves the log key store, its
    public key stays published so the checkpoints it signed still verify."""
    from ledger.crypto.keyring import KeyRingError

    settings = load_settings()
    try:
        provider = log_key_provider(settings)
        provider.save(provider.load().with_key_retired(key_id))
    except KeyRingError as error:
        raise fail(str(error)) from None
    typer.echo(f"retired log key {key_id}; restart the service")


def register(app: typer.Typer, keys_app: typer.Typer) -> None:
    """Add these commands to ``phi-ledger`` (and its ``keys`` group)."""
    app.command("verify-proof")(verify_proof)
    app.command("witness")(witness)
    app.command("checkpoint")(checkpoint)
    keys_app.command("log-keys")(log_keys)
    keys_app.command("rotate-log-key")(rotate_log_key)
    keys_app.command("retire-log-key")(retire_log_key)


__all__ = ["newest_note_problem", "register", "signed_elsewhere"]
