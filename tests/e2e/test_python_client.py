"""The Python client as its callers use it: what it refuses before any call, what it raises when a
call fails, and how it retries, against a real server in this process (SQLite) where one is
needed."""

from __future__ import annotations

import collections
import contextlib
import inspect
import itertools
import json
import logging
import pathlib
import pickle
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from aftersales.v1 import entry_pb2, events_pb2, resources_pb2
from client import Client, DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from client.__main__ import main
from server.certs import Authority

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def database_url(tmp_path):
    """SQLite only: what is tested here is the client, not the store."""
    return f"sqlite:///{tmp_path / 'aftersales.db'}"


@pytest.fixture(scope="module")
def authority() -> Authority:
    return Authority()


def run_python(script: str) -> subprocess.CompletedProcess[str]:
    """`script` in a process of its own: what gRPC aborts takes only that process down."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- TLS material -------------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["certificate_chain", "private_key"])
def test_a_client_certificate_without_its_key_or_the_reverse_is_a_value_error(authority, given):
    issued = authority.client("spiffe://test/caller")
    pem = issued.cert if given == "certificate_chain" else issued.key

    done = run_python(
        f"""
        from client import Client
        try:
            Client("127.0.0.1:1", {given}={pem!r})
        except ValueError as e:
            print("ValueError:", e)
        """
    )

    assert done.returncode == 0, done.stderr
    assert "certificate_chain and private_key go together" in done.stdout


@pytest.mark.parametrize("argument", ["root_certificates", "certificate_chain", "private_key"])
def test_tls_material_that_is_not_pem_is_a_value_error_naming_it(authority, argument):
    issued = authority.client("spiffe://test/caller")
    given = {
        "root_certificates": authority.cert_pem,
        "certificate_chain": issued.cert,
        "private_key": issued.key,
    }
    given[argument] = b"not a PEM file\n"

    with pytest.raises(ValueError, match=argument):
        Client("127.0.0.1:1", **given)  # type: ignore[arg-type]


def test_good_tls_material_makes_a_client(authority):
    issued = authority.client("spiffe://test/caller")

    Client(
        "127.0.0.1:1",
        root_certificates=authority.cert_pem,
        certificate_chain=issued.cert,
        private_key=issued.key,
    ).close()


# --- Times --------------------------------------------------------------------------------------

NAIVE = datetime(2026, 6, 1, 20, 0)  # 20:00 where? UTC, or Shanghai's clock: no way to tell
AWARE = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("method", "argument"),
    [
        (lambda c, t: c.record_refund("r", "o", 1, started_at=t, paid_at=AWARE), "started_at"),
        (lambda c, t: c.record_refund("r", "o", 1, started_at=AWARE, paid_at=t), "paid_at"),
        (lambda c, t: c.preview_clawback("o", 1, started_at=t), "started_at"),
        (lambda c, t: c.list_clawbacks("shop", start_time=t), "start_time"),
        (lambda c, t: c.list_clawbacks("shop", end_time=t), "end_time"),
    ],
)
def test_a_naive_datetime_is_refused_naming_the_argument_before_any_call(method, argument):
    with Client("127.0.0.1:1", timeout=5) as client:
        with pytest.raises(ValueError, match=f"^{argument} is a naive datetime"):
            method(client, NAIVE)


# --- Statuses ------------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(
    service: str, method: str, handler: grpc.RpcMethodHandler, workers: int
) -> Iterator[str]:
    """A stand-in server of one method of an aftersales.v1 service, on a free port: its
    address."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(f"aftersales.v1.{service}", {method: handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def _get_entry_handler(get_entry) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        get_entry,
        request_deserializer=entry_pb2.GetEntryRequest.FromString,
        response_serializer=resources_pb2.Entry.SerializeToString,
    )


