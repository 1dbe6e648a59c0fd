"""The ATNA syslog listeners: RFC 5425 (TLS, mutual: the client certificate names the
sender) and RFC 5426 (UDP, from a configured list of sender addresses only).

On a TLS connection one frame is taken at a time: the next frame is not cut from the
stream until the last one is durable (held in the inbox, to be settled as an entry or a
dead letter by the intake's settler, which runs beside the listeners). A connection whose
stream is not octet-counted syslog, or whose certificate names no identity with the
ingest role, is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from api.auth.caller import INGEST
from api.formats.codes import sha256_hex
from api.formats.syslog import MAX_FRAME, FrameError, OctetFramer
from api.syslog.intake import AtnaIntake, Sender
from ledger.store import StoreUnavailable

log = structlog.get_logger(__name__)

# Identity name -> the sender it is, or None (unknown, or without the ingest role).
Resolve = Callable[[str], Sender | None]


def address(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError("must be host:port")
    return host.strip("[]"), int(port)


def server_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """TLS 1.2+ server context that requires a client certificate issued by ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(cert), str(key))
    return context


def common_name(peercert: dict[str, Any] | None) -> str | None:
    for rdn in (peercert or {}).get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


def resolver(identities: Any) -> Resolve:
    """Senders are identities (``phi-ledger admin``) named as the certificate's CN, with
    the ingest role and an API key still valid: revoking an identity's keys revokes it
    as a sender too (its certificate may outlive it; the CA's revocation list is the
    operator's, the ledger's access control is ours)."""
    def resolve(name: str) -> Sender | None:
        found = identities.by_name(name)
        if found is None or INGEST not in found.roles:
            return None
        if not identities.holds_valid_key(found.id):
            return None
        return Sender(found.id, found.ledger)
    return resolve


# How long a sender found valid is trusted before it is looked up again (the HTTP API
# caches a valid credential as long): a revocation stops an open connection within this.
RECHECK_SECONDS = 2.0
# A connection that has not finished its TLS handshake by then is closed (asyncio's own
# default is 60 s: a host could hold a listener's descriptors with bare TCP connects).
HANDSHAKE_SECONDS = 10.0
# Senders connected at once, at most: one more is refused (closed, counted, logged).
# ATNA senders keep one long-lived connection each; an audit repository has dozens.
MAX_CONNECTIONS = 1024


