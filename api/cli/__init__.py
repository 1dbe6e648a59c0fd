"""The ``phi-ledger`` command (typer): serve, migrate, verify, export, demo, ..."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from api.cli.admin import admin_app
from api.cli.common import err
from api.cli.common import fail as _fail
from api.cli.common import key_provider as _key_provider
from api.cli.common import load_settings as _settings
from api.cli.common import protected_store as _protected_store
from api.cli.formats import register as register_formats
from api.cli.investigations import investigations_app
from api.cli.transparency import register as register_transparency
from ledger.logs import configure_logging
from ledger.settings import Settings

if TYPE_CHECKING:  # imported where used: the command starts without the store's imports
    from ledger.chain import Verdict
    from ledger.store import LedgerStore

app = typer.Typer(
    name="phi-ledger",
    help="A hash-chained ledger of every access to protected health information.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(admin_app, name="admin")  # identities and keys: api/cli/admin.py
app.add_typer(investigations_app, name="investigations")  # api/cli/investigations.py

LedgerOption = Annotated[
    str | None, typer.Option("--ledger", "-l", help="The ledger (tenant); default: 'default'.")
]


# Commands that read or change a ledger that must already exist: run from the wrong
# directory, they would otherwise make a new, empty default database and, for example,
# print an API key the running service has never heard of.
NEEDS_EXISTING_LEDGER = frozenset(
    {"admin", "keys", "shred", "verify", "export", "checkpoint", "project", "rebuild",
     "alerts", "quarantine"})


@app.callback()
def _configure(ctx: typer.Context) -> None:
    """Find the database and key ring the same way whatever the current directory
    (ledger/config.py): the environment, then LEDGER_CONFIG or phi-ledger.toml in this
    directory or a parent, then ./var/. The answer goes into this process's environment,
    absolute, so worker processes and helpers agree with it."""
    from ledger.config import ConfigError, discover, missing_ledger

    try:
        found = discover(os.environ, Path.cwd())
    except ConfigError as error:
        raise _fail(str(error)) from None
    os.environ.update(found.values)
    asking_for_help = any(arg in ("--help", "-h") for arg in sys.argv[1:])
    if ctx.invoked_subcommand in NEEDS_EXISTING_LEDGER and not asking_for_help:
        problem = missing_ledger(found)
        if problem:
            raise _fail(problem)


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(
        min=1, help="Worker processes sharing the port (each with its own writer).")] = 1,
    ssl_certfile: Annotated[str | None, typer.Option(help="TLS certificate (PEM).")] = None,
    ssl_keyfile: Annotated[str | None, typer.Option(help="TLS private key (PEM).")] = None,
) -> None:
    """Run the HTTP service; creates or migrates its database on first start."""
    from api.serving import serve as run

    settings = _settings()
    if not settings.unsafe_plaintext:
        # Fail here, with one clear line, rather than inside the server's startup.
        store, _ = _protected_store(settings)
        store.close()
    _log_identity(settings)  # the checkpoint key too (added to an older key file here)
    run(host, port, workers=workers, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)


def _log_identity(settings: Settings) -> Any:
    from ledger.crypto.keyring import KeyRingError
    from ledger.tlog import load_log_identity

    try:
        return load_log_identity(settings)
    except KeyRingError as error:
        raise _fail(str(error)) from None


@app.command()
def migrate() -> None:
    """Bring the database schema to the newest version (alembic)."""
    from ledger.migrate import migrate as run

    settings = _settings()
    revision = run(settings.database_url)
    typer.echo(f"database at revision {revision}")


def _projector(settings: Settings) -> Any:
    from ledger.migrate import migrate as run
    from ledger.protection import protection_from_settings
    from ledger.runtime import tune_gc
    from ledger.store import StoreUnavailable, open_store
    from projections.runner import Projector

    tune_gc()
    try:
        run(settings.database_url)
        store = open_store(settings.database_url)
        return Projector(store, protection=protection_from_settings(settings, store))
    except StoreUnavailable as error:
        raise _fail(str(error)) from None
    except Exception as error:  # the driver's own errors: say which, not what they quote
        raise _fail(f"database unavailable ({type(error).__name__})") from None


def _project_with_bar(title: str, work: Any) -> int:
    import time

    started = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task(title, total=None, rate="")

        def advance(p: Any) -> None:
            rate = p.done / max(time.perf_counter() - started, 1e-9)
            progress.update(task, completed=p.done, total=p.total, rate=f"{rate:,.0f} entries/s")

        done = work(advance)
    elapsed = time.perf_counter() - started
    typer.echo(f"{title}: {done:,} entries in {elapsed:.1f}s "
               f"({done / max(elapsed, 1e-9):,.0f} entries/s)")
    return done


def _building(index: str) -> None:
    typer.echo(f"building index {index}")


def _build_deferred_indexes(projector: Any) -> None:
    """Indexes a killed rebuild left to build (see projections.indexes)."""
    from projections import indexes

    indexes.restore(projector.store, building=_building)


@app.command()
def project(
    once: Annotated[bool, typer.Option(
        "--once", help="Catch up (and record the rule set in force), then exit.")] = False,
) -> None:
    """Keep every view current: follow the ledger (LISTEN/NOTIFY on PostgreSQL, polling
    on SQLite), and run the monitoring watch beside it (the rule-set entry in the ledger,
    alerts to LEDGER_ALERT_WEBHOOK). Safe beside `serve` and beside other `project`
    processes: each entry is applied to each view exactly once, each rule set recorded
    once and each alert sent to the webhook once."""
    import signal
    import threading

    from api.monitoring import Watch, Webhook
    from ledger.clock import utc_now
    from ledger.protection import protection_from_settings

    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    projector = _projector(settings)
    try:
        # The rule-set entry is sealed and fingerprinted as the service's own entries are.
        protection = protection_from_settings(settings, projector.store)
        _project_with_bar("catching up", lambda advance: projector.catch_up(advance))
        _build_deferred_indexes(projector)
        if once:
            # The rule set in force, if an alert needs it (no webhook: nothing follows),
            # and that entry projected too: the views are current at exit.
            Watch(projector.store, protection, utc_now).step()
            projector.catch_up()
            return
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        hook = Webhook(settings.alert_webhook) if settings.alert_webhook else None
        watch = Watch(projector.store, protection, utc_now, hook)
        watcher = threading.Thread(target=watch.run, args=(stop,), name="monitoring",
                                   daemon=True)
        watcher.start()
        typer.echo("following the ledger (Ctrl-C to stop)")
        try:
            projector.follow(stop)
        finally:
            stop.set()
            watcher.join(timeout=10)
    finally:
        projector.store.close()


@app.command()
def rebuild(
    view: Annotated[str | None, typer.Argument(help="One view; all views when omitted.")] = None,
) -> None:
    """Empty views and build them again from the whole ledger, with a progress bar."""
    from projections.runner import all_views

    names = [v.name for v in all_views()]
    if view is not None and view not in names:
        raise _fail(f"no view named '{view}': the views are {', '.join(names)}")
    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    projector = _projector(settings)
    try:
        chosen = [view] if view else names
        _project_with_bar(f"rebuilding {', '.join(chosen)}",
                          lambda advance: projector.rebuild(chosen, advance, _building))
    finally:
        projector.store.close()


def _reader_store(settings: Settings) -> Any:
    """The store for a read-only command: the schema must be current; nothing is migrated
    or written (an auditor's role may hold SELECT alone)."""
    from ledger.migrate import SchemaNotCurrent, require_current
    from ledger.store import StoreUnavailable, open_store

    try:
        require_current(settings.database_url)
        return open_store(settings.database_url)
    except SchemaNotCurrent as error:
        raise _fail(str(error)) from None
    except StoreUnavailable as error:
        raise _fail(str(error)) from None
    except Exception as error:  # the driver's own errors: say which, not what they quote
        raise _fail(f"database unavailable ({type(error).__name__})") from None


@app.command()
def verify(
    ledger: LedgerOption = None,
    checkpoint: Annotated[list[Path] | None, typer.Option(
        help="A signed checkpoint held elsewhere (a witness's --state file): the chain must"
        " reproduce it, so a database rolled back with its checkpoints is caught.")] = None,
    key: Annotated[str | None, typer.Option(
        help="The log's verifier key: --checkpoint files and the newest stored checkpoint"
        " must verify with it.")] = None,
) -> None:
    """Recompute every hash chain, and the Merkle root at every signed checkpoint; exit 0
    only when all are intact.

    Without --ledger every chain in the store is checked, found from the entries
    themselves, and cross-checked against the list of ledgers."""
    from api.cli.transparency import signed_elsewhere

    settings = _settings()
    elsewhere = signed_elsewhere(checkpoint or [], key)
    store = _reader_store(settings)
    try:
        names, intact = _chains_to_verify(store, ledger, elsewhere, settings.default_ledger)
        for name in names:
            intact = _verify_chain(store, settings, name, key, elsewhere.get(name)) and intact
    finally:
        store.close()
    raise typer.Exit(0 if intact else 1)


def _chains_to_verify(
    store: LedgerStore, ledger: str | None, elsewhere: Mapping[str, object], default: str
) -> tuple[list[str], bool]:
    """The ledgers to check, and False when the store's own list of chains is broken
    (each problem printed)."""
    if ledger:
        return [ledger], True
    names, problems = store.chains()
    for problem in problems:
        typer.echo(f"BROKEN: {problem}")
    return sorted({*names, *elsewhere}) or [default], not problems


def _verify_chain(store: LedgerStore, settings: Settings, name: str, key: str | None,
                  checkpoints: dict[int, Any] | None) -> bool:
    """Check one ledger (its newest signed note against ``key`` when the key is this
    ledger's, then its chain and tree) and print the verdict; True when intact."""
    import time

    from api.cli.transparency import newest_note_problem
    from ledger.verifier import verify as verify_chain

    intact = True
    if key and key.split("+", 1)[0].rsplit("/", 1)[-1] == name:
        problem = newest_note_problem(store, name, key)
        if problem:
            intact = False
            typer.echo(f"{name}: BROKEN: {problem}")
    total = store.head(name).seq
    started = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task(f"verifying {name}", total=total, rate="")

        def advance(n: int, _task: TaskID = task, _t0: float = started) -> None:
            rate = n / max(time.perf_counter() - _t0, 1e-9)
            progress.update(_task, completed=n, rate=f"{rate:,.0f} entries/s")

        verdict = verify_chain(store, settings.database_url, name, progress=advance,
                               checkpoints=checkpoints)
    elapsed = time.perf_counter() - started
    return _print_verdict(name, verdict, elapsed) and intact


def _print_verdict(name: str, verdict: Verdict, elapsed: float) -> bool:
    from ledger.chain import VerdictKind

    if verdict.ok:
        typer.echo(
            f"{name}: intact through seq {verdict.verified_through} "
            f"({verdict.verified_through / max(elapsed, 1e-9):,.0f} entries/s)"
        )
        return True
    reason = verdict.reason or ""
    if verdict.kind is VerdictKind.TRUNCATED:
        # the reason starts with the kind's own name: say it once, as the label
        typer.echo(f"{name}: TRUNCATED: {reason.removeprefix('truncated: ')} "
                   f"(intact through seq {verdict.verified_through})")
    elif verdict.first_bad_seq is None:
        typer.echo(f"{name}: BROKEN: {reason} "
                   f"(chain intact through seq {verdict.verified_through})")
    else:
        typer.echo(
            f"{name}: BROKEN at seq {verdict.first_bad_seq}: {reason} "
            f"(intact through seq {verdict.verified_through})"
        )
    return False


@app.command()
def export(
    ledger: LedgerOption = None,
    after: Annotated[int, typer.Option(help="Start after this seq.")] = 0,
) -> None:
    """Write ledger entries as NDJSON on stdout, in chain order, exactly as hashed."""
    settings = _settings()
    store = _reader_store(settings)
    out = sys.stdout.buffer
    try:
        for _, data in store.stream(ledger or settings.default_ledger, after=after):
            out.write(data)
            out.write(b"\n")
    finally:
        out.flush()
        store.close()


@app.command()
def alerts(
    rule: Annotated[str | None, typer.Option(help="Only this rule (e.g. vip_access).")] = None,
    status: Annotated[str | None, typer.Option(
        help="Only this status: open, explained, acknowledged, dismissed.")] = None,
    ledger: LedgerOption = None,
) -> None:
    """List what continual monitoring flagged, newest first (tab-separated, no PHI)."""
    from api.cli.alerts import RULES, STATUSES, alert_lines, check_choice

    check_choice(rule, tuple(RULES), "--rule")
    check_choice(status, STATUSES, "--status")
    settings = _settings()
    store = _reader_store(settings)
    try:
        typer.echo("alert_id\trule\tseverity\tstatus\tseq\toccurred_at\tactor\texplained_by")
        for line in alert_lines(store, ledger or settings.default_ledger, rule, status):
            typer.echo(line)
    finally:
        store.close()


@app.command()
def quarantine(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """List the entries a view could not apply and set aside (tab-separated, no PHI):
    view, notification id, ledger, seq, error, when. See docs/operations.md."""
    import json

    from projections.quarantine import listing

    store = _reader_store(_settings())
    try:
        found = listing(store)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps({"count": len(found), "entries": [q.as_dict() for q in found]}))
        return
    typer.echo("view\tnotification_id\tledger\tseq\terror\tquarantined_at")
    for q in found:
        typer.echo("\t".join([q.view, str(q.notification_id), q.ledger or "",
                              "" if q.seq is None else str(q.seq), q.error, q.quarantined_at]))


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="How many events to post.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same day.")] = 7,
    ledger: LedgerOption = None,
    batch: Annotated[int, typer.Option(help="Events per ingest batch.")] = 500,
    truth: Annotated[str | None, typer.Option(
        help="Also write the alerts the day must raise to this file (JSON lines), never "
             "to the ledger.")
    ] = None,
) -> None:
    """Fill the database with a realistic synthetic answering-service day: a staff
    roster with names, dates of birth and shifts, patients (some VIP, some staff), business
    associates, calls, and every monitoring rule's violation at a few per thousand."""
    from api.workload.demo import run_demo
    from ledger.crypto.keyring import KeyRingError
    from ledger.data_keys import DataKeyUnusable

    settings = _settings()
    try:
        run_demo(settings, events=events, seed=seed, ledger=ledger, batch=batch,
                 progress=_progress(), truth=truth)
    except KeyRingError as error:
        # A missing, exposed or wrong key ring: one line naming it, not a traceback.
        raise _fail(str(error)) from None
    except DataKeyUnusable as error:
        raise _fail(f"{_key_source(settings)}: {error}") from None