@pytest.fixture
def rewriting_proxy():
    """A server standing for a proxy that rewrote a refusal's status to UNAVAILABLE and kept the
    original status's details trailer, now of another code and message than the call's."""
    trailer = status_pb2.Status(code=code_pb2.NOT_FOUND, message="entry 'e' not found")

    def get_entry(request, context):
        context.set_trailing_metadata([("grpc-status-details-bin", trailer.SerializeToString())])
        context.abort(grpc.StatusCode.UNAVAILABLE, "upstream connect error")

    with serving("AfterSalesEntry", "GetEntry", _get_entry_handler(get_entry), 2) as address:
        yield address


def test_details_of_another_status_than_the_call_s_give_the_call_s_typed_error(rewriting_proxy):
    with Client(rewriting_proxy, timeout=5) as client:
        with pytest.raises(Unavailable) as failed:
            client.get_entry("e")

    assert failed.value.message == "upstream connect error"
    assert failed.value.details == []


def test_the_cli_reports_such_a_status_as_json_not_a_traceback(rewriting_proxy, capsys):
    code = main(["--address", rewriting_proxy, "--timeout", "5", "get", "e"])

    assert code == 5
    report = json.loads(capsys.readouterr().err)
    assert (report["code"], report["details"]) == ("UNAVAILABLE", [])


# --- Tokens --------------------------------------------------------------------------------------


def test_a_token_read_from_a_file_with_its_newline_is_sent_without_it(
    people_server, login, tmp_path
):
    token_file = tmp_path / "token"
    token_file.write_text(login.mint("buyer-1", "buyer") + "\n", encoding="utf-8")

    with Client(
        f"127.0.0.1:{people_server.port}", token=token_file.read_text(), timeout=5
    ) as buyer:
        # The server knew the buyer: the order is simply none of theirs.
        with pytest.raises(NotFound):
            buyer.get_buyer_order_entry("order-nobody-has")


@pytest.mark.parametrize("token", ["eyJ.a\nb.sig", "eyJ.a\x00b.sig", "eyJ.\u00e9.sig"])
def test_a_token_no_header_may_carry_is_a_value_error(token):
    with pytest.raises(ValueError, match="^token "):
        Client("127.0.0.1:1", token=token)


# --- Timeouts ------------------------------------------------------------------------------------


