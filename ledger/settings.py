"""Configuration, read once from the environment at the edge and passed inward."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite:///./var/ledger.db"
DEFAULT_KEY_FILE = "./var/keys.json"
# The purpose recorded for a standard-format PHI access that names none: a sender's audit
# of its own routine operation. ``off`` turns the default off.
DEFAULT_FORMATS_PURPOSE = "HOPERAT"
NO_DEFAULT = frozenset({"off", "none"})


def default_purpose(configured: str | None) -> str | None:
    """``LEDGER_FORMATS_DEFAULT_PURPOSE`` as the intake uses it: unset gives the default,
    ``off`` (or ``none``) none at all."""
    if not configured:
        return DEFAULT_FORMATS_PURPOSE
    return None if configured.strip().lower() in NO_DEFAULT else configured.strip()


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told. Each field has a safe default.

    ``LEDGER_DATABASE_URL``  sqlite:///path (default ./var/ledger.db) or postgresql://...
    ``LEDGER_KEY_FILE``      where keys live (created with mode 0600 when absent): the PHI
                             key ring (KEKs and the blind-index key)
    ``LEDGER_KEYS``          the key ring as JSON, instead of a file (for secret stores)
    ``LEDGER_LOG_KEY_FILE``  where the transparency log's signing keys live (created with
                             mode 0600 when absent; default beside the key file, named
                             ``log-`` and the key file's name: ``./var/log-keys.json``)
    ``LEDGER_LOG_KEYS``      the log's signing keys as JSON, instead of a file
    ``LEDGER_LOG_FORMAT``    ``json`` (default) or ``console``
    ``LEDGER_LOG_LEVEL``     ``info`` (default), ``debug``, ``warning``
    ``LEDGER_DEFAULT_LEDGER``  the ledger used until access control names one
    ``LEDGER_PROJECTIONS``   ``inline`` (default): ``serve`` keeps the views current itself;
                             ``off``: a separate ``phi-ledger project`` does
    ``LEDGER_UNSAFE_PLAINTEXT``  store PHI unencrypted: for benchmarks that measure the
                             cost of encryption, never for real data
    ``LEDGER_SESSION_MINUTES``  lifetime of a login's bearer token (default 15)
    ``LEDGER_CORS_ORIGINS``  comma-separated origins allowed by CORS (default: none, no CORS)
    ``LEDGER_RATE_INGEST`` / ``_READ`` / ``_ADMIN``  requests a second per identity
    ``LEDGER_RATE_LOGIN``    login attempts a minute per client address and per name
    ``LEDGER_LOG_NAME``      the transparency log's name, when the key ring's log key is
                             made (default ``phi-ledger.<host name>``); fixed afterwards
    ``LEDGER_CHECKPOINTS``   ``inline`` (default): ``serve`` signs checkpoints; ``off``: not
    ``LEDGER_CHECKPOINT_INTERVAL_MS``  a signed checkpoint covers an append at most this
                             long after it (default 1000)
    ``LEDGER_CHECKPOINT_ENTRIES``  ... or as soon as the tree grew by this many (10,000)
    ``LEDGER_FORMATS_DEFAULT_PURPOSE``  the PurposeOfUse given to a FHIR AuditEvent or ATNA
                             message of PHI access that names none (default ``HOPERAT``;
                             ``off``: such messages are refused, or dead-lettered)
    ``LEDGER_SYSLOG_TLS`` / ``LEDGER_SYSLOG_UDP``  host:port of the ATNA syslog listeners
                             (``phi-ledger syslog``); ``LEDGER_SYSLOG_CERT``, ``_KEY``,
                             ``_CA`` the TLS server's certificate, key and the CA of
                             client certificates; ``LEDGER_SYSLOG_UDP_SENDERS`` a comma-
                             separated list of ``address=identity`` allowed over UDP
    ``LEDGER_READY_MAX_LAG``  ``/readyz`` answers not ready while a view is more than this
                             many entries behind the ledger (default 100000)
    ``LEDGER_READY_MAX_LAG_SECONDS``  ... or while the oldest entry not yet in every view
                             has waited longer than this (default 120)
    ``LEDGER_UNSAFE_NO_TREE``  appends without the Merkle tree: only for measuring its cost;
                             a ledger written so has no proofs and no checkpoints
    """

    database_url: str = DEFAULT_DATABASE_URL
    key_file: Path = field(default_factory=lambda: Path(DEFAULT_KEY_FILE))
    keys_json: str | None = None
    # The log's signing keys: a store apart from the PHI key ring (ledger.keystores).
    log_key_file: Path | None = None
    log_keys_json: str | None = None
    log_format: str = "json"
    log_level: str = "info"
    default_ledger: str = "default"
    unsafe_plaintext: bool = False
    project_inline: bool = True
    # Group commit: the most events one transaction takes.
    max_group_events: int = 5000
    # Access control (api.auth): token lifetime, CORS, rate limits, credential cache.
    session_minutes: int = 15
    cors_origins: tuple[str, ...] = ()
    rate_ingest: float = 10_000.0
    rate_read: float = 100.0
    rate_admin: float = 10.0
    rate_login: float = 10.0
    auth_cache_seconds: float = 2.0
    # Transparency (ledger.tlog, ledger.checkpointer).
    log_name: str | None = None
    checkpoints_inline: bool = True
    checkpoint_interval_ms: int = 1000
    checkpoint_entries: int = 10_000
    unsafe_no_tree: bool = False
    # Standard formats (api.formats, api.syslog).
    # Standard senders (HAPI, IPF, dcm4che) rarely carry a PurposeOfUse; an audit sink
    # that refused their PHI accesses would lose exactly what it exists to keep.
    fhir_default_purpose: str | None = DEFAULT_FORMATS_PURPOSE
    syslog_tls: str | None = None
    syslog_udp: str | None = None
    syslog_cert: Path | None = None
    syslog_key: Path | None = None
    syslog_ca: Path | None = None
    syslog_udp_senders: tuple[str, ...] = ()
    # Readiness (api/routers/health.py): how far behind the views may be.
    ready_max_lag: int = 100_000
    ready_max_lag_seconds: float = 120.0
    # Continual monitoring (api.monitoring): where new alert ids and rule codes are POSTed.
    alert_webhook: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            database_url=env.get("LEDGER_DATABASE_URL") or DEFAULT_DATABASE_URL,
            key_file=Path(env.get("LEDGER_KEY_FILE") or DEFAULT_KEY_FILE),
            keys_json=env.get("LEDGER_KEYS") or None,
            log_key_file=Path(v) if (v := env.get("LEDGER_LOG_KEY_FILE")) else None,
            log_keys_json=env.get("LEDGER_LOG_KEYS") or None,
            log_format=(env.get("LEDGER_LOG_FORMAT") or "json").lower(),
            log_level=(env.get("LEDGER_LOG_LEVEL") or "info").lower(),
            default_ledger=env.get("LEDGER_DEFAULT_LEDGER") or "default",
            unsafe_plaintext=env.get("LEDGER_UNSAFE_PLAINTEXT", "") in ("1", "true", "yes"),
            project_inline=(env.get("LEDGER_PROJECTIONS") or "inline").lower() != "off",
            session_minutes=int(env.get("LEDGER_SESSION_MINUTES") or 15),
            cors_origins=tuple(
                o.strip() for o in (env.get("LEDGER_CORS_ORIGINS") or "").split(",") if o.strip()
            ),
            rate_ingest=float(env.get("LEDGER_RATE_INGEST") or 10_000),
            rate_read=float(env.get("LEDGER_RATE_READ") or 100),
            rate_admin=float(env.get("LEDGER_RATE_ADMIN") or 10),
            rate_login=float(env.get("LEDGER_RATE_LOGIN") or 10),
            log_name=env.get("LEDGER_LOG_NAME") or None,
            checkpoints_inline=(env.get("LEDGER_CHECKPOINTS") or "inline").lower() != "off",
            checkpoint_interval_ms=int(env.get("LEDGER_CHECKPOINT_INTERVAL_MS") or 1000),
            checkpoint_entries=int(env.get("LEDGER_CHECKPOINT_ENTRIES") or 10_000),
            unsafe_no_tree=env.get("LEDGER_UNSAFE_NO_TREE", "") in ("1", "true", "yes"),
            fhir_default_purpose=default_purpose(env.get("LEDGER_FORMATS_DEFAULT_PURPOSE")),
            syslog_tls=env.get("LEDGER_SYSLOG_TLS") or None,
            syslog_udp=env.get("LEDGER_SYSLOG_UDP") or None,
            syslog_cert=Path(v) if (v := env.get("LEDGER_SYSLOG_CERT")) else None,
            syslog_key=Path(v) if (v := env.get("LEDGER_SYSLOG_KEY")) else None,
            syslog_ca=Path(v) if (v := env.get("LEDGER_SYSLOG_CA")) else None,
            syslog_udp_senders=tuple(
                s.strip() for s in (env.get("LEDGER_SYSLOG_UDP_SENDERS") or "").split(",")
                if s.strip()),
            alert_webhook=env.get("LEDGER_ALERT_WEBHOOK") or None,
            ready_max_lag=int(env.get("LEDGER_READY_MAX_LAG") or 100_000),
            ready_max_lag_seconds=float(env.get("LEDGER_READY_MAX_LAG_SECONDS") or 120),
        )

    @property
    def log_key_path(self) -> Path:
        """The log key file: ``LEDGER_LOG_KEY_FILE``, else ``log-<key file name>`` beside
        the key file (one per key file, so two rings in one folder do not share a log)."""
        if self.log_key_file is not None:
            return self.log_key_file
        return self.key_file.with_name("log-" + self.key_file.name)

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))
