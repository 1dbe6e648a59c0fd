"""The ``phi-ledger`` command (typer): serve, migrate, verify, export, demo, ..."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ledger.settings import Settings

app = typer.Typer(
    name="phi-ledger",
    help="A hash-chained ledger of every access to protected health information.",
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True)

LedgerOption = Annotated[
    str | None, typer.Option("--ledger", "-l", help="The ledger (tenant); default: 'default'.")
]


def _settings() -> Settings:
    return Settings.from_env()


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
    ssl_certfile: Annotated[str | None, typer.Option(help="TLS certificate (PEM).")] = None,
    ssl_keyfile: Annotated[str | None, typer.Option(help="TLS private key (PEM).")] = None,
) -> None:
    """Run the HTTP service; creates or migrates its database on first start."""
    import uvicorn

    uvicorn.run(
        "api.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        timeout_graceful_shutdown=10,
    )


@app.command()
def migrate() -> None:
    """Bring the database schema to the newest version (alembic)."""
    from ledger.migrate import migrate as run

    settings = _settings()
    revision = run(settings.database_url)
    typer.echo(f"database at revision {revision}")


@app.command()
def verify(ledger: LedgerOption = None) -> None:
    """Recompute the whole hash chain; exit 0 only when it is intact."""
    import time

    from ledger.migrate import migrate as run_migrations
    from ledger.store import open_store
    from ledger.verifier import verify as verify_chain

    settings = _settings()
    run_migrations(settings.database_url)
    store = open_store(settings.database_url)
    names = [ledger] if ledger else (store.ledgers() or [settings.default_ledger])
    intact = True
    try:
        for name in names:
            total = store.head(name).seq
            started = time.perf_counter()
            with _progress() as progress:
                task = progress.add_task(f"verifying {name}", total=total, rate="")

                def advance(n: int, _task: int = task, _t0: float = started) -> None:
                    rate = n / max(time.perf_counter() - _t0, 1e-9)
                    progress.update(_task, completed=n, rate=f"{rate:,.0f} entries/s")

                verdict = verify_chain(store, settings.database_url, name, progress=advance)
            elapsed = time.perf_counter() - started
            if verdict.ok:
                typer.echo(
                    f"{name}: intact through seq {verdict.verified_through} "
                    f"({verdict.verified_through / max(elapsed, 1e-9):,.0f} entries/s)"
                )
            else:
                intact = False
                typer.echo(
                    f"{name}: BROKEN at seq {verdict.first_bad_seq}: {verdict.reason} "
                    f"(intact through seq {verdict.verified_through})"
                )
    finally:
        store.close()
    raise typer.Exit(0 if intact else 1)


@app.command()
def export(
    ledger: LedgerOption = None,
    after: Annotated[int, typer.Option(help="Start after this seq.")] = 0,
) -> None:
    """Write ledger entries as NDJSON on stdout, in chain order, exactly as hashed."""
    from ledger.store import open_store

    settings = _settings()
    store = open_store(settings.database_url)
    out = sys.stdout.buffer
    try:
        for _, data in store.stream(ledger or settings.default_ledger, after=after):
            out.write(data)
            out.write(b"\n")
    finally:
        out.flush()
        store.close()


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="How many events to post.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same day.")] = 7,
    ledger: LedgerOption = None,
    batch: Annotated[int, typer.Option(help="Events per ingest batch.")] = 500,
) -> None:
    """Fill the database with a realistic synthetic answering-service day."""
    from api.demo import run_demo

    run_demo(_settings(), events=events, seed=seed, ledger=ledger, batch=batch,
             progress=_progress())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
