"""What every command of ``phi-ledger`` shares: settings read once, one way to fail, and
the store opened with its key ring. The command modules import these (never each other's
private names), so no module of the CLI imports the package's ``__init__`` back."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from ledger.settings import Settings

err = Console(stderr=True)


def load_settings() -> Settings:
    return Settings.from_env()


def fail(message: str) -> typer.Exit:
    """One red line on stderr, and exit code 2."""
    # soft_wrap: one line whatever the width, so a file path is never split.
    err.print(f"[bold red]phi-ledger:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def protected_store(settings: Settings) -> tuple[Any, Any]:
    """The store and its envelope protection, or a clean exit naming the key problem."""
    from ledger.crypto.keyring import KeyRingError
    from ledger.data_keys import DataKeys
    from ledger.migrate import migrate as run_migrations
    from ledger.protection import EnvelopeProtection, load_key_ring
    from ledger.store import open_store

    run_migrations(settings.database_url)
    store = open_store(settings.database_url)
    try:
        ring = load_key_ring(settings, store)
    except KeyRingError as error:
        store.close()
        raise fail(str(error)) from None
    return store, EnvelopeProtection(ring, DataKeys(store, ring))


def key_provider(settings: Settings) -> Any:
    """Where the PHI key ring is kept: LEDGER_KEYS, else the key file."""
    from ledger.keystores import key_provider as provider

    return provider(settings)


def log_key_provider(settings: Settings) -> Any:
    """Where the log's signing keys are kept: LEDGER_LOG_KEYS, else the log key file."""
    from ledger.keystores import log_key_provider as provider

    return provider(settings)
