"""CPU time of the processes a benchmark drives, by who spent it: ingestd's
(the daemon and the consumer processes it starts), PostgreSQL's (every
server process) and RabbitMQ's, read from /proc (utime + stime, the kernel's
work for each process included, and cutime + cstime: a process that exited
between two snapshots, such as a PostgreSQL backend whose connection closed,
counts in its parent's). Other work on the machine that uses the
same servers counts too: measure on a quiet machine.
"""
from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_SERVERS = {"postgres": "PostgreSQL", "beam.smp": "RabbitMQ"}


def _processes() -> dict[int, tuple[str, int, float]]:
    """pid -> (command name, parent pid, CPU seconds so far of the process
    and of its children that exited)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        found[int(entry.name)] = (name, int(fields[1]), sum(map(int, fields[11:15])) / _TICK)
    return found


def snapshot(ingestd_pids: list[int]) -> dict[str, float]:
    """CPU seconds so far of ingestd (``ingestd_pids`` and their children),
    PostgreSQL and RabbitMQ."""
    processes = _processes()
    ours = set(ingestd_pids)
    ours |= {pid for pid, (_, parent, _) in processes.items() if parent in ours}
    totals = {"ingestd": 0.0, "PostgreSQL": 0.0, "RabbitMQ": 0.0}
    for pid, (name, _, seconds) in processes.items():
        if pid in ours:
            totals["ingestd"] += seconds
        elif name in _SERVERS:
            totals[_SERVERS[name]] += seconds
    return totals


def per_row(before: dict[str, float], after: dict[str, float], rows: int) -> dict[str, float]:
    """Microseconds of CPU a row, by who spent it, between two snapshots."""
    return {who: (after[who] - before[who]) / rows * 1e6 for who in before}
