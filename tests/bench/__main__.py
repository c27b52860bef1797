"""`make bench`: what callers of the service feel, per RPC, on SQLite and PostgreSQL.

For each database and each size of data set (orders bulk-loaded into the store's tables), a
server is started as its own process (`python -m server`) and every RPC of the four services is
called with a fixed number of calls in flight for a few seconds. For each it reports calls per
second, that rate as a ratio to the health Check no-op measured on the same server right before
and right after it (so that the machine's speed and load, which drift from minute to minute on a
shared machine, largely cancel out), and the median and 99th percentile latency; with
--repeats, each of those as often, and the run whose ratio is the median.
Meanwhile a consumer follows WatchEvents: the events' latency from change to consumer. At the
first size, on a server of one process, a consumer catches up on every event held, one event a
message and in batches; then the server takes 200 PostFunds while 0, 30 and 300 streams follow
every event, one event a message and in batches: the cost of the streams' sending to the writes,
and when the last stream has them all.
Then it times one BatchCheckEligibility of 500 orders next to 500 single CheckEligibility calls
of the same orders, and one PostFunds that pays an influencer owing a clawback to each of many
shops, and reads the server's memory. The buyer's order page (GetBuyerOrderEntry), which answers
only a buyer's token, is measured on a second server that checks the people's tokens. It prints a
table per database and writes everything as JSON.

Figures, not assertions: nothing here fails because the service is slow.

    python -m tests.bench                          # the full run (`make bench`)
    python -m tests.bench --quick --databases sqlite
    python -m tests.bench --sizes 10k --in-flight 16 --seconds 5 --json var/bench/before.json
    python -m tests.bench --sizes 10k --in-flight 16 --streams 0 --repeats 3   # a change's A/B
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import grpc

from aftersales.v1 import (
    clawback_pb2,
    clawback_pb2_grpc,
    entry_pb2,
    entry_pb2_grpc,
    resources_pb2,
    sync_pb2,
    sync_pb2_grpc,
)
from server import settings
from server.certs import DEV_ISSUER, TokenKey
from server.grpc.threads import MAX_STREAMS
from server.store import SqlStore, open_database
from tests.bench import dataset as ds
from tests.bench import events as event_latency
from tests.bench import fanout, procfs
from tests.bench import rpcs as calls
from tests.bench.load import Sample, measure
from tests.bench.report import Report, batch_line, label, parse_size
from tests.bench.server import ROOT, SWEEP_SECONDS, ServerFailed, ServerProcess
from tests.pg import PostgresServer

# Prepared orders per timed write: enough for this many calls per second over the whole
# measurement (fewer when the data set has not that many fresh orders left; the measurement
# then ends when they run out, and says so).
PREPARED_PER_SECOND = 1000

# The load generator's connections to the server; the calls in flight are spread over them.
# Enough that a server of several processes gets its share: the kernel hands each connection to
# one process (SO_REUSEPORT), and 4 connections left one of two processes with 3 or all 4 in
# most runs.
CONNECTIONS = 16

# CPU seconds some processes used so far.
CpuMeter = Callable[[], float]

# How long the no-op is measured before each RPC and after the last (at most --seconds): measured
# here, its rate moved by 10% from one second to the next and by 20% over the minute an RPC list
# takes, so each RPC is compared with the no-op of the seconds around it.
NOOP_SECONDS = 1.0

QUICK = {"sizes": "1k", "in_flight": "8", "seconds": 0.2, "debts": 100, "streams": "0,10"}

# Times each side of the batch comparison is measured (its median is reported); 1 in --quick.
BATCH_REPEATS = 5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--databases", default="sqlite,postgres", help="sqlite, postgres or both")
    p.add_argument("--sizes", default=None, help="orders in the database, e.g. 10k,1m (default)")
    p.add_argument("--in-flight", default=None, help="calls in flight, e.g. 16,64 (default)")
    p.add_argument("--seconds", type=float, default=None, help="per measurement (default 3)")
    p.add_argument(
        "--debts", type=int, default=None, help="shops the indebted influencer owes (10000)"
    )
    p.add_argument(
        "--streams",
        default=None,
        help="event streams during the writes of one server process, e.g. 0,30,300 (default)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: {QUICK['sizes']} orders, {QUICK['in_flight']} in flight, "
        f"{QUICK['seconds']} s each, {QUICK['debts']} debts, {QUICK['streams']} streams "
        "(explicit options still win)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="times each RPC is measured, in turn with the others; the table shows the run "
        "whose ratio is the median (default 1)",
    )
    p.add_argument(
        "--json", default=None, help="where to write the results (default var/bench/<time>.json)"
    )
    args = p.parse_args(argv)
    defaults = (
        QUICK
        if args.quick
        else {
            "sizes": "10k,1m",
            "in_flight": "16,64",
            "seconds": 3.0,
            "debts": 10_000,
            "streams": "0,30,300",
        }
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    for name in args.databases:
        if name not in ("sqlite", "postgres"):
            p.error(f"unknown database {name!r}: sqlite or postgres")
    try:
        args.sizes = sorted({parse_size(s) for s in args.sizes.split(",")})
        args.in_flight = sorted({int(n) for n in args.in_flight.split(",")})
        args.streams = sorted({int(n) for n in args.streams.split(",") if n.strip()})
    except ValueError as e:
        p.error(str(e))
    if min(args.sizes) < 4 * ds.SHOPS or min(args.in_flight) < 1 or args.seconds <= 0:
        p.error(f"sizes of at least {4 * ds.SHOPS} orders, 1 call in flight, seconds above 0")
    if args.repeats < 1:
        p.error("--repeats: at least 1")
    if args.debts < 0:
        p.error("--debts: a number of shops, 0 to leave the indebted influencer out")
    if args.streams and not 0 <= min(args.streams) <= max(args.streams) <= MAX_STREAMS:
        p.error(f"--streams: from 0 to {MAX_STREAMS} streams")
    return args


@contextlib.contextmanager
def database(name: str, folder: pathlib.Path) -> Iterator[tuple[str, CpuMeter | None]]:
    """The URL of an empty database: a file, or a throwaway PostgreSQL server's; and what
    measures the CPU time of the database's own processes (None: SQLite runs in the server's)."""
    if name == "sqlite":
        yield f"sqlite:///{folder / 'bench.db'}", None
        return
    server = PostgresServer().start()
    try:
        postmaster = server.postmaster_pid()
        yield server.create_database("bench"), lambda: procfs.cpu_seconds(procfs.tree(postmaster))
    finally:
        server.stop()


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_database(
    name: str,
    url: str,
    database_cpu: CpuMeter | None,
    folder: pathlib.Path,
    args: argparse.Namespace,
    report: Report,
) -> None:
    store = SqlStore(open_database(url))
    store.migrate()
    store.close()
    db = ds.Database(url)
    try:
        data = ds.Dataset(db, settings.load_policy().version)
        data.load_base()
        for size in args.sizes:
            log(f"{name}: loading {label(size)} orders")
            seconds = data.grow(size)
            report.loads.append({"database": name, "orders": size, "seconds": round(seconds, 1)})
            log(f"{name}: {label(size)} orders loaded in {seconds:.1f} s")
            server = ServerProcess(url, folder / f"server-{name}-{size}.log")
            try:
                server.wait_serving()
                consumer = event_latency.EventLatencyProcess(
                    server.address, name, size, data.newest_event()
                ).begin()
                asyncio.run(measure_rpcs(name, server, database_cpu, data, args, report))
                report.events.append(consumer.finish())
                log(f"{name}: {event_latency.line(report.events[-1])}")
                memory = server.memory_kib()
                repeats = 1 if args.quick else BATCH_REPEATS
                report.batch_checks.append(batch_versus_single(name, server, data, repeats))
                if args.debts:
                    report.debts.append(pay_debtor(name, server, data, args.debts))
                peak = server.memory_kib()
                report.servers.append(
                    {
                        "database": name,
                        "orders": size,
                        "rss_mib": round(memory["VmRSS"] / 1024, 1),
                        "own_mib": round(memory["RssAnon"] / 1024, 1),
                        "peak_rss_mib": round(peak["VmHWM"] / 1024, 1),
                    }
                )
            finally:
                server.stop()
            measure_buyer_page(name, url, database_cpu, folder, data, args, report)
            if size == args.sizes[0] and args.streams:
                measure_fanout(name, url, folder, data, args, report)
    finally:
        db.close()


def measure_fanout(
    name: str,
    url: str,
    folder: pathlib.Path,
    data: ds.Dataset,
    args: argparse.Namespace,
    report: Report,
) -> None:
    """The writes of one server process while event streams follow every event: the streams'
    sending takes turns on the process's one core with the writes."""
    server = ServerProcess(
        url,
        folder / f"server-{name}-{data.orders}-streams.log",
        # Slots for every stream (a thread each, made only when a stream takes one).
        ["--processes", "1", "--max-streams", str(MAX_STREAMS)],
    )
    try:
        server.wait_serving()
        fanout.warm_up(server.address)
        for batch in (1, fanout.BATCH):
            log(f"{name}: a consumer catching up, up to {batch} events a message")
            report.catch_ups.append(
                fanout.catch_up(server.address, name, data.orders, batch, server.cpu_seconds)
            )
            log(f"{name}: {fanout.catch_up_line(report.catch_ups[-1])}")
        for streams in args.streams:
            # Streams taking one event a message, then batches (events.proto).
            for batch in (1, fanout.BATCH) if streams else (1,):
                log(f"{name}: {fanout.WRITES} PostFunds while {streams} streams follow")
                report.fanout.append(
                    fanout.measure(
                        server.address, name, data.orders, streams, server.cpu_seconds, batch
                    )
                )
                log(f"{name}: {fanout.line(report.fanout[-1])}")
    except (ServerFailed, grpc.RpcError) as e:  # the rest of the run goes on
        report.fanout.append({"database": name, "orders": data.orders, "error": str(e)})
        log(f"{name}: the streams' part failed: {e}")
    finally:
        server.stop()


