"""A minimal HTTP/1.1 keep-alive load generator on asyncio + uvloop.

General-purpose clients cost more CPU per request than the server under test on a
2-core machine; this one writes pre-built request bytes and parses only the status line
and Content-Length, so the figures measure the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import uvloop


def post_request(path: str, body: bytes, host: str = "127.0.0.1", key: str | None = None
                 ) -> bytes:
    """A POST with its body; ``key`` goes in ``Authorization: Bearer``."""
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"{auth}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    """One HTTP/1.1 response off a keep-alive connection: status, head and body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return int(head[9:12]), head, body


async def _client(host: str, port: int, requests: Sequence[bytes], result: LoadResult) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for request in requests:
            started = time.perf_counter()
            writer.write(request)
            status, _, _ = await read_response(reader)
            result.latencies.append(time.perf_counter() - started)
            result.statuses[status] = result.statuses.get(status, 0) + 1
    finally:
        writer.close()


def run_load(host: str, port: int, per_client: Sequence[Sequence[bytes]]) -> LoadResult:
    """Each inner sequence is one keep-alive connection's requests, sent one at a time."""
    result = LoadResult()

    async def main() -> None:
        started = time.perf_counter()
        await asyncio.gather(*(_client(host, port, reqs, result) for reqs in per_client))
        result.seconds = time.perf_counter() - started

    uvloop.run(main())
    return result