@pytest.fixture
def silent_address():
    """An address that takes connections and never answers: a call there waits out its deadline."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield f"127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.get_entry("entry-1", timeout=0.3),
        lambda c: c.post_funds(pb_cash("kol-1"), 100, timeout=0.3),
        lambda c: list(c.iter_entries(shop_id="shop-1", timeout=0.3)),
    ],
)
def test_a_call_given_its_own_timeout_waits_that_long_and_leaves_the_client_s(silent_address, call):
    with Client(silent_address, timeout=30) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            call(client)

        assert time.monotonic() - started < 5
        assert client.timeout == 30


def pb_cash(owner_id: str) -> resources_pb2.AccountRef:
    return resources_pb2.AccountRef(kind=resources_pb2.ACCOUNT_KIND_CASH, owner_id=owner_id)


# --- Request ids ---------------------------------------------------------------------------------


def test_a_mutation_whose_outcome_is_unknown_is_done_once_when_sent_again_with_its_error_s_id(
    people_server,
):
    """No answer in time: the top-up may have been done or not. The error names the request id
    the client made for it; sent again with it, twice, the money moves once."""
    cash = pb_cash("kol-retry")
    with Client(f"127.0.0.1:{people_server.port}", timeout=10) as client:
        with pytest.raises(DeadlineExceeded) as lost:
            client.post_funds(cash, 5_000, memo="top-up", timeout=0.000001)
        request_id = lost.value.request_id
        assert request_id

        first = client.post_funds(cash, 5_000, memo="top-up", request_id=request_id)
        second = client.post_funds(cash, 5_000, memo="top-up", request_id=request_id)

        assert first == second
        assert client.get_balances([cash]) == {(cash.kind, cash.owner_id): 5_000}


def test_a_refused_mutation_names_its_request_id_and_a_read_none(people_server):
    with Client(f"127.0.0.1:{people_server.port}", timeout=10) as client:
        with pytest.raises(InvalidArgument) as given:
            client.post_funds(pb_cash("kol-1"), 0, request_id="req-given-0001")
        with pytest.raises(InvalidArgument) as made:
            client.post_funds(pb_cash("kol-1"), 0)
        with pytest.raises(NotFound) as read:
            client.get_entry("entry-nobody-has")

    assert given.value.request_id == "req-given-0001"
    assert made.value.request_id and made.value.request_id != "req-given-0001"
    assert read.value.request_id is None


# --- Retries -------------------------------------------------------------------------------------


@pytest.fixture
def database_down():
    """A server whose database is down: every GetEntry is UNAVAILABLE with the details the
    service sends (ErrorInfo retryable, RetryInfo 1 s), after 1.5 s for an entry id starting
    "slow-". Yields its address and, per entry id asked for, the moments each attempt came."""
    attempts: dict[str, list[float]] = collections.defaultdict(list)
    retry_delay = duration_pb2.Duration(seconds=1)
    down = rpc_status.to_status(
        status_pb2.Status(
            code=code_pb2.UNAVAILABLE,
            message="the database is unavailable",
            details=[
                _packed(
                    error_details_pb2.ErrorInfo(
                        reason="DATABASE_UNAVAILABLE", metadata={"retryable": "true"}
                    )
                ),
                _packed(error_details_pb2.RetryInfo(retry_delay=retry_delay)),
            ],
        )
    )

    def get_entry(request, context):
        attempts[request.entry_id].append(time.monotonic())
        if request.entry_id.startswith("slow-"):
            time.sleep(1.5)  # a busy database: found so after waiting its turn
        context.abort_with_status(down)

    with serving("AfterSalesEntry", "GetEntry", _get_entry_handler(get_entry), 8) as address:
        yield address, attempts


def _packed(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def test_retries_of_an_unavailable_database_wait_the_delays_the_server_asks(database_down):
    """1 s, then twice that (gRPC varies each by up to 20%), as its RetryInfo says."""
    address, attempts = database_down
    with Client(address, timeout=30) as client:
        with pytest.raises(Unavailable) as failed:
            client.get_entry("e-0")

    assert failed.value.retry_delay == timedelta(seconds=1)
    first, second, third = attempts["e-0"]  # the call and two retries
    assert 0.8 <= second - first <= 1.2 + 0.2
    assert 1.6 <= third - second <= 2.4 + 0.2


def test_the_retries_of_the_default_timeout_end_unavailable_not_deadline_exceeded(database_down):
    """A server that takes 1.5 s to find its database busy: the attempts and their waits fit in
    the client's default timeout, so the caller learns that nothing was done."""
    address, attempts = database_down
    with Client(address) as client:
        with pytest.raises(Unavailable):
            client.get_entry("slow-e-0")

    assert len(attempts["slow-e-0"]) == 3


def test_retries_stay_within_the_call_s_deadline(database_down):
    address, attempts = database_down
    with Client(address) as client:
        started = time.monotonic()
        with pytest.raises((Unavailable, DeadlineExceeded)):
            client.get_entry("e-0", timeout=1.5)

    assert time.monotonic() - started < 1.5 + 0.5
    assert attempts["e-0"] and attempts["e-0"][-1] - started < 1.5


# --- Following the events ------------------------------------------------------------------------


def _status(code: int, message: str, retry_delay: float | None = None) -> grpc.Status:
    details = []
    if retry_delay is not None:
        delay = duration_pb2.Duration()
        delay.FromTimedelta(timedelta(seconds=retry_delay))
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=details))