@app.command()
def shred(
    patient: Annotated[str, typer.Option("--patient", help="The patient's identifier (MRN).")],
    ledger: LedgerOption = None,
    actor: Annotated[str, typer.Option(help="Who orders the shredding.")] = "operator",
    reason: Annotated[str | None, typer.Option(help="A note (no PHI): ticket, request.")] = None,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="Do not ask for confirmation (scripts).")] = False,
) -> None:
    """Crypto-shred a patient: destroy their data key and record it in the ledger.

    Irreversible: the patient's PHI in every copy of the ledger, backups included, can
    never be read again. Asks for confirmation unless --yes."""
    from ledger.clock import utc_now
    from ledger.shredding import shred_patient

    settings = _settings()
    if not yes:
        where = ledger or settings.default_ledger
        # The MRN is not repeated: output may be captured by logs (PHI stays out).
        question = (f"Destroy this patient's data key in ledger '{where}'? "
                    "Their PHI can never be read again, in any copy")
        if not typer.confirm(question, default=False, err=True):
            err.print("phi-ledger: nothing shredded", highlight=False)
            raise typer.Exit(1)
    store, protection = _protected_store(settings)
    try:
        done = shred_patient(store, protection, ledger or settings.default_ledger, patient,
                             actor=actor, reason=reason, clock=utc_now)
    finally:
        store.close()
    what = "data key destroyed" if done.keys_destroyed else "no data key held (nothing to open)"
    typer.echo(f"patient ref {done.patient_ref}: {what}; recorded at seq {done.receipt.seq}")