class SenderCheck:
    """One sender's standing, looked up again before a message once the last look is
    older than ``every`` seconds (0: before every message)."""

    def __init__(self, resolve: Resolve, name: str, sender: Sender, every: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.resolve, self.name, self.sender = resolve, name, sender
        self.every, self.clock = every, clock
        self.checked = clock()

    async def still(self) -> Sender | None:
        if self.clock() - self.checked >= self.every:
            found = await asyncio.to_thread(self.resolve, self.name)
            if found != self.sender:  # revoked, or the name now means someone else
                return None
            self.checked = self.clock()
        return self.sender


@dataclass
class SyslogListeners:
    """The running listeners of one process."""

    intake: AtnaIntake
    resolve: Resolve
    servers: list[Any]
    settler: asyncio.Task[None] | None = None

    async def close(self) -> None:
        """Stop listening, then settling (what is held and unsettled stays held: the next
        process to start settles it)."""
        for server in self.servers:
            if isinstance(server, tuple):  # UDP: (transport, protocol)
                server[0].close()
                server[1].worker.cancel()
            else:
                server.close()
                await server.wait_closed()
        if self.settler is not None:
            self.settler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.settler
        await asyncio.to_thread(self.intake.holding.close)


class _Connections:
    """How many TLS senders are connected, against the most allowed."""

    def __init__(self, most: int) -> None:
        self.most, self.open = most, 0


async def _connection(intake: AtnaIntake, resolve: Resolve, recheck: float,
                      connections: _Connections, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
    if connections.open >= connections.most:
        intake.stats.refused_senders += 1
        log.warning("syslog.sender_refused", reason="too many connections",
                    most=connections.most)
        writer.close()
        return
    connections.open += 1
    try:
        await _sender_connection(intake, resolve, recheck, reader, writer)
    finally:
        connections.open -= 1


async def _sender_connection(intake: AtnaIntake, resolve: Resolve, recheck: float,
                             reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                             ) -> None:
    name = common_name(writer.get_extra_info("peercert"))
    sender = await asyncio.to_thread(resolve, name) if name else None
    if sender is None or name is None:
        intake.stats.refused_senders += 1
        log.warning("syslog.sender_refused", reason="certificate names no ingest identity")
        writer.close()
        return
    check = SenderCheck(resolve, name, sender, recheck)
    framer = OctetFramer(MAX_FRAME)
    try:
        while True:
            frame = framer.next_frame()
            if frame is None:
                data = await reader.read(MAX_FRAME + 8)
                if not data:
                    break
                framer.feed(data)
                continue
            # Which frames were taken, for an operator (and the crash test) to check
            # against the ledger and the dead letters after a failure.
            log.debug("syslog.frame_read", sha256=sha256_hex(frame))
            if await check.still() is None:
                # Revoked while connected: this message and the rest are refused.
                intake.stats.refused_senders += 1
                log.warning("syslog.sender_refused", reason="the sender was revoked")
                break
            await intake.take(sender, frame)
    except FrameError as error:
        log.warning("syslog.stream_refused", reason=str(error))
    except StoreUnavailable:
        log.warning("syslog.store_unavailable", action="connection closed; nothing after "
                    "the unrecorded message was read")
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


class _Datagrams(asyncio.DatagramProtocol):
    """RFC 5426: one message a datagram, from known addresses only, taken in order."""

    def __init__(self, intake: AtnaIntake, senders: dict[str, SenderCheck]) -> None:
        self.intake = intake
        self.senders = senders
        self.queue: asyncio.Queue[tuple[SenderCheck, bytes]] = asyncio.Queue(maxsize=10_000)
        self.refused: set[str] = set()
        self.worker = asyncio.get_running_loop().create_task(self._drain())

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        check = self.senders.get(addr[0])
        if check is None or len(data) > MAX_FRAME:
            self.intake.stats.refused_senders += 1
            if check is None and len(self.refused) < 1024 and addr[0] not in self.refused:
                self.refused.add(addr[0])  # once an address: a flood is one line
                log.warning("syslog.sender_refused", reason="address not on the UDP "
                            "sender list", address=addr[0])
            return
        try:
            self.queue.put_nowait((check, data))
        except asyncio.QueueFull:  # UDP is lossy by design (RFC 5426); say so in the log
            log.warning("syslog.udp_dropped", reason="queue full")

    async def _drain(self) -> None:
        while True:
            check, data = await self.queue.get()
            try:
                sender = await check.still()
                if sender is None:  # a listed sender revoked since: refused
                    self.intake.stats.refused_senders += 1
                    continue
                await self.intake.take(sender, data)
            except StoreUnavailable:
                log.warning("syslog.store_unavailable", transport="udp")


async def start(intake: AtnaIntake, resolve: Resolve, *, tls: str | None = None,
                context: ssl.SSLContext | None = None, udp: str | None = None,
                udp_senders: dict[str, str] | None = None,
                recheck: float = RECHECK_SECONDS, handshake: float = HANDSHAKE_SECONDS,
                most: int = MAX_CONNECTIONS) -> SyslogListeners:
    """Start the configured listeners; ``udp_senders`` maps an address to an identity
    name; ``recheck``: how long a sender's standing is trusted (:class:`SenderCheck`);
    ``handshake``: seconds a TLS handshake may take; ``most``: senders connected at
    once."""
    servers: list[Any] = []
    if tls:
        if context is None:
            raise ValueError("a TLS listener needs a certificate, a key and a client CA")
        host, port = address(tls)
        connections = _Connections(most)
        servers.append(await asyncio.start_server(
            lambda r, w: _connection(intake, resolve, recheck, connections, r, w), host,
            port, ssl=context, limit=MAX_FRAME + 8, ssl_handshake_timeout=handshake))
    if udp:
        senders = {}
        for addr, name in (udp_senders or {}).items():
            found = resolve(name)
            if found is None:
                raise ValueError("a UDP sender names no identity with the ingest role")
            senders[addr] = SenderCheck(resolve, name, found, recheck)
        host, port = address(udp)
        transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Datagrams(intake, senders), local_addr=(host, port))
        servers.append((transport, protocol))
    settler = asyncio.get_running_loop().create_task(intake.run_settler())
    return SyslogListeners(intake, resolve, servers, settler)


def udp_senders_of(entries: tuple[str, ...]) -> dict[str, str]:
    """``LEDGER_SYSLOG_UDP_SENDERS`` entries ``address=identity`` as a dict."""
    out = {}
    for entry in entries:
        addr, _, name = entry.partition("=")
        if not addr or not name:
            raise ValueError("LEDGER_SYSLOG_UDP_SENDERS entries are address=identity")
        out[addr.strip()] = name.strip()
    return out
