"""`make bench` keeps working as the API changes: a quick run measures every RPC without a failed
call, and the data it bulk-loads is data the service can read, on a consistent ledger."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import peewee as pw
import psycopg
import pytest

from aftersales.v1 import clawback_pb2, entry_pb2, events_pb2, sync_pb2
from server import settings
from server.domain.events import EntryOpened, EventType
from server.domain.model import EXTERNAL, AccountKind, AccountRef, ClawbackState
from server.store.schema import ExternalChangeRow, RequestRow, at
from tests.bench import dataset as ds
from tests.bench import procfs
from tests.bench.load import Sample, measure
from tests.bench.report import Report, usable_cpus
from tests.bench.rpcs import NO_OP, NO_OP_TOKENS

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_a_quick_bench_measures_every_rpc_of_the_four_services(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--quick", "--databases", "sqlite"]
        + ["--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "RecordRefund" in run.stdout  # the table
    document = json.loads(out.read_text(encoding="utf-8"))
    rows = document["rows"]
    measured = {row["rpc"].split(" ")[0] for row in rows if not row["rpc"].startswith("no-op")}
    methods = {
        method.name
        for module in (sync_pb2, entry_pb2, clawback_pb2, events_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
        if not method.server_streaming  # WatchEvents: its latency, below
    }
    assert measured == methods
    assert {NO_OP, NO_OP_TOKENS} <= {row["rpc"] for row in rows}
    # Each RPC compared with the no-op measured right before and right after it: a rate within
    # the range of the no-op's measurements on that server.
    noops = {row["rpc"]: row for row in rows if row["rpc"] in (NO_OP, NO_OP_TOKENS)}
    for row in rows:
        noop = noops[NO_OP_TOKENS if row["rpc"] in (NO_OP_TOKENS, "GetBuyerOrderEntry") else NO_OP]
        low, high = noop["noop_calls_per_s_range"]
        assert low <= row["noop_calls_per_s"] <= high, row["rpc"]
        assert row["ratio_to_noop"] == pytest.approx(
            row["calls_per_s"] / row["noop_calls_per_s"], abs=0.002
        )
    [batch] = document["batch_checks"]
    assert "error" not in batch, batch
    assert batch["batch"] == 500 and batch["batch_ms"] > 0 and batch["singles_ms"] > 0
    for row in rows:
        assert row["errors"] == {}, (row["rpc"], row["first_error"])
        assert row["calls"] > 0, row["rpc"]
        assert row["p99_ms"] >= row["p50_ms"] > 0
        # SQLite runs in the server's process: the server's and the load's CPU, no database's.
        assert set(row["cpu_us_per_call"]) == {"server", "load"}, row["rpc"]
        assert row["cpu_us_per_call"]["server"] > 0, row["rpc"]
        assert 0 <= row["machine_idle"] <= 1
        # SQLite's writer turn is held by one at a time: for at most the window, give or take
        # a turn counted whole though it began before the window (an upkeep's copy of the log
        # holds it up to tens of milliseconds; a quick window lasts a few hundred).
        assert 0 <= row["writer_busy"] <= 1.5, row["rpc"]
    # Every call of a write holds the turn: how long, a call's share of its time.
    writes = {"PutShop", "PutStaff", "PutOrder", "PostFunds", "OpenEntry", "ApplyAfterSales"}
    for row in rows:
        if row["rpc"].split(" ")[0] in writes | {"RecordRefund"}:
            assert row["writer_us_per_call"] > 0, row["rpc"]
            # (writer_busy is rounded to 3 decimals)
            assert row["writer_us_per_call"] == pytest.approx(
                row["writer_busy"] / row["calls_per_s"] * 1e6, abs=500 / row["calls_per_s"] + 1
            )
    assert "SQLite's writer in use" in run.stdout
    # A ratio cannot pass what the cores allow at its CPU time per call: above it, CPU time
    # was left out of the count (clock ticks of 10 ms over short windows: a margin).
    for row in rows:
        if "noop_calls_per_s_range" not in row:
            assert row["ratio_to_noop"] <= 1.1 * row["bounds"]["cores"], row
    assert "the cores allow" in run.stdout and "which allows" in run.stdout
    [server] = document["servers"]
    assert server["rss_mib"] >= server["own_mib"] > 0
    [events] = document["events"]
    assert "error" not in events and events["events"] > 0
    assert events["p99_ms"] >= events["p50_ms"] > 0
    [debts] = document["debts"]
    assert "error" not in debts
    assert debts["recovered"] > 0
    # A consumer catching up, one event a message, then in batches: the same events.
    one_each, batched = document["catch_ups"]
    assert "error" not in one_each and "error" not in batched, document["catch_ups"]
    assert (one_each["batch"], batched["batch"]) == (1, 50)
    assert one_each["events"] == one_each["messages"] > 0
    assert batched["events"] >= one_each["events"]  # (a sweep may have told one more since)
    assert batched["events"] / 50 <= batched["messages"] < batched["events"]
    # The writes while streams follow, one event a message, then batches: each stream received
    # every one of their events.
    fanout = document["fanout"]
    assert [(f["streams"], f["batch"]) for f in fanout] == [(0, 1), (10, 1), (10, 50)]
    for f in fanout:
        assert "error" not in f, f
        assert f["writes_seconds"] > 0 and f["server_cpu_seconds"] > 0
    assert "delivered_seconds" not in fanout[0]
    for f in fanout[1:]:
        assert f["delivered_seconds"] > 0 and f["streams_cpu_seconds"] > 0


def sample(calls: int, seconds: float = 1.0) -> Sample:
    return Sample(
        calls=calls,
        seconds=seconds,
        latencies=[0.01] * calls,
        errors=collections.Counter(),
        first_error="",
        exhausted=False,
        server_cpu=1.0,
        client_cpu=0.5,
    )


def test_each_rpc_is_given_the_ratios_its_costs_allow():
    """The bounds: every core busy with a call's CPU time (server and load generator here),
    and SQLite's one writer turn held all the time at a call's time in it."""
    report = Report({})
    report.cores = 2
    rpc = dataclasses.replace(sample(300), writer_busy=0.6)
    row = report.add("sqlite", 10_000, 16, "OpenEntry", rpc)
    report.compare(row, sample(1000), sample(1000))
    # 1.0 + 0.5 cores for 300 calls/s: 5,000 us a call; 2 cores allow 400 calls/s, 0.40 of the
    # no-op. The turn held 0.6 s a second: 2,000 us a call, 500 calls/s at most.
    assert row["cpu_us_per_call"] == {"server": 3333, "load": 1667}
    assert row["writer_us_per_call"] == 2000
    assert row["ratio_to_noop"] == 0.3
    assert row["bounds"] == {"cores": 0.4, "writer": 0.5}
    assert "the cores allow 0.40" in report.progress(row)
    assert "SQLite's writer in use 60%, 2000 us a call, which allows 0.50" in report.progress(row)
    # A read holds no turn: only the cores bound it.
    read = report.add("sqlite", 10_000, 16, "GetEntry", sample(500))
    report.compare(read, sample(1000), sample(1000))
    assert read["bounds"] == {"cores": 0.667}


def test_the_cores_are_those_the_cgroup_s_quota_allows(tmp_path):
    quota = tmp_path / "cpu.max"
    quota.write_text("max 100000\n")
    assert usable_cpus(str(quota)) == len(os.sched_getaffinity(0))
    quota.write_text("50000 100000\n")
    assert usable_cpus(str(quota)) == 0.5
    assert usable_cpus(str(tmp_path / "absent")) == len(os.sched_getaffinity(0))


def test_repeated_runs_show_the_median_one_and_the_range_of_ratios():
    """--repeats: each run of an RPC compared with the no-op around it; the table's line is the
    run whose ratio is the median, and its notes the range."""
    report = Report({})
    # Three runs of one RPC, each between two no-op measurements; the machine slowed down.
    for repeat, (noop_before, rpc, noop_after) in enumerate(
        [(1000, 300, 1000), (600, 240, 600), (800, 200, 800)]
    ):
        noops = [sample(noop_before), sample(noop_after)]
        row = report.add("sqlite", 10_000, 16, "OpenEntry", sample(rpc), repeat=repeat)
        report.compare(row, *noops)
        report.add_noop(noops, [row])

    ratios = [r["ratio_to_noop"] for r in report.rows if r["rpc"] == "OpenEntry"]
    # Compared with one no-op for all three runs (800/s), the slow run's 0.40 would read 0.30.
    assert ratios == [0.3, 0.4, 0.25]
    [line] = [line for line in report.table().splitlines() if line.startswith("OpenEntry ")]
    assert line.split()[3:5] == ["300", "0.30"]  # calls/s and ratio of the first run
    assert "median of 3: 0.25-0.40" in line
    [noop_line] = [line for line in report.table().splitlines() if line.startswith("no-op")]
    assert "median of 3: 600-1000/s" in noop_line


@pytest.mark.postgres
def test_the_cpu_of_postgresql_s_own_processes_is_measured(postgres_server):
    """What `make bench` charges PostgreSQL per call: the CPU time of its server's processes,
    the backend serving a connection among them."""
    with psycopg.connect(postgres_server.url("postgres")) as conn:
        processes = procfs.tree(postgres_server.postmaster_pid())
        before = procfs.cpu_seconds(processes)
        conn.execute("SELECT count(*) FROM generate_series(1, 2000000)").fetchone()
        spent = procfs.cpu_seconds(processes) - before
        assert conn.info.backend_pid in processes
    assert spent >= 0.05


@pytest.mark.postgres
def test_the_cpu_of_a_backend_that_ended_meanwhile_still_counts(postgres_server):
    """The server's pool renews its connections every few minutes: a backend that ended within
    a measurement must not take its CPU time with it (the database's CPU per call came out
    below zero)."""
    postmaster = postgres_server.postmaster_pid()
    before = procfs.cpu_seconds(procfs.tree(postmaster))
    with psycopg.connect(postgres_server.url("postgres")) as conn:
        conn.execute("SELECT count(*) FROM generate_series(1, 2000000)").fetchone()
        backend = conn.info.backend_pid
    deadline = time.monotonic() + 10
    while backend in procfs.tree(postmaster):
        assert time.monotonic() < deadline, "the backend did not end"
        time.sleep(0.01)
    assert procfs.cpu_seconds(procfs.tree(postmaster)) - before >= 0.05


@contextlib.contextmanager
def bulk_loaded(database_url: str, debtor_shops: int) -> Iterator[tuple[ds.Dataset, str]]:
    """The base and 8 orders per shop loaded, and an influencer owing `debtor_shops` shops:
    the data set and the influencer, its connection open until the end of the block."""
    database = ds.Database(database_url)
    try:
        data = ds.Dataset(database, settings.load_policy().version)
        data.load_base()
        data.grow(8 * ds.SHOPS)
        yield data, data.load_debtor(debtor_shops)
    finally:
        database.close()


def test_the_bulk_loaded_data_is_read_by_the_store_on_a_consistent_ledger(store, database_url):
    with bulk_loaded(database_url, 30) as (data, debtor):
        data.open_entries(data.take_fresh(3))
        data.file_applications(data.take_fresh(3))

    with store.unit_of_work(read_only=True) as uow:
        total, accounts = uow.ledger.ledger_totals()
        assert total == 0
        assert {ref: kept for ref, (kept, _) in accounts.items()} == {
            ref: derived for ref, (_, derived) in accounts.items()
        }
        wallet = AccountRef(AccountKind.ANXIN_WALLET, ds.shop_id(0))
        assert accounts[wallet][0] == ds.WALLET_FUNDS - 2 * (ds.REFUND - 1_800)
        # The external account's changes are folded into its row, as the sweep leaves them.
        assert accounts[EXTERNAL][0] < 0
        assert ExternalChangeRow.select().count() == 0

        clawback = uow.clawbacks.clawback(clawback_id="bench-c-0")
        assert clawback.state is ClawbackState.RECOVERED
        assert [line.recovered for line in clawback.lines] == [due for _, _, due in ds.LINES]

        debts = uow.clawbacks.debts_of(debtor, after=None, limit=100)
        assert len(debts) == 30
        assert {d.outstanding for d in debts} == {ds.LINES[0][2]}

        order = uow.facts.order(ds.order_id(ds.SHOPS))  # fresh: never refunded
        assert order.refundable_amount == ds.PAID
        assert len(order.commission_lines) == 4
        assert uow.entries.stored_open_entry(ds.order_id(ds.SHOPS)) is not None


def test_the_bulk_loaded_history_left_its_events_and_its_request_ids(store, database_url):
    """A database in service keeps what the history's mutations wrote besides the rows they
    changed: their events in the outbox and their request ids with their responses."""
    with bulk_loaded(database_url, 5) as (data, debtor):
        newest = data.newest_event()
    history = [ds.order_id(i) for i in range(8 * ds.SHOPS) if ds.is_history(i)]

    with store.unit_of_work(read_only=True) as uow:
        page = uow.events.read(after=0, shop_id=None, types=(), limit=1_000)
        told = collections.defaultdict(list)
        for event in page.events:
            told[event.order_id].append(event.type)
        assert {order: told[order] for order in history} == {
            order: [EventType.ENTRY_OPENED, EventType.ENTRY_USED, EventType.REFUND_RECORDED]
            for order in history
        }
        assert page.events[-1].position == newest == len(page.events) == 3 * (len(history) + 5)

        of_order = {e.type: e for e in page.events if e.order_id == ds.order_id(1)}
        opened, used = of_order[EventType.ENTRY_OPENED], of_order[EventType.ENTRY_USED]
        entry = uow.entries.entry(opened.payload.entry_id)
        assert (opened.occurred_at, opened.payload) == (
            entry.opened_at,
            EntryOpened(
                entry.entry_id, entry.opened_at, entry.expires_at, entry.operator_id, entry.note
            ),
        )
        assert (used.occurred_at, used.payload.filed_at, used.payload.application_id) == (
            entry.used_at,
            entry.used_at,
            entry.application_id,
        )
        oldest = min(event.occurred_at for event in page.events)
        assert oldest > datetime.now(UTC) - settings.load_policy().event_retention  # none to prune

        [recorded] = [
            e.payload
            for e in page.events
            if e.order_id == "bench-o-0" and e.type is EventType.REFUND_RECORDED
        ]
        clawback = uow.clawbacks.clawback(clawback_id=recorded.clawback_id)
        assert (recorded.refund_id, recorded.state) == (clawback.refund.refund_id, "RECOVERED")
        assert [line.recovered for line in recorded.lines] == [
            line.recovered for line in clawback.lines
        ]
        owed = [
            e.payload.lines[0]
            for e in page.events
            if e.type is EventType.REFUND_RECORDED and e.payload.lines[0].payee_id == debtor
        ]
        assert [line.outstanding for line in owed] == [ds.LINES[0][2]] * 5

        stored = uow.requests.get("bench-req-refund-0")
        assert stored is not None and stored.method == "RecordRefund"
        assert len(stored.fingerprint) == 64 and stored.response
    # Within the request retention too: the benchmark's sweeps forget none of them.
    with store.session():
        first = RequestRow.select(pw.fn.MIN(RequestRow.created_at)).scalar()
    assert at(first) > datetime.now(UTC) - settings.load_policy().request_retention


def test_a_window_shorter_than_a_call_still_counts_whole_calls():
    async def slow(request, timeout):
        await asyncio.sleep(0.05)

    sample = asyncio.run(measure([slow], itertools.count(), 4, 0.001, lambda: 0.0))
    assert sample.calls >= 4 and sample.seconds >= 0.05
    assert 0 < sample.rate <= 4 / 0.05 * 1.01


def test_a_short_window_of_failing_calls_ends():
    async def failing(request, timeout):
        await asyncio.sleep(0.01)
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, None, None, "down")

    sample = asyncio.run(measure([failing], itertools.count(), 4, 0.001, lambda: 0.0))
    # Each of the 4 callers sends again while fewer than 4 answers are in: at most 7 calls.
    assert sample.calls == 0 and 4 <= sample.errors["UNAVAILABLE"] < 8
    assert sample.first_error == "UNAVAILABLE: down"