def measure_buyer_page(
    name: str,
    url: str,
    database_cpu: CpuMeter | None,
    folder: pathlib.Path,
    data: ds.Dataset,
    args: argparse.Namespace,
    report: Report,
) -> None:
    """GetBuyerOrderEntry on a server that checks the tokens of the people calls act for (a
    login key of the benchmark's own), each call with its buyer's token."""
    login = TokenKey()
    jwks = folder / "jwks.json"
    jwks.write_text(json.dumps(login.jwks()), encoding="utf-8")
    server = ServerProcess(
        url,
        folder / f"server-{name}-{data.orders}-tokens.log",
        ["--jwks", str(jwks), "--token-issuer", DEV_ISSUER],
    )
    try:
        server.wait_serving()
        asyncio.run(
            measure_rpcs(
                name,
                server,
                database_cpu,
                data,
                args,
                report,
                lambda channels, data: calls.buyer_rpcs(
                    channels, data, lambda buyer: login.mint(buyer, "buyer")
                ),
                calls.NO_OP_TOKENS,
            )
        )
    finally:
        server.stop()


async def measure_rpcs(
    name: str,
    server: ServerProcess,
    database_cpu: CpuMeter | None,
    data: ds.Dataset,
    args: argparse.Namespace,
    report: Report,
    make_rpcs: Callable[[list[grpc.aio.Channel], ds.Dataset], list[calls.Rpc]] = calls.rpcs,
    noop_name: str = calls.NO_OP,
) -> None:
    # Connections of their own (not one shared by the channels), as separate clients have.
    channels = [
        grpc.aio.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CONNECTIONS)
    ]
    try:
        noop = calls.no_op(channels)
        rpcs = make_rpcs(channels, data)
        prepared = [rpc for rpc in rpcs if rpc.prepared]
        widest = max(args.in_flight)
        # Warm up: connections, prepared statements, caches, a few prepared orders each.
        for rpc in [noop, *rpcs]:
            await measure(
                rpc.methods,
                rpc.requests(2 * widest),
                widest,
                min(1.0, args.seconds / 3),
                server.cpu_seconds,
                database_cpu,
            )
        per_pool = min(
            int(PREPARED_PER_SECOND * args.seconds),
            data.fresh_left() // (max(len(prepared), 1) * len(args.in_flight) * args.repeats),
        )
        for in_flight in args.in_flight:

            async def timed(
                rpc: calls.Rpc, seconds: float = args.seconds, in_flight: int = in_flight
            ) -> Sample:
                requests = rpc.requests(per_pool)
                return await measure(
                    rpc.methods,
                    requests,
                    in_flight,
                    seconds,
                    server.cpu_seconds,
                    database_cpu,
                    server.writer_busy_seconds if server.sqlite else None,
                )

            noop_seconds = min(NOOP_SECONDS, args.seconds)
            for repeat in range(args.repeats):
                # The no-op before each RPC, and after the last: each RPC's ratio is to the two
                # around it.
                noops = [await timed(noop, noop_seconds)]
                rows = []
                for rpc in rpcs:
                    sample = await timed(rpc)
                    noops.append(await timed(noop, noop_seconds))
                    prepared_orders = per_pool if rpc.prepared else None
                    rows.append(
                        report.add(
                            name, data.orders, in_flight, rpc.name, sample, prepared_orders, repeat
                        )
                    )
                    report.compare(rows[-1], noops[-2], noops[-1])
                    log(report.progress(rows[-1]))
                log(report.progress(report.add_noop(noops, rows, noop_name)))
    finally:
        for channel in channels:
            await channel.close(grace=None)


