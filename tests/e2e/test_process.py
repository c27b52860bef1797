"""Black box: `python -m server` as its own process on SQLite with the demo data and a policy whose
window is 2 seconds, driven through gRPC health, the Python client and `python -m client`."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import pathlib
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aftersales.v1 import resources_pb2 as pb
from client import AlreadyExists, Client, NotFound
from server.certs import TokenKey
from tests.environment import server_environment
from tests.pg import free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]
POLICY_VERSION = "e2e-two-second-window"
WINDOW_SECONDS = 2
ENTRY_SERVICE = "aftersales.v1.AfterSalesEntry"


def _environment() -> dict[str, str]:
    """This environment without settings that would point the processes elsewhere; one server
    process unless a test's --processes says more (tests/e2e/test_processes.py)."""
    return server_environment(AFTERSALES_PROCESSES="1")


def _policy_file(folder: pathlib.Path) -> pathlib.Path:
    """The shipped policy with a 2-second window under a version of its own."""
    section, lines = "", []
    for line in (ROOT / "server" / "policy.toml").read_text(encoding="utf-8").splitlines():
        key = line.split("=")[0].strip()
        if line.startswith("["):
            section = line.strip()
        elif section == "" and key == "version":
            line = f'version = "{POLICY_VERSION}"'
        elif section == "[entry]" and key == "window_seconds":
            line = f"window_seconds = {WINDOW_SECONDS}"
        lines.append(line)
    text = "\n".join(lines) + "\n"
    parsed = tomllib.loads(text)
    assert parsed["version"] == POLICY_VERSION
    assert parsed["entry"]["window_seconds"] == WINDOW_SECONDS
    path = folder / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def log_records(path: pathlib.Path) -> list[dict]:
    """The JSON lines a server has written whole to `path`: a line it is writing now is read the
    next time."""
    text = path.read_text(encoding="utf-8")
    whole = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in whole.splitlines() if line.strip()]


@dataclasses.dataclass
class ServerProcess:
    process: subprocess.Popen
    address: str
    stderr: pathlib.Path
    demo_keys: pathlib.Path | None = None

    def token(self, kind: str, person: str) -> str:
        """A token of the demo's login key, as `python -m server.certs var/demo --token`."""
        assert self.demo_keys is not None
        return TokenKey.read(self.demo_keys / "token-key.pem").mint(person, kind)

    def log_records(self) -> list[dict]:
        return log_records(self.stderr)

    def terminate(self, timeout: float = 15) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def _wait_until_serving(server: ServerProcess, deadline_seconds: float = 30) -> None:
    deadline = time.monotonic() + deadline_seconds
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            exited = server.process.poll()
            assert exited is None, f"the server exited ({exited}):\n{server.stderr.read_text()}"
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "the server did not report SERVING in time"
            time.sleep(0.1)


@contextlib.contextmanager
def started(tmp_path: pathlib.Path, database: str, *flags: str) -> Iterator[ServerProcess]:
    """`python -m server` with the demo on `database`, serving; stopped (SIGTERM, then killed
    if it lingers) if still running when the block ends."""
    address = f"127.0.0.1:{free_port()}"
    stderr = tmp_path / "server.stderr"
    command = [
        sys.executable, "-m", "server",
        "--address", address,
        "--database", database,
        "--drain-seconds", "0",
        "--demo",
        "--demo-keys", str(tmp_path / "demo"),
        *flags,
    ]  # fmt: skip
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=ROOT, env=_environment(), stdout=subprocess.DEVNULL, stderr=sink
        )
    running = ServerProcess(process, address, stderr, tmp_path / "demo")
    try:
        _wait_until_serving(running)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def server(tmp_path):
    database = f"sqlite:///{tmp_path / 'aftersales.db'}"
    policy = ["--policy", str(_policy_file(tmp_path)), "--sweep-interval", "0.5"]
    with started(tmp_path, database, *policy) as running:
        yield running


