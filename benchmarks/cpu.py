"""Where a benchmark's CPU went: the server, PostgreSQL, the projector, each per request.

A latency figure on these 2-core machines says little on its own: every process of the
service shares the two cores, and a page waits for whichever of them is busy. So the page
benchmarks also print the CPU each part spent per page, read from ``/proc`` (Linux; where
it is missing the figure is simply left out) around the run: the server's processes, every
PostgreSQL process (backends, WAL writer, checkpointer), and the projector's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_stat(raw: str) -> tuple[str, int, float]:
    """(command name, parent pid, CPU seconds) from the text of a ``/proc/<pid>/stat`` or
    ``/proc/<pid>/task/<tid>/stat`` file."""
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # After the name: state, ppid, ..., utime and stime are the 12th and 13th.
    return name, int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


def _stat(pid: int) -> tuple[str, int, float] | None:
    """(command name, parent pid, CPU seconds) of a live process, or None."""
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except OSError:
        return None


Sample = dict[int, tuple[str, float]]  # pid -> (part, CPU seconds so far)


def cpu_by_part(parts: Mapping[str, Iterable[int]]) -> Sample | None:
    """The CPU so far of every process of each part: the processes it names and their
    children, and ``"PostgreSQL"``: every process called ``postgres``. None without
    ``/proc``."""
    if not PROC.is_dir():
        return None
    roots = {pid: name for name, pids in parts.items() for pid in pids}
    sample: Sample = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or (stat := _stat(int(entry.name))) is None:
            continue
        command, ppid, seconds = stat
        pid = int(entry.name)
        part = "PostgreSQL" if command == "postgres" else roots.get(pid) or roots.get(ppid)
        if part is not None:
            sample[pid] = (part, seconds)
    return sample


def spent(before: Sample, after: Sample) -> dict[str, float]:
    """CPU seconds each part spent between two samples. A process that ended in between
    is left out (its last CPU time is not known); one that started is counted whole."""
    totals: dict[str, float] = {}
    for pid, (part, seconds) in after.items():
        earlier = before.get(pid)
        totals[part] = totals.get(part, 0.0) + seconds - (earlier[1] if earlier else 0.0)
    return totals


def per_request(before: Sample | None, after: Sample | None, requests: int,
                unit: str = "ms") -> str:
    """``"server 6.1 ms, PostgreSQL 3.2, projector 0.8; 10.1 ms in all"``: CPU a request
    (or an event: ``unit="us"``), by part."""
    if before is None or after is None or requests <= 0:
        return "n/a (no /proc)"
    scale = {"ms": 1e3, "us": 1e6}[unit]
    each = {part: seconds / requests * scale for part, seconds in spent(before, after).items()}
    text = [f"{part} {value:.1f}" for part, value in sorted(each.items(), key=lambda kv: -kv[1])]
    return f"{text[0]} {unit}, " + ", ".join(text[1:]) + f"; {sum(each.values()):.1f} {unit} in all"