@pytest.fixture
def flaky_events():
    """An Events server whose WatchEvents fails with each status of `script` in turn, one a
    stream, then sends the event after the position asked for and waits. Yields (address,
    script, the moments the streams came)."""
    script: list[grpc.Status] = []
    came: list[float] = []

    def watch(request, context):
        came.append(time.monotonic())
        if len(came) <= len(script):
            context.abort_with_status(script[len(came) - 1])
        yield events_pb2.WatchEventsResponse(
            event=events_pb2.Event(position=request.after_position + 1)
        )
        while context.is_active():
            time.sleep(0.02)

    handler = grpc.unary_stream_rpc_method_handler(
        watch,
        request_deserializer=events_pb2.WatchEventsRequest.FromString,
        response_serializer=events_pb2.WatchEventsResponse.SerializeToString,
    )
    with serving("Events", "WatchEvents", handler, 4) as address:
        yield address, script, came


def test_a_broken_stream_is_resumed_after_waits_that_double_each_logged(flaky_events, caplog):
    address, script, came = flaky_events
    script += [_status(code_pb2.UNAVAILABLE, "connection reset")] * 5

    with Client(address) as client, caplog.at_level(logging.WARNING, logger="client"):
        events = client.watch_events(41, reconnect_delay=0.04, max_reconnect_delay=0.5)
        first = next(events)
        events.close()

    assert first.position == 42
    waits = [later - earlier for earlier, later in itertools.pairwise(came)]
    # Each wait is at least half its ceiling: 0.04, 0.08, 0.16, 0.32, then at most 0.5.
    for wait, ceiling in zip(waits, [0.04, 0.08, 0.16, 0.32, 0.5], strict=True):
        assert wait >= ceiling / 2
    assert waits[-1] < 0.5 + 0.2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 5
    assert all("connection reset" in r.getMessage() for r in warnings)
    assert "after position 41" in warnings[0].getMessage()


def test_a_server_with_no_room_is_asked_again_after_the_delay_it_says(flaky_events):
    address, script, came = flaky_events
    script.append(_status(code_pb2.RESOURCE_EXHAUSTED, "too many streams", retry_delay=0.6))

    with Client(address) as client:
        events = client.watch_events(0, reconnect_delay=0.01)
        assert next(events).position == 1
        events.close()

    assert came[1] - came[0] >= 0.6


# --- Arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ids", [{}, {"clawback_id": "clawback-1", "refund_id": "refund-1"}], ids=["none", "both"]
)
def test_get_clawback_takes_exactly_one_id(ids):
    with Client("127.0.0.1:1", timeout=5) as client:
        with pytest.raises(ValueError, match="exactly one of clawback_id and refund_id"):
            client.get_clawback(**ids)


def test_with_a_token_the_person_s_own_id_may_be_left_out(people_server, login, seed):
    case = seed.case("implied")
    address = f"127.0.0.1:{people_server.port}"
    staff_token, buyer_token = (
        login.mint(case.owner_id, "staff"),
        login.mint(case.buyer_id, "buyer"),
    )

    with Client(address, token=staff_token) as staff, Client(address, token=buyer_token) as buyer:
        decision = staff.check_eligibility(case.order_id)
        entry = staff.open_entry(case.order_id, note="agreed in chat")
        application = buyer.apply_after_sales(case.order_id, amount=1_000)

    assert decision.eligible
    assert entry.operator_id == case.owner_id
    assert application.buyer_id == case.buyer_id


# --- Types ---------------------------------------------------------------------------------------


def mypy_strict(tmp_path: pathlib.Path, code: str) -> subprocess.CompletedProcess[str]:
    """mypy --strict on `code`, which uses this client, as a caller's type checker sees it."""
    source = tmp_path / "caller.py"
    source.write_text(textwrap.dedent(code), encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), source],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_ids_a_token_implies_may_be_left_out_for_a_type_checker(tmp_path):
    checked = mypy_strict(
        tmp_path,
        """
        from client import Client

        with Client("127.0.0.1:50051", token="eyJ.payload.sig") as c:
            c.check_eligibility("order-1")
            c.open_entry("order-1", note="agreed in chat")
            c.apply_after_sales("order-1", amount=1_000)
            c.apply_after_sales("order-1", "buyer-1", 1_000)  # as before
            c.open_entry("order-1", "staff-1")
        """,
    )

    assert checked.returncode == 0, checked.stdout


