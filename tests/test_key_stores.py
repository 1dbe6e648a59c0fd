"""Two key stores: the PHI key ring and the log's signing keys, each in its own file or
variable, and the move of the log keys out of a key ring written before the split.

What is checked: each store holds only its own keys, so stealing either file exposes
nothing of the other and losing either loses nothing of the other; a combined key file is
split without a moment where the log keys have no copy, once, even when several processes
start at once, and a combined ``LEDGER_KEYS`` keeps signing; the settings that name the
stores; and rotation from the command line of each kind of key leaves the other store
untouched.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from api.app import build_services
from ledger import keystores
from ledger.config import discover
from ledger.crypto.keyfile import KeyRingError
from ledger.crypto.keyring import RING_FIELDS, FileKeyProvider, KeyRing, decode_ring, encode_ring
from ledger.crypto.log_keys import (
    LOG_FIELDS,
    EnvLogKeyProvider,
    FileLogKeyProvider,
    LogKey,
    LogKeys,
    decode_log_keys,
    encode_log_keys,
)
from ledger.data_keys import DataKeys
from ledger.migrate import migrate
from ledger.protection import EnvelopeProtection, load_key_ring
from ledger.settings import Settings
from ledger.store import open_store
from ledger.tlog import LogIdentity, load_log_identity
from tests.support import ROOT, make_event
from tests.test_keys import key_strings
from tests.test_tamper import LEDGER, cli_env

LOG_STORE_FIELDS = LOG_FIELDS | {"version"}


@pytest.fixture
def local(tmp_path: Path) -> Settings:
    """Settings of a SQLite ledger whose key file lives alone in its own directory."""
    return Settings(database_url=f"sqlite:///{tmp_path}/ledger.db",
                    key_file=tmp_path / "keys" / "keys.json")


def combined(ring: KeyRing, keys: LogKeys) -> bytes:
    """A key ring as it was written before the stores were split: both in one document."""
    return json.dumps(json.loads(encode_ring(ring)) | json.loads(encode_log_keys(keys)),
                      indent=2).encode() + b"\n"


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)


def same_keys(a: LogKeys, b: LogKeys) -> bool:
    def spelled(keys: LogKeys) -> list[tuple[Any, ...]]:
        return [(k.key_id, k.public, k.seed, k.created_at) for k in keys.keys]
    return (a.name, a.active, spelled(a)) == (b.name, b.active, spelled(b))


def post_and_reveal(settings: Settings, n: int = 3) -> list[dict[str, Any]]:
    """Post ``n`` PHI events, then read back opened every event the ledger holds (these
    last)."""
    events = [make_event(action="create", patient={"id": f"MRN-{i:05d}"},
                         resource={"type": "patient", "phi": ["name"]},
                         data={"name": f"Holder Number{i}"}) for i in range(n)]
    svc = build_services(settings)
    try:
        svc.ingest.record_sync(LEDGER, events, batch=True)
    finally:
        svc.writer.stop()
        svc.store.close()
    store = open_store(settings.database_url)
    try:
        ring = load_key_ring(settings, store)
        stored = [json.loads(data)["event"] for _, data in store.stream(LEDGER)]
        opened = EnvelopeProtection(ring, DataKeys(store, ring)).reveal_many(LEDGER, stored)
    finally:
        store.close()
    assert opened[-n:] == events
    return opened


# -- the split ------------------------------------------------------------------------------


def test_each_store_holds_only_its_keys_and_survives_the_others_loss(settings: Settings
                                                                      ) -> None:
    post_and_reveal(settings)
    ring_bytes = settings.key_file.read_bytes()
    log_bytes = settings.log_key_path.read_bytes()
    assert settings.log_key_path == settings.key_file.with_name("log-keys.json")
    assert set(json.loads(ring_bytes)) == RING_FIELDS
    assert set(json.loads(log_bytes)) == LOG_STORE_FIELDS
    for path in (settings.key_file, settings.log_key_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Stealing one file exposes no key of the other, in any spelling.
    ring_secrets, log_secrets = key_strings(ring_bytes), key_strings(log_bytes)
    assert len(ring_secrets) == 2 * 6 and len(log_secrets) == 6
    assert not [s for s in ring_secrets if s in log_bytes.decode()]
    assert not [s for s in log_secrets if s in ring_bytes.decode()]

    # Losing the log key file loses no PHI: the ring still opens every event (and the
    # checkpoint signer gets a new key, which the store's old checkpoints will refuse).
    settings.log_key_path.unlink()
    post_and_reveal(settings)
    assert settings.key_file.read_bytes() == ring_bytes
    # Losing the key file loses no log key (the ring is refused: data keys need it).
    kept_log = settings.log_key_path.read_bytes()
    settings.key_file.unlink()
    assert load_log_identity(settings).verifier_key(LEDGER) == LogIdentity.from_keys(
        decode_log_keys(kept_log, "kept")).verifier_key(LEDGER)
    assert settings.log_key_path.read_bytes() == kept_log


def test_the_log_key_file_is_never_the_key_file(local: Settings) -> None:
    same = Settings(**{**local.__dict__, "log_key_file": local.key_file.parent / "." /
                       local.key_file.name})
    for provider in (keystores.key_provider, keystores.log_key_provider):
        with pytest.raises(KeyRingError, match="is the key file itself"):
            provider(same)
    assert not local.key_file.parent.exists()


# -- moving the log keys out of a combined key file ----------------------------------------


def test_a_combined_key_file_is_split_on_first_start_and_loses_nothing(local: Settings
                                                                        ) -> None:
    ring, keys = KeyRing.generate(), LogKeys.generate("audit.example.org")
    write_private(local.key_file, combined(ring, keys))
    post_and_reveal(local)  # data keys wrapped under the ring read back

    moved = FileKeyProvider(local.key_file).load()
    assert (moved.keks, moved.active_kek_id, moved.index_key) == (
        ring.keks, ring.active_kek_id, ring.index_key)
    assert set(json.loads(local.key_file.read_bytes())) == RING_FIELDS
    assert same_keys(FileLogKeyProvider(local.log_key_path).load(), keys)
    assert load_log_identity(local).verifier_key(LEDGER) == LogIdentity.from_keys(
        keys).verifier_key(LEDGER)
    assert sorted(os.listdir(local.key_file.parent)) == ["keys.json", "log-keys.json"]
    for path in (local.key_file, local.log_key_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    # Once moved, nothing moves again: a restart rewrites neither file.
    before = [(p.read_bytes(), p.stat().st_ino) for p in (local.key_file, local.log_key_path)]
    assert keystores.move_log_keys(local.key_file, local.log_key_path) is False
    post_and_reveal(local)
    assert [(p.read_bytes(), p.stat().st_ino)
            for p in (local.key_file, local.log_key_path)] == before


def test_the_log_keys_are_written_before_the_key_file_loses_them(
    local: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A move cut short after the log key file is made, before the key file is rewritten:
    both hold the keys, and the next start finishes the move."""
    ring, keys = KeyRing.generate(), LogKeys.generate()
    original = combined(ring, keys)
    write_private(local.key_file, original)

    def cut(*_: Any, **__: Any) -> None:
        raise KeyRingError("key file: cannot be replaced (no space left on device)")

    monkeypatch.setattr(keystores, "replace_private", cut)
    with pytest.raises(KeyRingError, match="no space left"):
        keystores.key_provider(local)
    assert local.key_file.read_bytes() == original
    assert same_keys(FileLogKeyProvider(local.log_key_path).load(), keys)

    monkeypatch.undo()
    assert keystores.key_provider(local).load().keks == ring.keks
    assert set(json.loads(local.key_file.read_bytes())) == RING_FIELDS
    assert same_keys(FileLogKeyProvider(local.log_key_path).load(), keys)


