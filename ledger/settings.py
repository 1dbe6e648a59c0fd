"""Configuration, read once from the environment at the edge and passed inward."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite:///./var/ledger.db"
DEFAULT_KEY_FILE = "./var/keys.json"


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told. Each field has a safe default.

    ``LEDGER_DATABASE_URL``  sqlite:///path (default ./var/ledger.db) or postgresql://...
    ``LEDGER_KEY_FILE``      where keys live (created with mode 0600 when absent)
    ``LEDGER_KEYS``          the key ring as JSON, instead of a file (for secret stores)
    ``LEDGER_LOG_FORMAT``    ``json`` (default) or ``console``
    ``LEDGER_LOG_LEVEL``     ``info`` (default), ``debug``, ``warning``
    ``LEDGER_DEFAULT_LEDGER``  the ledger used until access control names one
    ``LEDGER_UNSAFE_PLAINTEXT``  store PHI unencrypted: for benchmarks that measure the
                             cost of encryption, never for real data
    """

    database_url: str = DEFAULT_DATABASE_URL
    key_file: Path = field(default_factory=lambda: Path(DEFAULT_KEY_FILE))
    keys_json: str | None = None
    log_format: str = "json"
    log_level: str = "info"
    default_ledger: str = "default"
    unsafe_plaintext: bool = False
    # Group commit: the most events one transaction takes.
    max_group_events: int = 5000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            database_url=env.get("LEDGER_DATABASE_URL") or DEFAULT_DATABASE_URL,
            key_file=Path(env.get("LEDGER_KEY_FILE") or DEFAULT_KEY_FILE),
            keys_json=env.get("LEDGER_KEYS") or None,
            log_format=(env.get("LEDGER_LOG_FORMAT") or "json").lower(),
            log_level=(env.get("LEDGER_LOG_LEVEL") or "info").lower(),
            default_ledger=env.get("LEDGER_DEFAULT_LEDGER") or "default",
            unsafe_plaintext=env.get("LEDGER_UNSAFE_PLAINTEXT", "") in ("1", "true", "yes"),
        )

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))