def test_the_readme_s_event_consumer_type_checks(tmp_path):
    """Without heartbeats, watch_events yields events: `event.order_id` needs no narrowing."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    [consumer] = [
        block
        for block in re.findall(r"```python\n(.*?)```", readme, flags=re.S)
        if ".watch_events(" in block
    ]
    # What the README leaves to the consumer.
    preamble = """
        from google.protobuf.timestamp_pb2 import Timestamp

        def last_position() -> int:
            return 0

        def tell_buyer(order_id: str, expires_at: Timestamp) -> None:
            pass

        def store_position(position: int) -> None:
            pass
        """

    checked = mypy_strict(tmp_path, textwrap.dedent(preamble) + consumer)

    assert checked.returncode == 0, checked.stdout


def test_watch_events_with_heartbeats_yields_events_or_heartbeats_for_a_type_checker(tmp_path):
    checked = mypy_strict(
        tmp_path,
        """
        from typing import assert_type

        from aftersales.v1 import events_pb2
        from client import Client

        with Client() as c:
            for item in c.watch_events(heartbeats=True):
                assert_type(item, events_pb2.Event | events_pb2.Heartbeat)
            for event in c.watch_events(heartbeats=False):
                assert_type(event, events_pb2.Event)
        """,
    )

    assert checked.returncode == 0, checked.stdout


# --- The client's life ---------------------------------------------------------------------------


def test_a_call_after_close_says_the_client_is_closed():
    client = Client("127.0.0.1:1", timeout=5)
    client.close()

    with pytest.raises(ValueError, match="^this Client is closed"):
        client.get_entry("entry-1")
    with pytest.raises(ValueError, match="^this Client is closed"):
        next(client.watch_events())


def test_an_error_crosses_a_process_boundary_whole(people_server):
    """Pickled, as a process pool sends it back to its caller."""
    with Client(f"127.0.0.1:{people_server.port}", timeout=10) as client:
        with pytest.raises(NotFound) as read:
            client.get_entry("entry-nobody-has")
        with pytest.raises(InvalidArgument) as refused:
            client.post_funds(pb_cash("kol-1"), 0, request_id="req-pickled-01")

    for error in (read.value, refused.value):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error)
        assert (again.code, again.message, str(again)) == (error.code, error.message, str(error))
        assert (again.reasons, again.resource, again.field_violations, again.request_id) == (
            error.reasons,
            error.resource,
            error.field_violations,
            error.request_id,
        )


def test_every_public_method_and_property_of_the_client_says_what_it_does():
    """What `help(Client)` shows a caller."""
    import client as package
    from client import client as module

    undocumented = [
        f"{owner.__name__}.{name}"
        for owner in [module.Client, *(getattr(package, n) for n in package.__all__)]
        if inspect.isclass(owner)
        for name, member in vars(owner).items()
        if not name.startswith("_")
        and (inspect.isfunction(member) or isinstance(member, property))
        and not inspect.getdoc(member)
    ] + [
        name
        for name in ("new_request_id", "timestamp", "check_certificates", "check_private_key")
        if not inspect.getdoc(getattr(module, name))
    ]

    assert undocumented == []


# --- Reading the events --------------------------------------------------------------------------


def test_iter_events_reads_every_event_held_across_pages_then_stops(people_server):
    cash = pb_cash("kol-events")
    with Client(f"127.0.0.1:{people_server.port}", timeout=10) as client:
        posted = [client.post_funds(cash, amount).transfer.transfer_id for amount in range(1, 6)]

        events = list(client.iter_events(from_oldest=True, page_size=2))
        after_the_second = list(client.iter_events(events[1].position, page_size=2))

    assert [e.funds_posted.transfer_id for e in events] == posted
    assert [e.position for e in events] == sorted(e.position for e in events)
    assert after_the_second == events[2:]