def test_a_combined_backup_restored_after_a_rotation_is_folded_in(local: Settings) -> None:
    """The log key file is newer (a key added, the old one retired): it is kept as it is,
    and the backup's copy of the retired seed leaves the key file."""
    ring, keys = KeyRing.generate(), LogKeys.generate()
    write_private(local.key_file, combined(ring, keys))
    keystores.key_provider(local)
    later = keys.with_new_key()
    later = later.with_key_retired(keys.active)
    FileLogKeyProvider(local.log_key_path).save(later)
    newer = local.log_key_path.read_bytes()

    write_private(local.key_file, combined(ring, keys))  # the backup
    assert keystores.move_log_keys(local.key_file, local.log_key_path) is True
    assert local.log_key_path.read_bytes() == newer
    assert json.loads(local.key_file.read_bytes()) == json.loads(encode_ring(ring))


@pytest.mark.parametrize("other", ["another log", "another key", "another key, same id"])
def test_a_combined_key_file_of_other_log_keys_is_refused(local: Settings, other: str
                                                          ) -> None:
    ring, keys = KeyRing.generate(), LogKeys.generate("audit.example.org")
    # Another log: the very same keys, but under another name (a log's name never
    # changes, so it is another log's file).
    # Another key: same name, other keys (under other ids, or under the same id).
    theirs = {
        "another log": LogKeys("elsewhere.example.org", keys.keys, keys.active),
        "another key": LogKeys.generate("audit.example.org"),
        "another key, same id": LogKeys("audit.example.org", (replace(
            LogKey.generate(), key_id=keys.active),), keys.active),
    }[other]
    write_private(local.key_file, combined(ring, keys))
    write_private(local.log_key_path, encode_log_keys(theirs))
    before = local.key_file.read_bytes(), local.log_key_path.read_bytes()
    for provider in (keystores.key_provider, keystores.log_key_provider):
        with pytest.raises(KeyRingError) as refused:
            provider(local)
        message = str(refused.value)
        assert str(local.key_file) in message and str(local.log_key_path) in message
        assert not [s for s in key_strings(before[0]) if s in message]
    assert (local.key_file.read_bytes(), local.log_key_path.read_bytes()) == before


