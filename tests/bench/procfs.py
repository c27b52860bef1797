"""What the kernel says of a tree of processes and of the machine (/proc): who is whose child,
the CPU time they used, their memory, and the machine's idle time."""

from __future__ import annotations

import contextlib
import os

_TICKS = os.sysconf("SC_CLK_TCK")


def tree(root: int) -> list[int]:
    """`root` and its descendants, alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                    ppid = int(stat.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def cpu_seconds(pids: list[int]) -> float:
    """CPU time `pids` used so far, every thread, user and system, and that of their children
    that ended and were waited for: so over a tree of processes (`tree`), a process of it that
    ended meanwhile (a PostgreSQL backend whose connection the pool renewed) still counts, in
    its parent's. (A process of the list that ended itself counts no more.)"""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rpartition(")")[2].split()
            # Fields 14 to 17 of stat(5), utime, stime, cutime and cstime, counted after the
            # parenthesis: a child's times (its own children's among them) are added to its
            # parent's cutime and cstime once it is waited for.
            total += sum(int(v) for v in fields[11:15])
    return total / _TICKS


def memory_kib(pids: list[int]) -> dict[str, int]:
    """VmRSS (resident now), VmHWM (its peak) and RssAnon (the part that is the process's own,
    not pages of files it mapped, such as SQLite's database), in KiB, from /proc/<pid>/status,
    summed."""
    found = {"VmRSS": 0, "VmHWM": 0, "RssAnon": 0}
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in found:
                    found[key] += int(value.split()[0])
    return found


def machine_times() -> tuple[float, float]:
    """The machine's idle and total CPU time so far, every core (seconds)."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is counted in user already)
    return (fields[3] + fields[4]) / _TICKS, sum(fields[:8]) / _TICKS
