"""Service Events through a real server and the Python client, on SQLite and PostgreSQL: the
events a consumer reads, paged or streamed, filtered, resumed, and pruned."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import grpc
import pytest

from aftersales.v1 import entry_pb2, events_pb2, events_pb2_grpc
from aftersales.v1 import resources_pb2 as pb
from client import Client, InvalidArgument, OutOfRange
from client.client import events_in
from client.errors import from_rpc_error
from server.domain.model import AccountKind, AccountRef
from server.grpc import events as events_api
from server.grpc.app import App
from server.store import events as events_store
from tests.e2e.seed import PAID, Seed, error_info


def listed(client, after=0, **filters) -> list[events_pb2.Event]:
    return list(client.list_events(after, page_size=500, **filters).events)


def types(events) -> list[str]:
    return [events_pb2.EventType.Name(e.type).removeprefix("EVENT_TYPE_") for e in events]


def test_a_late_refund_tells_opened_used_and_recorded_once_each_even_when_retried(
    client, seed, clock
):
    case = seed.case("told")
    start = client.list_events(page_size=500).next_after_position

    opened = client.open_entry(case.order_id, case.owner_id, request_id="open-told-1")
    assert client.open_entry(case.order_id, case.owner_id, request_id="open-told-1") == opened
    application = client.apply_after_sales(
        case.order_id, case.buyer_id, PAID, request_id="apply-told-1"
    )
    client.apply_after_sales(case.order_id, case.buyer_id, PAID, request_id="apply-told-1")
    for _ in range(2):  # the same refund reported twice is one refund
        clawback = client.record_refund(
            "refund-told",
            case.order_id,
            PAID,
            application_id=application.application_id,
            started_at=clock.now(),
            paid_at=clock.now(),
        )

    told = listed(client, start)
    assert types(told) == ["ENTRY_OPENED", "ENTRY_USED", "REFUND_RECORDED"]
    assert [e.order_id for e in told] == [case.order_id] * 3
    assert told[0].entry_opened.entry_id == opened.entry_id
    assert told[0].entry_opened.expires_at == opened.expires_at
    assert told[0].policy_version == opened.policy_version
    assert told[1].entry_used.application_id == application.application_id
    assert told[2].refund_recorded.clawback_id == clawback.clawback_id
    assert told[2].refund_recorded.state == clawback.state
    assert told[0].position < told[1].position < told[2].position


def test_filters_by_shop_and_type_and_a_page_resumes_past_what_it_skipped(client, seed):
    one, two = seed.case("filter-1"), seed.case("filter-2")
    start = client.list_events(page_size=500).next_after_position
    client.open_entry(one.order_id, one.owner_id)
    client.open_entry(two.order_id, two.owner_id)

    page = client.list_events(start, shop_id=two.shop_id, page_size=10)
    assert [e.order_id for e in page.events] == [two.order_id]
    assert page.next_after_position == listed(client, start)[-1].position
    funds = client.list_events(types=[events_pb2.EVENT_TYPE_FUNDS_POSTED], page_size=500)
    assert set(types(funds.events)) == {"FUNDS_POSTED"}
    assert {e.funds_posted.account.owner_id for e in funds.events} >= {one.shop_id, two.shop_id}
    assert client.list_events(page.next_after_position, page_size=10).events == []


def test_a_bad_request_names_each_bad_field(client):
    with pytest.raises(InvalidArgument) as refused:
        client.list_events(-1, from_oldest=True, types=[99], page_size=-1)
    fields = {v.field for v in refused.value.field_violations}
    assert fields == {"after_position", "from_oldest", "types[0]", "page_size"}


def test_a_watch_gives_the_backlog_then_each_commit_then_heartbeats(client, seed):
    case = seed.case("watch")
    backlog = listed(client)
    received: list = []
    got_live = threading.Event()

    def watch():
        for item in client.watch_events(heartbeat_seconds=1, heartbeats=True):
            received.append(item)
            if (
                isinstance(item, events_pb2.Event)
                and item.type == events_pb2.EVENT_TYPE_ENTRY_OPENED
            ):
                got_live.set()
            if got_live.is_set() and isinstance(item, events_pb2.Heartbeat):
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    client.open_entry(case.order_id, case.owner_id)
    watcher.join(30)
    assert not watcher.is_alive()

    events = [i for i in received if isinstance(i, events_pb2.Event)]
    assert events[: len(backlog)] == backlog
    assert types(events[len(backlog) :]) == ["ENTRY_OPENED"]
    heartbeat = received[-1]
    assert heartbeat.position == events[-1].position


def test_a_consumer_killed_mid_stream_resumes_from_its_position_without_gap_or_duplicate(
    client, seed
):
    for i in range(12):
        seed.case(f"resume-{i}")
    everything = listed(client)
    assert len(everything) > 10

    handled: list[int] = []
    for event in client.watch_events():
        handled.append(event.position)
        if len(handled) == 7:
            break  # the consumer dies; its stored position is handled[-1]
    for event in client.watch_events(handled[-1], heartbeat_seconds=1, heartbeats=True):
        if isinstance(event, events_pb2.Heartbeat):
            break
        handled.append(event.position)

    assert handled == [e.position for e in everything]


def received_until_heartbeat(client, **fields) -> list[events_pb2.WatchEventsResponse]:
    """The messages of a stream (the stub's, raw) until its first heartbeat."""
    stream = client.events.WatchEvents(
        events_pb2.WatchEventsRequest(heartbeat_seconds=1, **fields), timeout=30
    )
    messages = []
    try:
        for message in stream:
            if message.HasField("heartbeat"):
                return messages
            messages.append(message)
    finally:
        stream.cancel()
    raise AssertionError("the stream ended")


def events_of(messages: list[events_pb2.WatchEventsResponse]) -> list[events_pb2.Event]:
    """The events of a stream's messages, in order."""
    return [e for m in messages for e in events_in(m)]


def test_a_consumer_asking_for_batches_gets_the_same_events_fewer_messages(client, seed):
    for i in range(24):
        seed.case(f"batch-{i}")
    everything = listed(client)
    assert len(everything) > 20

    one_each = received_until_heartbeat(client)
    batched = received_until_heartbeat(client, max_batch_events=7)

    assert [m.event for m in one_each] == everything
    assert all(m.HasField("batch") and 2 <= len(m.batch.events) <= 7 for m in batched)
    assert events_of(batched) == everything
    # The backlog is ready at once, read in one page: full batches, but for the last.
    assert len(everything) <= events_api.STREAM_BATCH
    assert len(batched) == -(-len(everything) // 7)
    # Resumed from a position inside a batch: the rest of it, then on.
    middle = everything[len(everything) // 2].position
    resumed = received_until_heartbeat(client, after_position=middle, max_batch_events=50)
    assert events_of(resumed) == [e for e in everything if e.position > middle]
    # One event ready alone comes as one.
    last = everything[-2].position
    alone = received_until_heartbeat(client, after_position=last, max_batch_events=50)
    assert [m.WhichOneof("item") for m in alone] == ["event"]
    assert events_of(alone) == everything[-1:]


@pytest.mark.parametrize("asked", [-1, 51])
def test_a_batch_size_out_of_its_range_is_refused_naming_the_field(client, asked):
    with pytest.raises(grpc.RpcError) as refused:
        received_until_heartbeat(client, max_batch_events=asked)
    error = from_rpc_error(refused.value)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.field_violations] == ["max_batch_events"]


def test_the_client_yields_each_event_of_a_batch_once_in_order(client, seed):
    for i in range(6):
        seed.case(f"batch-client-{i}")
    everything = listed(client)
    positions = []
    for item in client.watch_events(max_batch_events=4, heartbeat_seconds=1, heartbeats=True):
        if isinstance(item, events_pb2.Heartbeat):
            assert item.position == everything[-1].position
            break
        positions.append(item.position)
    assert positions == [e.position for e in everything]


def test_a_consumer_behind_the_retention_gets_out_of_range_with_the_oldest_position_held(
    client, seed, service, clock
):
    seed.case("old-1")
    seed.case("old-2")
    old = listed(client)
    clock.advance(service.policy.event_retention + timedelta(seconds=1))
    seed.case("new-1")
    recent = listed(client, old[-1].position)

    assert service.prune_events() == len(old)

    with pytest.raises(OutOfRange) as behind:
        client.list_events(old[0].position)
    assert behind.value.oldest_position == recent[0].position
    assert error_info(behind.value).reason == "EVENTS_PRUNED"
    # Resuming after pruned_through gives every event held, the first one included.
    assert listed(client, behind.value.pruned_through) == recent
    with pytest.raises(OutOfRange):
        next(client.watch_events(0))
    assert listed(client, old[-1].position) == recent
    assert list(client.list_events(from_oldest=True, page_size=500).events) == recent


def test_from_the_oldest_reads_past_a_pruned_stretch_longer_than_one_read_s_span(
    client, seed, service, clock, monkeypatch
):
    # A read ranges over SCAN_SPAN positions at most; here more than that many are pruned.
    seed.case("stretch-1")
    seed.case("stretch-2")
    old = listed(client)
    clock.advance(service.policy.event_retention + timedelta(seconds=1))
    seed.case("stretch-new-1")
    seed.case("stretch-new-2")
    recent = listed(client, old[-1].position)
    assert service.prune_events() == len(old)
    monkeypatch.setattr(events_store, "SCAN_SPAN", 1)
    assert len(old) > 1

    first = client.list_events(from_oldest=True, page_size=500)
    assert [e.position for e in first.events] == [recent[0].position]
    assert not first.caught_up
    rest, after = [], first.next_after_position
    while True:
        page = client.list_events(after, page_size=500)
        rest += page.events
        after = page.next_after_position
        if page.caught_up:
            break
    assert rest == recent[1:]
    watched = []
    for event in client.watch_events(from_oldest=True, heartbeat_seconds=1, heartbeats=True):
        if isinstance(event, events_pb2.Heartbeat):
            break
        watched.append(event.position)
    assert watched == [e.position for e in recent]


def test_the_sweep_never_prunes_the_newest_event(client, seed, service, clock):
    seed.shop("shop-lonely", wallet_balance=100)
    clock.advance(service.policy.event_retention * 2)

    service.prune_events()

    (newest,) = client.list_events(from_oldest=True, page_size=500).events
    assert newest.funds_posted.account == pb.AccountRef(
        kind=pb.ACCOUNT_KIND_ANXIN_WALLET, owner_id="shop-lonely"
    )


def test_the_command_line_prints_one_json_line_per_event_from_a_position(
    client, seed, server, capsys
):
    import json

    from client.__main__ import main

    seed.case("cli-1")
    seed.case("cli-2")
    everything = listed(client)
    address = ["--address", f"127.0.0.1:{server.port}"]

    assert main([*address, "events", "--from", str(everything[0].position)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [int(json.loads(line)["position"]) for line in lines] == [
        e.position for e in everything[1:]
    ]
    assert main([*address, "events", "--shop", "shop-cli-2", "--type", "FUNDS_POSTED"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["funds_posted"]["account"]["owner_id"] == "shop-cli-2"


def test_the_command_line_reads_on_past_short_pages_until_caught_up(
    client, seed, server, capsys, monkeypatch
):
    import json

    from client.__main__ import main

    seed.case("short-1")
    seed.case("short-2")
    everything = listed(client)
    # One position per read: a filter's pages are short, most of them empty.
    monkeypatch.setattr(events_store, "SCAN_SPAN", 1)
    address = ["--address", f"127.0.0.1:{server.port}"]

    assert main([*address, "events", "--shop", "shop-short-2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [int(json.loads(line)["position"]) for line in lines] == [
        e.position for e in everything if e.shop_id == "shop-short-2"
    ]


def open_stream(client, timeout=None):
    stream = client.events.WatchEvents(
        events_pb2.WatchEventsRequest(heartbeat_seconds=1), timeout=timeout
    )
    next(stream)  # a heartbeat at the latest: the stream is served
    return stream


def test_a_server_serves_its_most_streams_and_refuses_more_for_a_while(client, server):
    held = [open_stream(client) for _ in range(server.events.slots.limit)]
    try:
        with pytest.raises(grpc.RpcError) as refused:
            open_stream(client)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(from_rpc_error(refused.value)).reason == "TOO_MANY_STREAMS"
    finally:
        for stream in held:
            stream.cancel()
    deadline = time.monotonic() + 10
    while server.events.slots.busy() and time.monotonic() < deadline:
        time.sleep(0.05)
    open_stream(client).cancel()


def watch_lines(caplog) -> list[logging.LogRecord]:
    """The `rpc` log lines of the WatchEvents calls that ended."""
    return [
        r
        for r in caplog.records
        if r.getMessage() == "rpc" and getattr(r, "method", "").endswith("/WatchEvents")
    ]


def watch_handled(code: grpc.StatusCode) -> float:
    from prometheus_client import REGISTRY

    labels = {"grpc_type": "SERVER_STREAMING", "grpc_service": "aftersales.v1.Events"}
    labels |= {"grpc_method": "WatchEvents", "grpc_code": code.name}
    return REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0


@pytest.mark.parametrize(
    "left", [grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED], ids=lambda c: c.name
)
def test_a_stream_its_consumer_leaves_is_logged_and_counted_with_the_code_the_consumer_got(
    client, caplog, left
):
    caplog.set_level(logging.INFO, logger="aftersales")
    before = watch_handled(left)
    if left is grpc.StatusCode.CANCELLED:
        open_stream(client).cancel()
    else:
        with pytest.raises(grpc.RpcError) as ended:
            for _ in open_stream(client, timeout=1.5):
                pass
        assert ended.value.code() is left

    deadline = time.monotonic() + 10
    while not watch_lines(caplog):
        assert time.monotonic() < deadline, "the stream's end was not logged"
        time.sleep(0.05)
    (line,) = watch_lines(caplog)
    assert line.code == left.name
    assert line.peer.startswith("ipv4:127.0.0.1:")
    assert watch_handled(left) == before + 1


def test_a_stream_whose_consumer_takes_nothing_is_cut_and_its_slot_given_back(
    seed, service, server, monkeypatch, caplog
):
    shop = seed.shop("shop-stall")
    account = AccountRef(AccountKind.ANXIN_WALLET, shop)
    for i in range(3_000):  # far more than the transport holds for a consumer that reads nothing
        service.post_funds(f"stall-funds-{i:05}", account, 1, "backlog")
    monkeypatch.setattr(events_api, "STALLED_STREAM_SECONDS", 1.0)
    # No window growth on the consumer's side: what it has not read stops the server soon.
    with grpc.insecure_channel(
        f"127.0.0.1:{server.port}", options=[("grpc.http2.bdp_probe", 0)]
    ) as channel:
        stuck = events_pb2_grpc.EventsStub(channel).WatchEvents(
            events_pb2.WatchEventsRequest(heartbeat_seconds=1)
        )
        deadline = time.monotonic() + 2
        while not server.events.slots.busy() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.events.slots.busy() == 1  # served, and never read

        deadline = time.monotonic() + 15
        while server.events.slots.busy() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.events.slots.busy() == 0
        with pytest.raises(grpc.RpcError) as cut:
            for _ in stuck:
                pass
        assert cut.value.code() is grpc.StatusCode.CANCELLED
    # The log names the consumer that was cut.
    [warning] = [r for r in caplog.records if r.getMessage().startswith("an event stream is cut")]
    assert warning.peer.startswith("ipv4:127.0.0.1:")


def test_a_draining_server_ends_its_streams_unavailable_for_consumers_to_resume_elsewhere(
    client, server
):
    stream = open_stream(client)

    server.not_serving()

    with pytest.raises(grpc.RpcError) as ended:
        for _ in stream:
            pass
    assert ended.value.code() is grpc.StatusCode.UNAVAILABLE
    assert error_info(from_rpc_error(ended.value)).reason == "SERVER_STOPPING"


def test_a_position_past_every_one_handed_out_is_out_of_range_not_a_silent_wait(client, seed):
    seed.case("ahead")
    top = listed(client)[-1].position

    with pytest.raises(OutOfRange) as ahead:
        client.list_events(top + 1_000)
    assert error_info(ahead.value).reason == "EVENTS_AHEAD"
    assert ahead.value.metadata["top"] == str(top)
    with pytest.raises(OutOfRange):
        next(client.watch_events(top + 1_000))
    assert list(client.list_events(top).events) == []  # the highest position is no error


@pytest.mark.parametrize("after", [2**63 - 10_000, 2**63 - 1])
def test_a_position_at_the_top_of_int64_is_out_of_range_too(client, seed, after):
    seed.case("int64")

    with pytest.raises(OutOfRange) as ahead:
        client.list_events(after)
    assert error_info(ahead.value).reason == "EVENTS_AHEAD"
    with pytest.raises(OutOfRange):
        next(client.watch_events(after))


def test_a_filter_matching_little_of_a_long_log_is_read_on_span_by_span(client, seed, monkeypatch):
    seed.case("span-1")
    seed.case("span-2")
    case = seed.case("span-3")
    client.open_entry(case.order_id, case.owner_id)
    everything = listed(client)
    opened = [e for e in everything if e.type == events_pb2.EVENT_TYPE_ENTRY_OPENED]
    assert opened and len(everything) >= 3
    monkeypatch.setattr(events_store, "SCAN_SPAN", 1)

    found: list[events_pb2.Event] = []
    after, calls = 0, 0
    while True:
        page = client.list_events(after, types=[events_pb2.EVENT_TYPE_ENTRY_OPENED], page_size=500)
        found += page.events
        after, calls = page.next_after_position, calls + 1
        if page.caught_up:
            break
    assert found == opened
    assert calls >= everything[-1].position  # at most one span of positions a call
    assert after == everything[-1].position


def test_streams_hold_threads_of_their_own_not_the_workers_other_calls_need(service, seed):
    """One RPC worker and two streams open: the other calls are answered, and a third stream is
    refused at once rather than queued behind the two."""
    app = App(service, "127.0.0.1:0", workers=1, max_streams=2, sweep_interval=None).start()
    try:
        with Client(f"127.0.0.1:{app.port}") as client:
            # A deadline, so that streams queued behind each other fail instead of hanging.
            held = [open_stream(client, timeout=20) for _ in range(2)]
            try:
                case = seed.case("streams-aside")
                answer = client.entries.CheckEligibility(
                    entry_pb2.CheckEligibilityRequest(
                        order_id=case.order_id, operator_id=case.owner_id
                    ),
                    timeout=5,
                )
                assert answer.eligible
                with pytest.raises(grpc.RpcError) as refused:
                    client.events.WatchEvents(
                        events_pb2.WatchEventsRequest(heartbeat_seconds=1), timeout=5
                    ).next()
                assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            finally:
                for stream in held:
                    stream.cancel()
    finally:
        app.stop(grace=1)


def test_reflection_streams_hold_threads_of_their_own_not_the_workers(service, seed):
    """grpcurl holds a server-reflection stream open while its command lasts (a WatchEvents
    followed for minutes): with one RPC worker and such a stream open, other calls are
    answered."""
    import queue

    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    app = App(service, "127.0.0.1:0", workers=1, sweep_interval=None).start()
    try:
        with Client(f"127.0.0.1:{app.port}") as client:
            case = Seed(client, seed.clock).case("reflection-aside")
            ask: queue.Queue = queue.Queue()
            ask.put(reflection_pb2.ServerReflectionRequest(list_services=""))
            stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
            held = stub.ServerReflectionInfo(iter(ask.get, None), timeout=30)
            try:
                assert next(held).list_services_response.service  # served, and kept open
                answer = client.entries.CheckEligibility(
                    entry_pb2.CheckEligibilityRequest(
                        order_id=case.order_id, operator_id=case.owner_id
                    ),
                    timeout=5,
                )
                assert answer.eligible
            finally:
                ask.put(None)
                held.cancel()
    finally:
        app.stop(grace=1)