keys_app = typer.Typer(
    help="Key-encryption keys (status, rotation, retirement) and the log's checkpoint keys.",
    no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _key_source(settings: Settings) -> str:
    return "LEDGER_KEYS" if settings.keys_json else str(settings.key_file)


@keys_app.command("status")
def keys_status() -> None:
    """The KEKs in the ring, which one is active, and how many data keys each wraps."""
    settings = _settings()
    store, protection = _protected_store(settings)
    try:
        usage = protection.keys.kek_usage()
    finally:
        store.close()
    active = protection.ring.active_kek_id
    for kek_id in sorted(protection.ring.keks):
        mark = " (active)" if kek_id == active else ""
        typer.echo(f"{kek_id}{mark}: wraps {usage.get(kek_id, 0)} data keys")


@keys_app.command("rotate")
def keys_rotate(
    rewrap_only: Annotated[bool, typer.Option(
        "--rewrap-only", help="No new KEK: rewrap what is left under older ones.")] = False,
) -> None:
    """Make a new KEK active and rewrap every data key under it (the ledger is untouched).

    Restart running services afterwards so they wrap new data keys under the new KEK,
    then run `keys rotate --rewrap-only` once more and `keys retire OLD_ID`."""
    from ledger.crypto.keyring import KeyRingError
    from ledger.data_keys import DataKeys, DataKeyUnusable

    settings = _settings()
    store, protection = _protected_store(settings)
    try:
        # Every data key must unwrap before anything changes: a rotation that stopped
        # half-way over a corrupted key would leave a new KEK saved and keys unwrapped.
        try:
            protection.keys.check_all()
        except DataKeyUnusable as error:
            raise _fail(f"{_key_source(settings)}: {error}") from None
        ring = protection.ring
        if not rewrap_only:
            ring = ring.with_new_kek()
            try:
                _key_provider(settings).save(ring)
            except KeyRingError as error:
                raise _fail(str(error)) from None
        with _progress() as progress:
            total = sum(protection.keys.kek_usage().values())
            task = progress.add_task("rewrapping data keys", total=total, rate="")
            count = DataKeys(store, ring).rewrap_all(
                ring, progress=lambda n: progress.update(task, completed=n))
            progress.update(task, completed=total)
    finally:
        store.close()
    typer.echo(f"active KEK {ring.active_kek_id}; rewrapped {count} data keys")


@keys_app.command("retire")
def keys_retire(kek_id: Annotated[str, typer.Argument(help="The KEK to remove.")]) -> None:
    """Remove a KEK from the ring once no data key is wrapped under it."""
    from ledger.crypto.keyring import KeyRingError

    settings = _settings()
    store, protection = _protected_store(settings)
    try:
        left = protection.keys.kek_usage().get(kek_id, 0)
    finally:
        store.close()
    if left:
        raise _fail(f"{kek_id} still wraps {left} data keys: run `keys rotate --rewrap-only`")
    try:
        _key_provider(settings).save(protection.ring.without_kek(kek_id))
    except KeyRingError as error:
        raise _fail(str(error)) from None
    typer.echo(f"retired {kek_id}")


register_transparency(app, keys_app)  # verify-proof, witness, checkpoint, keys *-log-key*
register_formats(app, _fail)  # syslog (ATNA listeners), dead-letters: api/cli/formats.py


def main() -> None:
    app()

