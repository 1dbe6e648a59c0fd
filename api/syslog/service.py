"""The ATNA intake and listeners over a running service container (``serve`` with
``LEDGER_SYSLOG_TLS``/``_UDP``, or ``phi-ledger syslog``)."""

from __future__ import annotations

from typing import Any

from api.syslog.dead_letters import DeadLetters
from api.syslog.inbox import Inbox
from api.syslog.intake import AtnaIntake
from api.syslog.listener import (
    SyslogListeners,
    resolver,
    server_context,
    start,
    udp_senders_of,
)
from ledger.settings import Settings


def intake_of(svc: Any) -> AtnaIntake:
    """The ATNA intake over ``svc``: its ingest, its store's inbox and dead letters
    (sealed under the key ring when PHI is encrypted), its clock and the configured
    default purpose."""
    ring = getattr(svc.protection, "ring", None)
    return AtnaIntake(svc.ingest, DeadLetters(svc.store, ring), Inbox(svc.store, ring),
                      svc.clock, svc.settings.fhir_default_purpose)


async def start_listeners(svc: Any) -> SyslogListeners | None:
    """Start the listeners ``svc.settings`` configures (None when none is). Raises
    ValueError naming a missing setting."""
    settings: Settings = svc.settings
    if not settings.syslog_tls and not settings.syslog_udp:
        return None
    context = None
    if settings.syslog_tls:
        if not (settings.syslog_cert and settings.syslog_key and settings.syslog_ca):
            raise ValueError("LEDGER_SYSLOG_TLS needs LEDGER_SYSLOG_CERT, LEDGER_SYSLOG_KEY "
                             "and LEDGER_SYSLOG_CA")
        context = server_context(settings.syslog_cert, settings.syslog_key, settings.syslog_ca)
    return await start(intake_of(svc), resolver(svc.access.identities),
                       tls=settings.syslog_tls, context=context, udp=settings.syslog_udp,
                       udp_senders=udp_senders_of(settings.syslog_udp_senders))