def batch_versus_single(
    name: str, server: ServerProcess, data: ds.Dataset, repeats: int
) -> dict[str, object]:
    """One BatchCheckEligibility of 500 orders of a shop, next to 500 CheckEligibility calls of
    the same orders by the same operator, one after another and all at once: the medians of
    `repeats` rounds, after a round to warm up."""
    shop = 0
    order_ids = calls.shop_orders(data, shop, calls.BATCH)
    operator = ds.owner_id(shop)
    result: dict[str, object] = {
        "database": name,
        "orders": data.orders,
        "batch": len(order_ids),
        "distinct_orders": calls.distinct_orders(data, shop, calls.BATCH),
        "repeats": repeats,
    }
    log(f"{name}: BatchCheckEligibility of {len(order_ids)} orders next to single calls")
    batch = entry_pb2.BatchCheckEligibilityRequest(order_ids=order_ids, operator_id=operator)
    singles = [
        entry_pb2.CheckEligibilityRequest(order_id=order_id, operator_id=operator)
        for order_id in order_ids
    ]
    timings: dict[str, list[float]] = {"batch": [], "singles": [], "singles_at_once": []}
    with grpc.insecure_channel(server.address) as channel:
        entries = entry_pb2_grpc.AfterSalesEntryStub(channel)

        def timed(kind: str, run: Callable[[], object]) -> None:
            start = time.perf_counter()
            run()
            timings[kind].append(time.perf_counter() - start)

        def one_after_another() -> None:
            for request in singles:
                entries.CheckEligibility(request, timeout=60)

        def all_at_once() -> None:
            for future in [entries.CheckEligibility.future(r, timeout=60) for r in singles]:
                future.result()

        try:
            for _ in range(repeats + 1):
                timed("batch", lambda: entries.BatchCheckEligibility(batch, timeout=60))
                timed("singles", one_after_another)
                timed("singles_at_once", all_at_once)
        except grpc.RpcError as e:
            result["error"] = f"{e.code().name}: {e.details()}"
            return result
    for kind, seconds in timings.items():
        result[f"{kind}_ms"] = round(statistics.median(seconds[1:]) * 1000, 1)
    log(batch_line(result))
    return result