def test_processes_starting_at_once_move_the_log_keys_once(local: Settings) -> None:
    ring, keys = KeyRing.generate(), LogKeys.generate()
    write_private(local.key_file, combined(ring, keys))
    results: list[Any] = []
    errors: list[BaseException] = []

    def start(n: int) -> None:
        try:
            results.append(load_log_identity(local) if n % 2 else
                           keystores.key_provider(local).load())
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    expected = LogIdentity.from_keys(keys).verifier_key(LEDGER)
    assert {r.verifier_key(LEDGER) for r in results if isinstance(r, LogIdentity)} == {expected}
    assert {r.active_kek_id for r in results if isinstance(r, KeyRing)} == {ring.active_kek_id}
    assert json.loads(local.key_file.read_bytes()) == json.loads(encode_ring(ring))
    assert same_keys(FileLogKeyProvider(local.log_key_path).load(), keys)
    assert sorted(os.listdir(local.key_file.parent)) == ["keys.json", "log-keys.json"]


def test_a_rotation_during_a_move_is_not_undone(local: Settings,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """One process is moving the log keys when another starts, moves (finding nothing left
    to move once it may look) and saves a rotated ring: the first process's rewrite of the
    key file must not bring back the ring from before the rotation. The second waits for
    the first's lock; without it, it would finish inside the first's move and lose its KEK.
    """
    ring, keys = KeyRing.generate(), LogKeys.generate()
    write_private(local.key_file, combined(ring, keys))
    inside, saved = threading.Event(), threading.Event()
    create = FileLogKeyProvider.create

    def slow_create(self: FileLogKeyProvider, made: LogKeys) -> None:
        create(self, made)
        if threading.current_thread().name == "first":
            inside.set()
            saved.wait(timeout=1.0)  # the rotation cannot finish meanwhile: it waits

    monkeypatch.setattr(FileLogKeyProvider, "create", slow_create)
    first = threading.Thread(target=keystores.key_provider, args=(local,), name="first")
    first.start()
    assert inside.wait(timeout=30)
    provider = keystores.key_provider(local)
    rotated = provider.load().with_new_kek()
    provider.save(rotated)
    saved.set()
    first.join()
    assert FileKeyProvider(local.key_file).load().keks == rotated.keks
    assert same_keys(FileLogKeyProvider(local.log_key_path).load(), keys)


def test_saving_a_ring_over_a_file_that_still_holds_log_keys_is_refused(local: Settings
                                                                        ) -> None:
    ring, keys = KeyRing.generate(), LogKeys.generate()
    original = combined(ring, keys)
    write_private(local.key_file, original)
    provider = FileKeyProvider(local.key_file)
    assert provider.load().keks == ring.keks  # a combined file still loads
    with pytest.raises(KeyRingError, match="still holds the log's signing keys"):
        provider.save(ring.with_new_kek())
    assert local.key_file.read_bytes() == original
    keystores.move_log_keys(local.key_file, local.log_key_path)
    provider.save(ring.with_new_kek())
    assert len(provider.load().keks) == 2


# -- the environment -----------------------------------------------------------------------


def test_a_combined_environment_ring_keeps_working(local: Settings) -> None:
    ring, keys = KeyRing.generate(), LogKeys.generate()
    text = combined(ring, keys).decode()
    env_local = Settings(**{**local.__dict__, "keys_json": text})
    post_and_reveal(env_local)
    assert load_log_identity(env_local).verifier_key(LEDGER) == LogIdentity.from_keys(
        keys).verifier_key(LEDGER)
    assert not local.key_file.parent.exists(), "a key file was written"

    # LEDGER_LOG_KEYS, once set, is the log's store; the ring's old copy is not used.
    other = LogKeys.generate()
    split = Settings(**{**env_local.__dict__, "log_keys_json": encode_log_keys(other).decode()})
    assert load_log_identity(split).verifier_key(LEDGER) == LogIdentity.from_keys(
        other).verifier_key(LEDGER)
    with pytest.raises(KeyRingError, match="LEDGER_LOG_KEYS"):
        keystores.log_key_provider(split).save(other.with_new_key())
    assert not local.key_file.parent.exists()


def test_an_environment_ring_with_a_log_key_file(local: Settings, tmp_path: Path) -> None:
    ring = KeyRing.generate()
    path = tmp_path / "signing" / "log.json"
    env_ring = Settings(**{**local.__dict__, "keys_json": encode_ring(ring).decode(),
                           "log_key_file": path})
    first = load_log_identity(env_ring).verifier_key(LEDGER)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(json.loads(path.read_bytes())) == LOG_STORE_FIELDS
    assert load_log_identity(env_ring).verifier_key(LEDGER) == first
    assert not local.key_file.parent.exists()


# -- the log key store itself --------------------------------------------------------------


def log_document(keys: LogKeys) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(encode_log_keys(keys))
    return document


def _only_entry(document: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = next(iter(document["log_keys"].values()))
    return entry


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda d: d.pop("active_log_key"), "come together"),
    (lambda d: d.update(keks={}), "unexpected field"),
    (lambda d: d.update(version=2), "version must be 1"),
    (lambda d: d.update(log_keys={}), "non-empty object"),
    (lambda d: d.update(log_keys=[]), "non-empty object"),
    (lambda d: _only_entry(d).pop("created_at"), "must hold public, seed and created_at"),
    (lambda d: _only_entry(d).update(seed="not base64!"), "seed is not valid base64"),
    (lambda d: _only_entry(d).update(public=1), "public must be a base64 string"),
    (lambda d: _only_entry(d).update(created_at=1), "created_at must be a string"),
    (lambda d: _only_entry(d).update(seed=None), "is not a signing key"),
    (lambda d: d.update(log_name=7), "must be strings"),
    (lambda d: d.update(log_name="bad name/"), "a log name is"),
    (lambda d: d.update(active_log_key="log-elsewhere"), "is not a signing key"),
])
def test_a_log_key_store_is_refused_naming_its_source(edit: Any, expected: str) -> None:
    keys = LogKeys.generate()
    document = log_document(keys)
    edit(document)
    with pytest.raises(KeyRingError, match=expected) as refused:
        decode_log_keys(json.dumps(document), "log key file /x")
    assert str(refused.value).startswith("log key file /x: ")
    assert not [s for s in key_strings(encode_log_keys(keys)) if s in str(refused.value)]


