"""Syslog as ATNA senders use it: RFC 5424 messages, octet-counted over TLS (RFC 5425,
``MSG-LEN SP SYSLOG-MSG``) or one per UDP datagram (RFC 5426).

Pure: :class:`OctetFramer` cuts frames out of a byte stream; :func:`parse_message` takes
one RFC 5424 message apart. Neither ever holds more than :data:`MAX_FRAME` bytes of a
frame it is still waiting for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_FRAME = 64 * 1024
BOM = b"\xef\xbb\xbf"
# IHE ITI-20: the MSGID of an audit message (older senders use others; any MSGID whose
# MSG is an AuditMessage is taken).
ATNA_MSGID = "IHE+RFC-3881"


class FrameError(ValueError):
    """The stream is not octet-counted syslog (or a frame is over the limit): the
    connection cannot go on, as the next frame's start is unknown."""


class OctetFramer:
    """Cuts ``MSG-LEN SP SYSLOG-MSG`` frames out of a byte stream, one at a time."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next whole frame, or None until more bytes arrive. Raises FrameError."""
        space = self._buffer.find(b" ", 0, 8)
        if space < 0:
            if len(self._buffer) >= 8 or (not self._buffer.isdigit() and self._buffer):
                raise FrameError("a frame must start with its length (RFC 5425)")
            return None
        digits = bytes(self._buffer[:space])
        if not digits.isdigit() or digits.startswith(b"0"):
            raise FrameError("a frame must start with its length (RFC 5425)")
        length = int(digits)
        if length > self.max_frame:
            raise FrameError(f"a frame is longer than {self.max_frame} bytes")
        end = space + 1 + length
        if len(self._buffer) < end:
            return None
        frame = bytes(self._buffer[space + 1:end])
        del self._buffer[:end]
        return frame

    @property
    def pending(self) -> int:
        return len(self._buffer)


_HEADER = re.compile(
    rb"^<(\d{1,3})>(\d{1,2}) (\S+) (\S+) (\S+) (\S+) (\S+) ")


@dataclass(frozen=True, slots=True)
class SyslogMessage:
    """One RFC 5424 message: the header fields ATNA uses and the MSG, BOM removed."""

    priority: int
    timestamp: str
    hostname: str
    app_name: str
    msgid: str
    msg: bytes


def _skip_structured_data(rest: bytes) -> bytes:
    """``rest`` after STRUCTURED-DATA: ``-`` or one or more ``[...]`` elements (a ``]``
    inside a quoted value is escaped as ``\\]``)."""
    if rest.startswith(b"-"):
        return rest[1:]
    i = 0
    while i < len(rest) and rest[i:i + 1] == b"[":
        i += 1
        quoted = False
        while i < len(rest):
            c = rest[i:i + 1]
            if c == b"\\" and quoted:
                i += 2
                continue
            if c == b'"':
                quoted = not quoted
            elif c == b"]" and not quoted:
                i += 1
                break
            i += 1
        else:
            raise ValueError("unterminated STRUCTURED-DATA")
    if i == 0:
        raise ValueError("STRUCTURED-DATA must be - or [...]")
    return rest[i:]


def parse_message(data: bytes) -> SyslogMessage:
    """Take an RFC 5424 message apart; raises ValueError naming what is wrong."""
    match = _HEADER.match(data)
    if match is None:
        raise ValueError("not an RFC 5424 message (<PRI>VERSION TIMESTAMP HOSTNAME "
                         "APP-NAME PROCID MSGID)")
    rest = _skip_structured_data(data[match.end():])
    if rest.startswith(b" "):
        rest = rest[1:]
    if rest.startswith(BOM):
        rest = rest[len(BOM):]
    return SyslogMessage(int(match.group(1)), match.group(3).decode("ascii", "replace"),
                         match.group(4).decode("ascii", "replace"),
                         match.group(5).decode("ascii", "replace"),
                         match.group(7).decode("ascii", "replace"), rest)


def frame(message: bytes) -> bytes:
    """``message`` octet-counted (what a sender writes)."""
    return str(len(message)).encode() + b" " + message


def syslog_message(msg: bytes, *, msgid: str = ATNA_MSGID, hostname: str = "sender",
                   app_name: str = "ATNA", timestamp: str = "2026-11-26T19:03:22.120Z",
                   bom: bool = True) -> bytes:
    """An RFC 5424 message around ``msg`` (facility authpriv 10, severity notice 5)."""
    return (f"<85>1 {timestamp} {hostname} {app_name} - {msgid} - ".encode()
            + (BOM if bom else b"") + msg)