def pay_debtor(name: str, server: ServerProcess, data: ds.Dataset, shops: int) -> dict[str, object]:
    """One PostFunds into the cash account of an influencer owing a clawback line to each of
    `shops` shops, enough to pay every debt: how long the call took and how many debts it paid
    (at most what one call pays), then how long until the server's sweeper had paid the rest."""
    log(f"{name}: an influencer owing {shops} shops")
    debtor = data.load_debtor(shops)
    cash = resources_pb2.AccountRef(kind=resources_pb2.ACCOUNT_KIND_CASH, owner_id=debtor)
    owed = shops * ds.LINES[0][2]
    result: dict[str, object] = {"database": name, "orders": data.orders, "debts": shops}
    with grpc.insecure_channel(server.address) as channel:
        sync = sync_pb2_grpc.SyncStub(channel)
        clawbacks = clawback_pb2_grpc.ClawbackStub(channel)
        start = time.perf_counter()
        try:
            posted = sync.PostFunds(
                sync_pb2.PostFundsRequest(
                    request_id=f"bench-pay-{debtor}", account=cash, amount=owed, memo="payout"
                ),
                timeout=600,
            )
        except grpc.RpcError as e:
            result["error"] = f"{e.code().name}: {e.details()}"
            log(report_line_debts(result))
            return result
        result["seconds"] = round(time.perf_counter() - start, 3)
        result["pending"] = posted.debts_pending
        result["recovered"] = shops - posted.balance.balance // ds.LINES[0][2]
        # The rest is the sweeper's: wait until the cash account is spent.
        deadline = time.monotonic() + 600
        balance = posted.balance.balance
        while balance and time.monotonic() < deadline:
            time.sleep(0.05)
            balance = (
                clawbacks.GetBalances(clawback_pb2.GetBalancesRequest(accounts=[cash]), timeout=60)
                .balances[0]
                .balance
            )
        result["all_paid_seconds"] = round(time.perf_counter() - start, 3) if not balance else None
        result["recovered_in_all"] = recovered_debts(clawbacks, cash)
    log(report_line_debts(result))
    return result