def test_a_log_key_whose_public_key_is_not_its_seeds_is_refused() -> None:
    one, two = LogKeys.generate().active_key(), LogKeys.generate().active_key()
    with pytest.raises(KeyRingError, match="does not belong to the seed"):
        LogKey(one.key_id, two.public, one.seed, one.created_at)
    with pytest.raises(KeyRingError, match="share an id"):
        LogKeys("audit.example.org", (one, one), one.key_id)


def test_log_key_rotation_and_retirement() -> None:
    keys = LogKeys.generate("audit.example.org")
    rotated = keys.with_new_key()
    assert rotated.name == keys.name and rotated.active != keys.active
    assert [k.signing for k in rotated.keys] == [True, True]
    with pytest.raises(KeyRingError, match="is active"):
        rotated.with_key_retired(rotated.active)
    with pytest.raises(KeyRingError, match="not in the log key store"):
        rotated.with_key_retired("log-none")
    retired = rotated.with_key_retired(keys.active)
    assert [(k.key_id, k.signing) for k in retired.keys] == [(keys.active, False),
                                                            (rotated.active, True)]
    assert retired.covers(keys) and not keys.covers(rotated)
    assert "seed" not in repr(retired) and keys.active in repr(retired)


def test_the_log_key_file_is_refused_when_exposed(local: Settings) -> None:
    provider = FileLogKeyProvider(local.log_key_path)
    keys = provider.load_or_create("audit.example.org")
    assert keys.name == "audit.example.org"
    local.log_key_path.chmod(0o640)
    with pytest.raises(KeyRingError, match="accessible to group or others"):
        provider.load()
    secret = encode_log_keys(keys).decode()
    assert not [s for s in key_strings(secret) if s in repr(EnvLogKeyProvider(secret))]


