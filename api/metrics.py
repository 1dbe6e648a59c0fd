"""Prometheus metrics. Labels are route templates, methods and statuses: never data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_Labels = TypeVar("_Labels", bound=tuple[str, ...])


class Metrics:
    """One registry per application instance (tests build many apps in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "phi_ledger_http_requests", "HTTP requests answered",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "phi_ledger_http_request_seconds", "HTTP request latency",
            ["route"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.appended = Gauge(
            "phi_ledger_writer_events", "Events committed by this process's writer",
            registry=self.registry,
        )
        self.transactions = Gauge(
            "phi_ledger_writer_transactions", "Group-commit transactions of this process",
            registry=self.registry,
        )
        self.failures = Gauge(
            "phi_ledger_writer_failures", "Failed group-commit transactions",
            registry=self.registry,
        )
        self.seal_seconds = Gauge(
            "phi_ledger_writer_seal_seconds", "Time spent sealing PHI of appended groups",
            registry=self.registry,
        )
        self.commit_seconds = Gauge(
            "phi_ledger_writer_commit_seconds", "Time spent in append transactions",
            registry=self.registry,
        )
        self.head_seq = Gauge(
            "phi_ledger_head_seq", "Newest seq of each ledger", ["ledger"],
            registry=self.registry,
        )

        self.projection_lag = Gauge(
            "phi_ledger_projection_lag_entries",
            "Entries committed to the ledger but not yet applied to a view",
            ["view"], registry=self.registry,
        )
        self.quarantined = Gauge(
            "phi_ledger_projection_quarantined",
            "Entries a view could not apply and set aside (phi-ledger quarantine lists"
            " them; alert on any)", ["view"], registry=self.registry,
        )
        self.projection_lag_seconds = Gauge(
            "phi_ledger_projection_lag_seconds",
            "How long the oldest entry not yet in every view has waited",
            registry=self.registry,
        )

        self.checkpoints_signed = Gauge(
            "phi_ledger_checkpoints_signed", "Checkpoints this process signed",
            registry=self.registry,
        )
        self.checkpoint_refusals = Gauge(
            "phi_ledger_checkpoint_refusals",
            "Times this process refused to sign a checkpoint inconsistent with the stored "
            "ones (alert on any increase: the ledger was truncated or rewritten)",
            registry=self.registry,
        )
        self.checkpoint_size = Gauge(
            "phi_ledger_checkpoint_size", "Entries covered by each ledger's newest checkpoint",
            ["ledger"], registry=self.registry,
        )

        self.alerts = Gauge(
            "phi_ledger_alerts", "Alerts raised by continual monitoring, by rule and status"
            " (every ledger)", ["rule", "status"], registry=self.registry,
        )
        self.dead_letters = Gauge(
            "phi_ledger_dead_letters",
            "Standard-format messages kept as dead letters, not yet replayed "
            "(phi-ledger dead-letters list / replay)",
            ["ledger", "format"], registry=self.registry,
        )
        self.syslog_inbox = Gauge(
            "phi_ledger_syslog_inbox",
            "ATNA messages received and durable, not yet settled as entries or dead letters",
            registry=self.registry,
        )
        self.syslog_refused_senders = Gauge(
            "phi_ledger_syslog_refused_senders",
            "ATNA connections and datagrams this process refused: no client certificate "
            "of an ingest identity, an unlisted UDP address, a sender revoked",
            registry=self.registry,
        )
        # Label values each labelled count was last given (see set_counts).
        self._counted: dict[int, set[tuple[str, ...]]] = {}

    def set_counts(self, gauge: Gauge, counts: Mapping[_Labels, float]) -> None:
        """Set ``gauge`` to ``counts`` by label values; values counted before and absent
        now read 0 (a query of counts leaves out what it no longer finds: the last open
        dead letter replayed, the last open alert closed, and a gauge set only from the
        rows found would keep its old value for ever, and its alert would never clear)."""
        seen = self._counted.setdefault(id(gauge), set())
        for labels in seen - set(counts):
            gauge.labels(*labels).set(0)
        for labels, count in counts.items():
            gauge.labels(*labels).set(count)
        seen.update(counts)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