class DemoClient:
    """The Python client as the demo's people use it: a call that names a staff member goes with
    that staff member's token (the demo verifies it); every other call as it is."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.plain = Client(server.address)
        self.people: dict[str, Client] = {}

    def as_staff(self, staff_id: str) -> Client:
        if staff_id not in self.people:
            token = self.server.token("staff", staff_id)
            self.people[staff_id] = Client(self.server.address, token=token)
        return self.people[staff_id]

    def check_eligibility(self, order_id: str, operator_id: str) -> Any:
        return self.as_staff(operator_id).check_eligibility(order_id, operator_id)

    def open_entry(self, order_id: str, operator_id: str, **kwargs: Any) -> Any:
        return self.as_staff(operator_id).open_entry(order_id, operator_id, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.plain, name)

    def close(self) -> None:
        for client in [self.plain, *self.people.values()]:
            client.close()


@pytest.fixture
def client(server):
    demo = DemoClient(server)
    yield demo
    demo.close()


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess:
    """`python -m client ...`; `check` and `open` go with the token of the staff they name."""
    token = []
    if args and args[0] in ("check", "open"):
        token = ["--token", server.token("staff", args[2])]
    return subprocess.run(
        [sys.executable, "-m", "client", "--address", server.address, *token, *args],
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )


# (order, operator) -> the reason codes CheckEligibility gives, from server/demo.py.
DEMO = {
    ("order-eligible", "staff-owner"): [],
    ("order-eligible", "staff-admin"): [],
    ("order-eligible", "staff-csadmin"): [],
    ("order-campaign", "staff-owner"): [],
    ("order-old", "staff-owner"): ["COMPLETION_WINDOW_EXCEEDED"],
    ("order-in-transit", "staff-owner"): ["ORDER_NOT_COMPLETED"],
    ("order-recent", "staff-owner"): ["WITHIN_AFTER_SALES_PERIOD"],
    ("order-presale", "staff-owner"): ["ORDER_KIND_NOT_SUPPORTED"],
    ("order-refunded", "staff-owner"): ["NOTHING_REFUNDABLE"],
    ("order-pine", "pine-owner"): ["SHOP_NOT_OPERATING"],
    ("order-tiny", "tiny-owner"): ["INSUFFICIENT_GUARANTEE"],
    ("order-troubled", "pine-owner"): [
        "COMPLETION_WINDOW_EXCEEDED",
        "SHOP_NOT_OPERATING",
        "ORDER_KIND_NOT_SUPPORTED",
    ],
    ("order-eligible", "staff-agent"): ["OPERATOR_NOT_ALLOWED"],
    ("order-eligible", "staff-finance"): ["OPERATOR_NOT_ALLOWED"],
}


def test_the_server_reports_serving_for_each_of_its_services(server):
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in (ENTRY_SERVICE, "aftersales.v1.Sync"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service


def test_each_demo_order_gives_its_reason_code(client):
    found = {}
    for order_id, operator_id in DEMO:
        check = client.check_eligibility(order_id, operator_id)
        assert check.policy_version == POLICY_VERSION
        assert check.eligible == (not check.violations)
        found[order_id, operator_id] = [pb.ReasonCode.Name(v.code) for v in check.violations]

    assert found == DEMO


def test_a_demo_order_of_another_shop_is_not_found_for_the_operator(client):
    with pytest.raises(NotFound) as refused:
        client.check_eligibility("order-pine", "staff-owner")

    assert refused.value.resource == ("order", "order-pine")


def test_an_entry_under_a_two_second_window_expires_by_itself_and_may_be_reopened(client):
    entry = client.open_entry("order-eligible", "staff-owner", note="agreed with the buyer")
    assert entry.state == pb.ENTRY_STATE_OPEN
    assert entry.policy_version == POLICY_VERSION
    opened_at = entry.opened_at.ToDatetime(tzinfo=UTC)
    assert entry.expires_at.ToDatetime(tzinfo=UTC) - opened_at == timedelta(seconds=2)
    with pytest.raises(AlreadyExists):
        client.open_entry("order-eligible", "staff-owner")

    time.sleep(WINDOW_SECONDS + 0.5)

    assert client.get_entry(entry.entry_id).state == pb.ENTRY_STATE_EXPIRED
    expired = client.list_entries(order_id="order-eligible", state=pb.ENTRY_STATE_EXPIRED)
    assert [e.entry_id for e in expired.entries] == [entry.entry_id]
    again = client.open_entry("order-eligible", "staff-owner")
    assert again.entry_id != entry.entry_id
    assert again.state == pb.ENTRY_STATE_OPEN
    listing = client.list_entries(order_id="order-eligible")
    assert [e.entry_id for e in listing.entries] == [again.entry_id, entry.entry_id]


def test_sigterm_stops_the_server_with_exit_0_and_one_json_log_line_per_call(server, client):
    calls = collections.Counter()
    for order_id, operator_id in list(DEMO)[:3]:
        client.check_eligibility(order_id, operator_id)
        calls["CheckEligibility", "OK"] += 1
    entry = client.open_entry("order-campaign", "staff-owner")
    calls["OpenEntry", "OK"] += 1
    with pytest.raises(AlreadyExists):
        client.open_entry("order-campaign", "staff-owner")
    calls["OpenEntry", "ALREADY_EXISTS"] += 1
    client.get_entry(entry.entry_id)
    calls["GetEntry", "OK"] += 1
    with pytest.raises(NotFound):
        client.get_entry("entry-nobody-knows")
    calls["GetEntry", "NOT_FOUND"] += 1

    assert server.terminate() == 0

    records = server.log_records()
    rpc_records = [r for r in records if r.get("method", "").startswith(f"/{ENTRY_SERVICE}/")]
    logged = collections.Counter((r["method"].rsplit("/", 1)[1], r["code"]) for r in rpc_records)
    assert logged == calls
    for record in rpc_records:
        assert isinstance(record["duration_ms"], int | float) and record["duration_ms"] >= 0


def test_the_cli_check_prints_the_decision_as_json(server):
    done = cli(server, "check", "order-tiny", "tiny-owner")

    assert done.returncode == 0, done.stderr
    decision = json.loads(done.stdout)
    assert [v["code"] for v in decision["violations"]] == ["INSUFFICIENT_GUARANTEE"]
    assert decision.get("eligible", False) is False
    assert int(decision["facts"]["refundable_amount"]) == 10_000
    assert decision["policy_version"] == POLICY_VERSION


def test_the_cli_s_output_cut_short_by_its_reader_is_no_error(server):
    """`aftersales balances shop-sunny | head -1`: the reader leaves before the output comes."""
    process = subprocess.Popen(
        [sys.executable, "-m", "client", "--address", server.address, "balances", "shop-sunny"],
        cwd=ROOT,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    stderr = process.stderr.read().decode()
    process.stderr.close()

    assert process.wait(timeout=60) == 0, stderr
    assert stderr == ""


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf", "soon"])
def test_a_cli_timeout_not_above_zero_is_a_bad_command_line(server, timeout):
    done = cli(server, "--timeout", timeout, "balances", "shop-sunny")

    assert done.returncode == 2, done.stderr
    assert "--timeout" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_the_cli_open_of_a_refused_order_exits_1_with_the_status_as_json_on_stderr(server):
    done = cli(server, "open", "order-tiny", "tiny-owner")

    assert done.returncode == 1
    assert done.stdout == ""
    report = json.loads(done.stderr)
    assert report["code"] == "FAILED_PRECONDITION"
    violations = [v for d in report["details"] for v in d.get("violations", [])]
    assert [(v["type"], v["subject"]) for v in violations] == [
        ("INSUFFICIENT_GUARANTEE", "orders/order-tiny")
    ]
    domains = [d["domain"] for d in report["details"] if "domain" in d]
    assert domains == ["aftersales.livecommerce.io"]
    # Each detail says its type, as google.protobuf.Any does in JSON.
    assert sorted(d["@type"] for d in report["details"]) == [
        "type.googleapis.com/google.rpc.ErrorInfo",
        "type.googleapis.com/google.rpc.PreconditionFailure",
    ]


def test_the_cli_acts_for_the_token_s_staff_member_when_no_operator_is_named(server):
    done = cli(server, "--token", server.token("staff", "tiny-owner"), "check", "order-tiny")

    assert done.returncode == 0, done.stderr
    decision = json.loads(done.stdout)
    assert [v["code"] for v in decision["violations"]] == ["INSUFFICIENT_GUARANTEE"]
    assert "wallet_balance" in decision["facts"]  # the owner's view: it may see the money


def test_the_cli_opens_an_eligible_order_and_prints_the_entry(server):
    done = cli(server, "open", "order-eligible", "staff-owner", "--note", "agreed")

    assert done.returncode == 0, done.stderr
    entry = json.loads(done.stdout)
    assert entry["state"] == "ENTRY_STATE_OPEN"
    assert (entry["order_id"], entry["operator_id"]) == ("order-eligible", "staff-owner")
    assert entry["policy_version"] == POLICY_VERSION


def test_the_cli_checks_a_batch_and_reads_the_buyer_s_order_page(server):
    staff = ["--token", server.token("staff", "staff-owner")]
    batch = cli(server, *staff, "check-batch", "order-presale", "order-pine")
    opened = cli(server, "open", "order-eligible", "staff-owner")
    page = cli(
        server, "--token", server.token("buyer", "buyer-eligible"), "order-entry", "order-eligible"
    )
    nosy = cli(
        server, "--token", server.token("buyer", "buyer-campaign"), "order-entry", "order-eligible"
    )

    assert batch.returncode == 0, batch.stderr
    presale, pine = [json.loads(line) for line in batch.stdout.splitlines()]
    assert [v["code"] for v in presale["eligibility"]["violations"]] == ["ORDER_KIND_NOT_SUPPORTED"]
    assert pine == {
        "order_id": "order-pine",
        "error": {"code": 5, "message": "order 'order-pine' not found"},
    }
    assert opened.returncode == 0, opened.stderr
    assert page.returncode == 0, page.stderr
    entry, seen = json.loads(opened.stdout), json.loads(page.stdout)["entry"]
    assert (seen["opened_at"], seen["expires_at"]) == (entry["opened_at"], entry["expires_at"])
    assert nosy.returncode == 3 and nosy.stdout == ""


def test_a_cli_mutation_whose_outcome_is_unknown_is_sent_again_once_by_the_retry_it_reports(
    server,
):
    """A deadline no answer can meet: the top-up may have been done or not (exit 5). The report
    names its request id and the command that sends the same request again; sent twice, that
    moves the money once (a plain rerun would be a second top-up)."""
    wallet = ("ANXIN_WALLET", "shop-sunny")
    before = _balance(server, *wallet)
    lost = cli(server, "--timeout", "0.000001", "funds", *wallet, "5000", "--memo", "top-up")

    assert lost.returncode == 5, lost.stderr
    report = json.loads(lost.stderr)
    assert report["code"] == "DEADLINE_EXCEEDED"
    retry = shlex.split(report["retry"])
    assert retry[0] == "aftersales"
    assert retry[retry.index("--request-id") + 1] == report["request_id"]
    # The operator gives the retry time to be answered.
    retry[retry.index("--timeout") + 1] = "30"
    first, second = cli(server, *retry[1:]), cli(server, *retry[1:])

    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert json.loads(first.stdout) == json.loads(second.stdout)
    assert _balance(server, *wallet) == before + 5_000


def test_a_cli_refund_reports_a_retry_that_says_its_times_again(server):
    """A refund's --started-at and --paid-at default to the moment it was first sent; its retry
    says them, so that the same refund is sent again, not one with other facts."""
    lost = cli(server, "--timeout", "0.000001", "refund", "refund-cli", "order-eligible", "100")

    assert lost.returncode == 5, lost.stderr
    retry = shlex.split(json.loads(lost.stderr)["retry"])
    retry[retry.index("--timeout") + 1] = "30"
    first, second = cli(server, *retry[1:]), cli(server, *retry[1:])

    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    recorded = json.loads(first.stdout)
    assert json.loads(second.stdout) == recorded
    for option, field in (("--started-at", "started_at"), ("--paid-at", "paid_at")):
        said = datetime.fromisoformat(retry[retry.index(option) + 1])
        assert datetime.fromisoformat(recorded["refund_" + field]) == said


def _balance(server: ServerProcess, kind: str, owner_id: str) -> int:
    done = cli(server, "balances", owner_id)
    assert done.returncode == 0, done.stderr
    balances = json.loads(done.stdout)["balances"]
    return sum(
        int(b.get("balance", 0)) for b in balances if b["account"]["kind"] == "ACCOUNT_KIND_" + kind
    )


def test_the_demo_s_people_prove_who_they_are_with_the_demo_s_tokens(server):
    from client import PermissionDenied, Unauthenticated

    stranger_key = TokenKey()  # a key the demo does not trust, under the demo's key id
    with Client(server.address) as nobody:
        with pytest.raises(Unauthenticated) as no_token:
            nobody.check_eligibility("order-eligible", "staff-owner")
        # Reads name no person: they need no token.
        assert nobody.get_balances(owner_id="shop-sunny")
    with Client(server.address, token=stranger_key.mint("staff-owner", "staff")) as forged:
        with pytest.raises(Unauthenticated) as forged_token:
            forged.open_entry("order-eligible", "staff-owner")
    with Client(server.address, token=server.token("staff", "staff-agent")) as agent:
        with pytest.raises(PermissionDenied) as someone_else:
            agent.open_entry("order-eligible", "staff-owner")
    with Client(server.address, token=server.token("buyer", "buyer-eligible")) as buyer:
        with pytest.raises(PermissionDenied) as wrong_kind:
            buyer.check_eligibility("order-eligible", "")

    assert no_token.value.reason == forged_token.value.reason == "PERSON_NOT_AUTHENTICATED"
    assert someone_else.value.reason == wrong_kind.value.reason == "NOT_THE_AUTHENTICATED_PERSON"
    with Client(server.address) as reader:
        assert list(reader.list_entries(order_id="order-eligible").entries) == []


def test_requests_whose_headers_grpc_cannot_parse_add_no_line_to_the_log(server):
    """gRPC's C core would write a line of its own (not JSON) for each request whose headers it
    cannot parse, here a `grpc-timeout` of "xyz": a caller could flood the log. The server's
    stderr stays JSON lines."""
    host, _, port = server.address.rpartition(":")
    streams = [1 + 2 * i for i in range(20)]
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(H2_PREFACE + _frame(SETTINGS, 0, 0, b""))
        for stream in streams:
            headers = [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/aftersales.v1.Clawback/GetBalances"),
                (":authority", server.address),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("grpc-timeout", "xyz"),
            ]
            block = b"".join(_literal(name, value) for name, value in headers)
            connection.sendall(_frame(HEADERS, END_HEADERS, stream, block))
            connection.sendall(_frame(DATA, END_STREAM, stream, b"\x00\x00\x00\x00\x00"))
        ended = _ended_streams(connection, set(streams))

    assert ended == set(streams)
    lines = server.stderr.read_text(encoding="utf-8").splitlines()
    assert [line for line in lines if not line.startswith("{")] == []


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0, 1, 3, 4, 7
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
    )


def _literal(name: str, value: str) -> bytes:
    """An HPACK header field, literal, not indexed, without Huffman coding (RFC 7541 6.2.2);
    names and values here are shorter than 127 bytes."""
    return b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()


def _ended_streams(connection: socket.socket, streams: set[int]) -> set[int]:
    """The streams of `streams` the server ended (END_STREAM or RST_STREAM), reading its frames
    until each has or it stops sending."""
    ended: set[int] = set()
    buffer = b""
    while ended != streams:
        try:
            chunk = connection.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        buffer += chunk
        while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
            length = int.from_bytes(buffer[:3], "big")
            kind, flags = buffer[3], buffer[4]
            stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
            buffer = buffer[9 + length :]
            if kind == SETTINGS and not flags & ACK:
                connection.sendall(_frame(SETTINGS, ACK, 0, b""))
            elif kind == RST_STREAM or (kind in (HEADERS, DATA) and flags & END_STREAM):
                ended.add(stream)
            elif kind == GOAWAY:
                return ended
    return ended


def test_a_database_in_memory_serves_every_call_and_is_gone_at_exit(tmp_path):
    """Each of the server's threads has its own connection: the database in memory is one file
    of the process's own, in memory where the machine has a folder for it."""
    with started(tmp_path, "sqlite:///:memory:") as running:
        owner = running.token("staff", "staff-owner")
        address = running.address
        with Client(address, token=owner) as staff, Client(address) as platform:
            assert staff.check_eligibility("order-eligible").eligible
            assert (
                platform.get_balances(owner_id="shop-sunny")[
                    (pb.ACCOUNT_KIND_ANXIN_WALLET, "shop-sunny")
                ]
                == 500_000
            )
            platform.put_shop(pb.Shop(shop_id="shop-in-memory", status=pb.SHOP_STATUS_NORMAL))
        running.process.send_signal(signal.SIGTERM)
        exit_code = running.process.wait(timeout=15)
    assert exit_code == 0
    [said] = [
        r for r in log_records(running.stderr) if r["message"].startswith("a database in memory")
    ]
    assert not pathlib.Path(said["path"]).exists()
    assert not pathlib.Path(said["path"]).parent.exists()
