"""The results: one row per (database, orders, calls in flight, RPC), printed as a table and
written as JSON to compare commits."""

from __future__ import annotations

import collections
import json
import os
import pathlib
import platform
import statistics
import subprocess
from datetime import UTC, datetime
from typing import Any

import grpc

from server.__main__ import available_cores
from tests.bench.events import line as event_line
from tests.bench.fanout import catch_up_line
from tests.bench.fanout import line as fanout_line
from tests.bench.load import Sample
from tests.bench.rpcs import NO_OP

ROOT = pathlib.Path(__file__).resolve().parents[2]
# From this share of the time SQLite's writer turn was held, a row's notes say so: the reads
# hold it only for the server's own upkeep.
WRITER_NOTED = 0.05

_UNITS = {"k": 1_000, "m": 1_000_000}


def parse_size(text: str) -> int:
    """'10k' -> 10000, '1m' -> 1000000, '2500' -> 2500."""
    text = text.strip().lower()
    scale = _UNITS.get(text[-1:], 1)
    number = text[:-1] if scale > 1 else text
    try:
        return int(float(number) * scale)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (say 10k, 1m or 2500)") from None


def label(orders: int) -> str:
    for suffix, scale in (("m", 1_000_000), ("k", 1_000)):
        if orders >= scale and orders % scale == 0:
            return f"{orders // scale}{suffix}"
    return str(orders)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _ratio(row: dict[str, Any]) -> str:
    ratio = row["ratio_to_noop"]
    return "" if ratio is None else f"{ratio:.2f}"


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _fmean(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else statistics.fmean(values)  # type: ignore[arg-type]


def _cpu(row: dict[str, Any]) -> str:
    """CPU per call, server+database+load generator (us), and the machine's idle share."""
    per_call = row["cpu_us_per_call"]
    if any(v is None for v in per_call.values()):
        return ""
    idle = row["machine_idle"]
    return "+".join(str(v) for v in per_call.values()) + (
        f" {idle:.0%}" if idle is not None else ""
    )


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return head + ("-dirty" if dirty else "")


class Report:
    def __init__(self, options: dict[str, Any]) -> None:
        self.meta = {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": _commit(),
            "cpus": os.cpu_count(),
            "cpus_usable": usable_cpus(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
            "options": options,
        }
        self.cores = self.meta["cpus_usable"]
        self.rows: list[dict[str, Any]] = []
        self.loads: list[dict[str, Any]] = []
        self.servers: list[dict[str, Any]] = []
        self.debts: list[dict[str, Any]] = []
        self.batch_checks: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.fanout: list[dict[str, Any]] = []
        self.catch_ups: list[dict[str, Any]] = []

    def add(
        self,
        database: str,
        orders: int,
        in_flight: int,
        rpc: str,
        sample: Sample,
        prepared: int | None = None,
        repeat: int = 0,
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "database": database,
            "orders": orders,
            "in_flight": in_flight,
            "rpc": rpc,
            # Which of the --repeats runs (from 0).
            "repeat": repeat,
            "calls": sample.calls,
            "seconds": round(sample.seconds, 3),
            "calls_per_s": round(sample.rate, 1),
            "ratio_to_noop": None,
            "p50_ms": _ms(sample.percentile(50)),
            "p99_ms": _ms(sample.percentile(99)),
            "errors": dict(sample.errors),
            "first_error": sample.first_error,
            "prepared_orders": prepared,
            "ran_out_of_prepared_orders": sample.exhausted,
            "server_cpu": round(sample.server_cpu, 2),
            "client_cpu": round(sample.client_cpu, 2),
            "database_cpu": _round(sample.database_cpu, 2),
            "machine_idle": _round(sample.machine_idle, 3),
            # On SQLite: the share of the time its one writer turn was held, and for how long
            # a call on average (every write runs in it: the calls/s it allows are 1e6 / that).
            "writer_busy": _round(sample.writer_busy, 3),
            "writer_us_per_call": (
                round(sample.writer_busy / sample.rate * 1e6)
                if sample.writer_busy is not None and sample.rate
                else None
            ),
            # What one call cost each party in CPU time, in microseconds: the server's
            # processes, the database's own (PostgreSQL's), this load generator.
            "cpu_us_per_call": {
                party: round(cores / sample.rate * 1e6) if sample.rate else None
                for party, cores in (
                    ("server", sample.server_cpu),
                    ("database", sample.database_cpu),
                    ("load", sample.client_cpu),
                )
                if cores is not None
            },
        }
        self.rows.append(row)
        return row

    def compare(self, row: dict[str, Any], before: Sample, after: Sample) -> None:
        """Sets the ratio of `row` to the no-op measured right before and right after it: the
        calls of both over their time; and the ratios its costs allow (bounds)."""
        noop = (before.calls + after.calls) / ((before.seconds + after.seconds) or 1.0)
        row["noop_calls_per_s"] = round(noop, 1)
        row["ratio_to_noop"] = round(row["calls_per_s"] / noop, 3) if noop else None
        row["bounds"] = bounds(row, noop, self.cores)

    def add_noop(
        self, noops: list[Sample], rows: list[dict[str, Any]], name: str = NO_OP
    ) -> dict[str, Any]:
        """The no-op's own row for `rows` (same database, orders, calls in flight and repeat):
        every one of its measurements between them, taken together."""
        both = Sample(
            calls=sum(n.calls for n in noops),
            seconds=sum(n.seconds for n in noops),
            latencies=[latency for n in noops for latency in n.latencies],
            errors=sum((n.errors for n in noops), collections.Counter()),
            first_error=next((n.first_error for n in noops if n.first_error), ""),
            exhausted=False,
            server_cpu=statistics.fmean(n.server_cpu for n in noops),
            client_cpu=statistics.fmean(n.client_cpu for n in noops),
            database_cpu=_fmean([n.database_cpu for n in noops]),
            machine_idle=_fmean([n.machine_idle for n in noops]),
            writer_busy=_fmean([n.writer_busy for n in noops]),
        )
        first = rows[0]
        noop = self.add(
            first["database"],
            first["orders"],
            first["in_flight"],
            name,
            both,
            repeat=first["repeat"],
        )
        self.rows.insert(self.rows.index(first), self.rows.pop())
        noop["noop_calls_per_s"] = noop["calls_per_s"]
        noop["ratio_to_noop"] = 1.0 if noop["calls_per_s"] else None
        # The slowest and fastest of its measurements: how much the machine moved meanwhile.
        rates = [n.rate for n in noops]
        noop["noop_calls_per_s_range"] = [round(min(rates), 1), round(max(rates), 1)]
        return noop

    @staticmethod
    def _notes(row: dict[str, Any], runs: list[dict[str, Any]] | None = None) -> str:
        notes = []
        if runs and len(runs) > 1:
            if _is_noop(row):
                rates = [r["calls_per_s"] for r in runs]
                notes.append(f"median of {len(runs)}: {min(rates):.0f}-{max(rates):.0f}/s")
            elif ratios := [r["ratio_to_noop"] for r in runs if r["ratio_to_noop"] is not None]:
                notes.append(f"median of {len(runs)}: {min(ratios):.2f}-{max(ratios):.2f}")
        if _is_noop(row):
            low, high = row["noop_calls_per_s_range"]
            notes.append(f"its single measurements {low:.0f}-{high:.0f}/s")
        if row["errors"]:
            failed = ", ".join(f"{n} {code}" for code, n in sorted(row["errors"].items()))
            notes.append(f"failed: {failed} ({row['first_error'][:80]})")
        if row["ran_out_of_prepared_orders"]:
            notes.append(f"{row['prepared_orders']} prepared orders used up in {row['seconds']} s")
        if row["client_cpu"] >= 0.9:
            notes.append(f"load generator at {row['client_cpu']:.0%} CPU")
        limits = row.get("bounds") or {}
        if "cores" in limits:
            notes.append(f"the cores allow {limits['cores']:.2f}")
        if (row.get("writer_busy") or 0) >= WRITER_NOTED:
            notes.append(
                f"SQLite's writer in use {row['writer_busy']:.0%}, "
                f"{row['writer_us_per_call']} us a call"
                + (f", which allows {limits['writer']:.2f}" if "writer" in limits else "")
            )
        return "; ".join(notes)

    def progress(self, row: dict[str, Any]) -> str:
        return (
            f"{row['database']:<8} {label(row['orders']):>4} {row['in_flight']:>3}  "
            + (f"run {row['repeat'] + 1}  " if row["repeat"] else "")
            + f"{row['rpc']:<28} {row['calls_per_s']:>8.0f}/s {_ratio(row):>5}  "
            f"p50 {row['p50_ms']:>7.1f} ms  p99 {row['p99_ms']:>7.1f} ms  "
            f"CPU us/call {_cpu(row)} idle  {self._notes(row)}"
        ).rstrip()

    def table(self) -> str:
        """A table per database, each RPC's rows together (sizes, then calls in flight)."""
        out = []
        header = (
            f"{'RPC':<28} {'in flight':>9} {'orders':>6} {'calls/s':>8} {'/ no-op':>7} "
            f"{'p50 ms':>8} {'p99 ms':>8} {'CPU us/call, idle':>20}  notes"
        )
        for database in dict.fromkeys(r["database"] for r in self.rows):
            rows = [r for r in self.rows if r["database"] == database]
            names = list(dict.fromkeys(r["rpc"] for r in rows))
            parties = (
                "server + PostgreSQL + load generator"
                if database == "postgres"
                else "server (SQLite in it) + load generator"
            )
            out += [
                "",
                f"== {database} ==",
                f"CPU us/call: {parties}; idle: the machine's CPU left idle meanwhile",
                header,
                "-" * len(header),
            ]
            for name in names:
                runs_of: dict[tuple[int, int], list[dict[str, Any]]] = {}
                for r in rows:
                    if r["rpc"] == name:
                        runs_of.setdefault((r["orders"], r["in_flight"]), []).append(r)
                for key in sorted(runs_of):
                    runs = runs_of[key]
                    r = median_run(runs)
                    out.append(
                        f"{name:<28} {r['in_flight']:>9} {label(r['orders']):>6} "
                        f"{r['calls_per_s']:>8.0f} {_ratio(r):>7} "
                        f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {_cpu(r):>20}  "
                        f"{self._notes(r, runs)}".rstrip()
                    )
            for s in self.servers:
                if s["database"] == database:
                    out.append(
                        f"server memory at {label(s['orders'])} orders: RSS {s['rss_mib']} MiB "
                        f"after the RPCs ({s['own_mib']} MiB its own, the rest mapped files), "
                        f"peak {s['peak_rss_mib']} MiB"
                    )
            for e in self.events:
                if e["database"] == database:
                    out.append(event_line(e))
            for c in self.catch_ups:
                if c["database"] == database:
                    out.append(catch_up_line(c))
            for f in self.fanout:
                if f["database"] == database:
                    out.append(fanout_line(f))
            for d in self.debts:
                if d["database"] == database:
                    out.append(
                        f"an influencer owing {d['debts']} shops, at {label(d['orders'])} orders: "
                        + (
                            f"PostFunds failed ({d['error']})"
                            if "error" in d
                            else f"PostFunds took {d['seconds']} s and paid {d['recovered']} "
                            f"debts; all {d['recovered_in_all']} paid after "
                            f"{d['all_paid_seconds']} s (the sweeper paid the rest)"
                        )
                    )
            for b in self.batch_checks:
                if b["database"] == database:
                    out.append(batch_line(b))
            for load in self.loads:
                if load["database"] == database:
                    out.append(
                        f"loaded up to {label(load['orders'])} orders in {load['seconds']} s"
                    )
        return "\n".join(out)

    def write(self, path: pathlib.Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            **self.meta,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "rows": self.rows,
            "servers": self.servers,
            "debts": self.debts,
            "batch_checks": self.batch_checks,
            "events": self.events,
            "fanout": self.fanout,
            "catch_ups": self.catch_ups,
            "loads": self.loads,
        }
        path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def usable_cpus(quota_file: str = "/sys/fs/cgroup/cpu.max") -> float:
    """The cores this process may use: those it may run on (the server's own count), or fewer if
    its cgroup's CPU quota (`<quota> <period>` in microseconds, or `max`) allows less time a
    second."""
    cores: float = available_cores()
    try:
        quota, period = pathlib.Path(quota_file).read_text(encoding="ascii").split()[:2]
        if quota != "max":
            cores = min(cores, int(quota) / int(period))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota to read
    return cores


def bounds(row: dict[str, Any], noop_calls_per_s: float, cores: float) -> dict[str, float]:
    """The ratios to the no-op that `row`'s measured costs allow, with the no-op at
    `noop_calls_per_s`:

    - cores: every core busy with its call's CPU time (server, database and load generator
      together): the machine's cores are shared, so its calls/s cannot pass cores / that time;
    - writer (SQLite, where its calls hold the writer's turn): the one turn held all the time,
      at the time a call held it.

    A ratio measured above its cores bound means its window's CPU count is off: time left out,
    or a PostgreSQL backend that ended in it, whose whole life's time is counted then."""
    if not noop_calls_per_s:
        return {}
    found = {}
    per_call = row["cpu_us_per_call"].values()
    if per_call and None not in per_call and sum(per_call):
        found["cores"] = round(cores * 1e6 / sum(per_call) / noop_calls_per_s, 3)
    if (row.get("writer_busy") or 0) >= WRITER_NOTED and row.get("writer_us_per_call"):
        found["writer"] = round(1e6 / row["writer_us_per_call"] / noop_calls_per_s, 3)
    return found


def _is_noop(row: dict[str, Any]) -> bool:
    """Whether `row` is a no-op's own (add_noop): it alone has the range of its measurements."""
    return "noop_calls_per_s_range" in row


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Of one RPC's runs (--repeats), the one whose ratio to the no-op is the median (the
    lower of the middle two for an even number); of the no-op's, the one whose rate is."""
    if _is_noop(runs[0]):
        ordered = sorted(runs, key=lambda r: r["calls_per_s"])
    else:
        ordered = sorted(runs, key=lambda r: (r["ratio_to_noop"] or 0.0, r["calls_per_s"]))
    return ordered[(len(ordered) - 1) // 2]


def batch_line(b: dict[str, Any]) -> str:
    """BatchCheckEligibility next to as many single CheckEligibility calls, in one line."""
    if "error" in b:
        return f"{b['batch']} orders checked at {label(b['orders'])} orders: {b['error']}"
    return (
        f"{b['batch']} orders checked at {label(b['orders'])} orders ({b['distinct_orders']} "
        f"distinct, one shop): one BatchCheckEligibility {b['batch_ms']} ms; {b['batch']} "
        f"CheckEligibility {b['singles_ms']} ms one after another "
        f"({b['singles_ms'] / b['batch_ms']:.0f}x), {b['singles_at_once_ms']} ms all at once "
        f"(median of {b['repeats']})"
    )