def recovered_debts(
    clawbacks: clawback_pb2_grpc.ClawbackStub, cash: resources_pb2.AccountRef
) -> int:
    """The debt recoveries out of `cash`, counted from its transfers."""
    recovered = 0
    token = ""
    while True:
        page = clawbacks.ListTransfers(
            clawback_pb2.ListTransfersRequest(account=cash, page_size=500, page_token=token),
            timeout=60,
        )
        recovered += sum(
            1 for t in page.transfers if t.kind == resources_pb2.TRANSFER_KIND_DEBT_RECOVERY
        )
        token = page.next_page_token
        if not token:
            return recovered


def report_line_debts(result: dict[str, object]) -> str:
    if "error" in result:
        return f"{result['database']}: PostFunds paying {result['debts']} debts: {result['error']}"
    return (
        f"{result['database']}: PostFunds paying {result['debts']} debts took "
        f"{result['seconds']} s and paid {result['recovered']}"
        + (" (the rest pending)" if result["pending"] else "")
        + f"; all {result['recovered_in_all']} paid after {result['all_paid_seconds']} s"
        + f" (sweeps every {SWEEP_SECONDS} s)"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report(vars(args))
    with tempfile.TemporaryDirectory(prefix="aftersales-bench-") as tmp:
        folder = pathlib.Path(tmp)
        for name in args.databases:
            with database(name, folder) as (url, database_cpu):
                run_database(name, url, database_cpu, folder, args, report)
    print(report.table())
    path = (
        pathlib.Path(args.json)
        if args.json
        else ROOT / "var" / "bench" / (datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + ".json")
    )
    report.write(path)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