# -- settings --------------------------------------------------------------------------------


def test_the_log_key_store_settings(tmp_path: Path) -> None:
    assert Settings.from_env({}).log_key_path == Path("./var/log-keys.json")
    named = Settings.from_env({"LEDGER_KEY_FILE": "/etc/phi/keys.json",
                               "LEDGER_LOG_KEY_FILE": "/etc/sign/log.json",
                               "LEDGER_LOG_KEYS": '{"version": 1}'})
    assert (named.log_key_path, named.log_keys_json) == (Path("/etc/sign/log.json"),
                                                         '{"version": 1}')
    assert Settings.from_env({"LEDGER_KEY_FILE": "/etc/phi/k.json"}).log_key_path == Path(
        "/etc/phi/log-k.json")

    # Discovery makes the log key file absolute: from the environment relative to the
    # current directory, from a config file relative to the file; and adds no default
    # (the default follows the key file).
    (tmp_path / "phi-ledger.toml").write_text('key_file = "var/keys.json"\n'
                                              'log_key_file = "signing/log.json"\n')
    work = tmp_path / "sub"
    work.mkdir()
    found = discover({}, work)
    assert found.values["LEDGER_LOG_KEY_FILE"] == str(tmp_path / "signing" / "log.json")
    found = discover({"LEDGER_LOG_KEY_FILE": "mine.json"}, work)
    assert found.values["LEDGER_LOG_KEY_FILE"] == str(work / "mine.json")
    (tmp_path / "phi-ledger.toml").write_text('key_file = "var/keys.json"\n')
    found = discover({}, work)
    assert "LEDGER_LOG_KEY_FILE" not in found.values
    assert Settings.from_env(found.values).log_key_path == tmp_path / "var" / "log-keys.json"


# -- the command line ----------------------------------------------------------------------


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_rotating_one_kind_of_key_leaves_the_other_store_alone(local: Settings) -> None:
    """From a combined key file no service has opened yet: the KEK rotation moves the log
    keys first (it would otherwise refuse to write the ring), then each rotation writes
    only its own store."""
    ring, keys = KeyRing.generate(), LogKeys.generate()
    write_private(local.key_file, combined(ring, keys))
    migrate(local.database_url)
    env = cli_env(local)

    rotated = cli(env, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    new_ring = FileKeyProvider(local.key_file).load()
    assert set(new_ring.keks) > set(ring.keks) and new_ring.active_kek_id != ring.active_kek_id
    assert same_keys(FileLogKeyProvider(local.log_key_path).load(), keys)

    ring_bytes = local.key_file.read_bytes()
    log_rotated = cli(env, "keys", "rotate-log-key")
    assert log_rotated.returncode == 0, log_rotated.stderr
    assert local.key_file.read_bytes() == ring_bytes
    now = FileLogKeyProvider(local.log_key_path).load()
    assert now.active != keys.active and now.active in log_rotated.stdout
    assert now.covers(keys)

    log_bytes = local.log_key_path.read_bytes()
    again = cli(env, "keys", "rotate")
    assert again.returncode == 0, again.stderr
    assert local.log_key_path.read_bytes() == log_bytes
    assert decode_ring(local.key_file.read_bytes(), "k").active_kek_id not in {
        ring.active_kek_id, new_ring.active_kek_id}


def test_the_first_log_key_rotation_makes_one_key(local: Settings) -> None:
    env = cli_env(local)
    listed = cli(env, "keys", "log-keys")
    assert listed.returncode == 2 and "does not exist yet" in listed.stderr
    rotated = cli(env, "keys", "rotate-log-key")
    assert rotated.returncode == 0, rotated.stderr
    keys = FileLogKeyProvider(local.log_key_path).load()
    assert len(keys.keys) == 1 and keys.active in rotated.stdout
    assert not local.key_file.exists()
