"""A client in another language can use the protos as shipped: the Node.js client of clients/node
(@grpc/grpc-js, the protos loaded at run time) against `python -m server` with the demo data. Its
answers, and the rich details it decodes from a refusal, are the Python client's on the same call.

Its dependencies are installed here, with `npm ci` from the committed package-lock.json, once per
lock file; without Node.js or the npm registry the test fails and says so."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from aftersales.v1 import entry_pb2_grpc, events_pb2, resources_pb2
from client import AfterSalesError, Client
from client.errors import from_rpc_error
from tests.e2e.test_callers import a_secured_server
from tests.e2e.test_process import ROOT, ServerProcess, _environment, _wait_until_serving
from tests.pg import free_port

NODE_CLIENT = ROOT / "clients" / "node"
# What `npm ci` last installed node_modules from: the hash of the package files.
INSTALLED = NODE_CLIENT / "node_modules" / ".installed-from"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
PRECONDITION_FAILURE = "type.googleapis.com/google.rpc.PreconditionFailure"


def _package_hash() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((NODE_CLIENT / name).read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def node_client() -> pathlib.Path:
    """clients/node with its locked dependencies in node_modules."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"`{tool}` is not on the PATH: the Node.js client test needs Node.js 18.3+")
    wanted = _package_hash()
    if INSTALLED.exists() and INSTALLED.read_text(encoding="utf-8") == wanted:
        return NODE_CLIENT
    command = ["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline", "--ignore-scripts"]
    try:
        done = subprocess.run(command, cwd=NODE_CLIENT, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"`{' '.join(command)}` in clients/node did not finish: is the npm registry reachable?"
        )
    if done.returncode != 0:
        pytest.fail(
            f"`{' '.join(command)}` in clients/node failed (exit {done.returncode}); is the npm "
            f"registry reachable?\n{done.stderr[-3000:]}"
        )
    INSTALLED.write_text(wanted, encoding="utf-8")
    return NODE_CLIENT


@contextlib.contextmanager
def a_demo_server(folder: pathlib.Path, *options: str) -> Iterator[ServerProcess]:
    """`python -m server` with the demo data on SQLite (`folder`/aftersales.db) and the shipped
    policy, started with `options` too."""
    address = f"127.0.0.1:{free_port()}"
    stderr = folder / "server.stderr"
    command = [
        sys.executable, "-m", "server",
        "--address", address,
        "--database", f"sqlite:///{folder / 'aftersales.db'}",
        "--drain-seconds", "0",
        "--demo",
        "--demo-keys", str(folder / "demo"),
        *options,
    ]  # fmt: skip
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=ROOT, env=_environment(), stdout=subprocess.DEVNULL, stderr=sink
        )
    running = ServerProcess(process, address, stderr, folder / "demo")
    try:
        _wait_until_serving(running)
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The demo server shared by the tests of this module: only the opening test writes, on an
    order of its own."""
    with a_demo_server(tmp_path_factory.mktemp("node-client")) as running:
        yield running


@dataclasses.dataclass(frozen=True)
class Answer:
    """What a call gave: the response, or the refusal's {code, message, details} (and an open's
    request_id, and its retry when it may have been done or not); and the command's exit code."""

    ok: bool
    body: dict[str, Any]
    exit: int = 0

    def status(self) -> dict[str, Any]:
        """The refusal's {code, message, details}, as the Python client's."""
        return {key: self.body[key] for key in ("code", "message", "details")}


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who calls, the same for both clients: the server's address, the token of the person the
    caller acts for, and in the secure mode the CA and the caller's certificate and key files."""

    address: str
    token: str | None = None
    tls: tuple[pathlib.Path, pathlib.Path, pathlib.Path] | None = None  # CA, certificate, key

    def flags(self) -> list[str]:
        flags = ["--address", self.address] + (["--token", self.token] if self.token else [])
        if self.tls:
            ca, cert, key = self.tls
            flags += ["--tls-ca", str(ca), "--tls-cert", str(cert), "--tls-key", str(key)]
        return flags

    def client(self) -> Client:
        if not self.tls:
            return Client(self.address, token=self.token)
        ca, cert, key = (path.read_bytes() for path in self.tls)
        return Client(
            self.address,
            token=self.token,
            root_certificates=ca,
            certificate_chain=cert,
            private_key=key,
        )


def staff(server: ServerProcess, person: str) -> Caller:
    """The demo's staff member `person`, with that person's token."""
    return Caller(server.address, token=server.token("staff", person))


# The exit code of each failed call's status, the Python command line's (client/__main__.py);
# 6 for any other.
EXIT_CODES = {
    "INVALID_ARGUMENT": 1,
    "FAILED_PRECONDITION": 1,
    "ALREADY_EXISTS": 1,
    "NOT_FOUND": 3,
    "OUT_OF_RANGE": 3,
    "UNAUTHENTICATED": 4,
    "PERMISSION_DENIED": 4,
    "UNAVAILABLE": 5,
    "DEADLINE_EXCEEDED": 5,
}


def node(folder: pathlib.Path, caller: Caller, *args: str) -> Answer:
    """`node cli.js ARGS` as `caller`."""
    done = subprocess.run(
        ["node", "cli.js", *caller.flags(), *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return answer_of(done)


def answer_of(done: subprocess.CompletedProcess[str]) -> Answer:
    """What `node cli.js` gave: the response, or the failure its exit code says."""
    assert done.returncode in (0, 1, 3, 4, 5, 6), f"exit {done.returncode}:\n{done.stderr}"
    if done.returncode == 0:
        return Answer(True, json.loads(done.stdout))
    assert done.stdout == ""
    failed = Answer(False, json.loads(done.stderr), done.returncode)
    assert failed.exit == EXIT_CODES.get(failed.body["code"], 6), failed
    return failed


def python(caller: Caller, command: str, order_id: str) -> Answer:
    """`check` or `open` through the Python client, the refusal in the Node client's shape."""
    with caller.client() as client:
        try:
            if command == "check":
                response: Message = client.check_eligibility(order_id, "")
            else:
                response = client.open_entry(order_id, "")
        except AfterSalesError as e:
            return Answer(False, refusal(e))
    return Answer(True, json_format.MessageToDict(response, preserving_proto_field_name=True))


def refusal(error: AfterSalesError) -> dict[str, Any]:
    """A refusal as the Python command line prints it: {code, message, details}, each detail in
    the protobuf JSON mapping with its "@type"."""
    details = [
        {
            "@type": f"type.googleapis.com/{d.DESCRIPTOR.full_name}",
            **json_format.MessageToDict(d, preserving_proto_field_name=True),
        }
        for d in error.details
    ]
    return {"code": error.code.name, "message": error.message, "details": details}


def details_of(answer: Answer, type_url: str) -> dict[str, Any]:
    found = [d for d in answer.body["details"] if d["@type"] == type_url]
    assert len(found) == 1, answer.body
    return found[0]


def without_times(facts: dict[str, Any]) -> dict[str, Any]:
    """The facts but their timestamps (checked_at differs from call to call)."""
    return {k: v for k, v in facts.items() if not k.endswith("_at")}


def test_the_node_client_checks_an_eligible_order_as_the_python_client_does(node_client, server):
    owner = staff(server, "staff-owner")
    by_node = node(node_client, owner, "check", "order-eligible")
    by_python = python(owner, "check", "order-eligible")

    assert by_node.ok and by_python.ok
    assert by_node.body["eligible"] is True
    assert "violations" not in by_node.body
    assert by_node.body["policy_version"] == by_python.body["policy_version"]
    assert without_times(by_node.body["facts"]) == without_times(by_python.body["facts"])
    # Times as the protobuf JSON mapping writes them, in both languages.
    assert by_node.body["facts"]["completed_at"] == by_python.body["facts"]["completed_at"]
    assert by_node.body["facts"]["completed_at"].endswith("Z")


def test_the_node_client_opens_an_entry_that_the_python_client_then_reads(node_client, server):
    owner = staff(server, "staff-owner")
    opened = node(node_client, owner, "open", "order-campaign", "--note", "agreed")

    assert opened.ok, opened.body
    assert opened.body["state"] == "ENTRY_STATE_OPEN"
    assert (opened.body["order_id"], opened.body["note"]) == ("order-campaign", "agreed")
    with Client(server.address) as reader:
        stored = reader.get_entry(opened.body["entry_id"])
    assert (stored.order_id, stored.operator_id, stored.note) == (
        "order-campaign",
        "staff-owner",
        "agreed",
    )
    read_back = json_format.MessageToDict(stored, preserving_proto_field_name=True)
    assert (opened.body["opened_at"], opened.body["expires_at"]) == (
        read_back["opened_at"],
        read_back["expires_at"],
    )

    again = node(node_client, owner, "open", "order-campaign")
    assert not again.ok
    assert again.body["code"] == "ALREADY_EXISTS"
    assert details_of(again, ERROR_INFO)["metadata"]["entry_id"] == opened.body["entry_id"]
    assert again.exit == 1
    assert again.status() == python(owner, "open", "order-campaign").body
    assert again.body["request_id"] and "retry" not in again.body  # refused: it was not done


def test_a_refused_open_entry_decodes_to_every_broken_rule_as_in_python(node_client, server):
    pine_owner = staff(server, "pine-owner")
    by_node = node(node_client, pine_owner, "open", "order-troubled")
    by_python = python(pine_owner, "open", "order-troubled")

    assert not by_node.ok and not by_python.ok
    assert by_node.body["code"] == "FAILED_PRECONDITION"
    assert by_node.status() == by_python.body
    violations = details_of(by_node, PRECONDITION_FAILURE)["violations"]
    assert len(violations) > 1, "the demo's troubled order should break several rules"
    assert all(v["subject"] == "orders/order-troubled" and v["description"] for v in violations)
    info = details_of(by_node, ERROR_INFO)
    assert info["reason"] == violations[0]["type"]
    assert info["domain"]
    decision = node(node_client, pine_owner, "check", "order-troubled")
    assert [v["type"] for v in violations] == [v["code"] for v in decision.body["violations"]]


@pytest.mark.parametrize(
    ("person", "command", "order_id", "code", "exit_code"),
    [
        ("staff-owner", "check", "", "INVALID_ARGUMENT", 1),
        ("staff-owner", "open", "", "INVALID_ARGUMENT", 1),
        ("staff-owner", "check", "order-pine", "NOT_FOUND", 3),
        ("staff-agent", "open", "order-eligible", "PERMISSION_DENIED", 4),
    ],
)
def test_a_refused_call_gives_the_node_client_the_python_client_s_details(
    node_client, server, person, command, order_id, code, exit_code
):
    caller = staff(server, person)
    by_node = node(node_client, caller, command, order_id)
    by_python = python(caller, command, order_id)

    assert not by_node.ok and not by_python.ok
    assert (by_node.body["code"], by_node.exit) == (code, exit_code)
    assert by_node.body["details"], by_node.body
    assert by_node.status() == by_python.body


# A page of the events through the Node client's `events` stub, as JSON on stdout.
LIST_EVENTS = """
const { createClient, responseJson } = require('./aftersales');
const client = createClient(process.argv[1]);
client.events.ListEvents({ from_oldest: true, page_size: 100 }, (err, page) => {
  client.close();
  if (err) throw err;
  console.log(JSON.stringify(responseJson('Events', 'ListEvents', page)));
});
"""


def test_the_node_client_lists_the_events_the_python_client_lists(node_client, server):
    listed = subprocess.run(
        ["node", "-e", LIST_EVENTS, server.address],
        cwd=node_client,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    by_node = json.loads(listed.stdout)
    with Client(server.address) as client:
        page = client.list_events(from_oldest=True, page_size=100)
    by_python = json_format.MessageToDict(page, preserving_proto_field_name=True)

    assert by_node["events"], "the demo's data should have made events"
    assert by_node == by_python


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    folder = tmp_path_factory.mktemp("node-secured")
    with a_secured_server(folder, f"sqlite:///{folder / 'aftersales.db'}") as running:
        yield running


def test_the_node_client_calls_in_the_secure_mode_with_its_certificate(
    node_client, secured, tmp_path
):
    (tmp_path / "ca.pem").write_bytes(secured.ca)
    for name in ("merchant-backoffice", "operator-console"):
        secured.clients[f"spiffe://platform/{name}"].write(tmp_path, name)

    def as_service(name: str, token: str | None = None) -> Caller:
        files = (tmp_path / "ca.pem", tmp_path / f"{name}.pem", tmp_path / f"{name}.key")
        # By name: Node.js warns when TLS is given an IP address for a server name (RFC 6066).
        address = secured.address.replace("127.0.0.1", "localhost")
        return Caller(address, token=token, tls=files)

    back_office = as_service("merchant-backoffice", secured.login.mint("staff-owner", "staff"))
    checked = node(node_client, back_office, "check", "order-eligible")
    assert checked.ok, checked.body
    assert checked.body["eligible"] is True

    console = as_service("operator-console")
    by_node = node(node_client, console, "open", "order-eligible")
    assert not by_node.ok
    assert by_node.body["code"] == "PERMISSION_DENIED"
    assert details_of(by_node, ERROR_INFO)["metadata"]["identity"] == (
        "spiffe://platform/operator-console"
    )
    assert by_node.status() == python(console, "open", "order-eligible").body


def test_the_node_client_s_help_and_a_bad_option_answer_with_its_usage(node_client):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["node", "cli.js", *args], cwd=node_client, capture_output=True, text=True, timeout=60
        )

    helped, bad = run("--help"), run("--bogus", "check", "order-eligible")

    assert (helped.returncode, helped.stderr) == (0, "")
    assert helped.stdout.startswith("usage: cli.js")
    assert bad.returncode == 2 and bad.stdout == ""
    assert "--bogus" in bad.stderr and "usage: cli.js" in bad.stderr
    assert "Error" not in bad.stderr and "\n    at " not in bad.stderr  # no stack trace


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--timeout", "abc"], "--timeout"),
        (["--timeout", "0"], "--timeout"),
        (["--timeout=-5"], "--timeout"),
        (["--timeout", "Infinity"], "--timeout"),
        (["--tls-ca", "ca.pem", "--tls-cert", "caller.pem"], "--tls-key"),
        (["--tls-ca", "missing.pem"], "missing.pem"),
        (["--tls-ca", "ca.pem", "--tls-cert", "caller.pem", "--tls-key", "missing.key"], "missing"),
        (["--tls-ca", "ca.pem", "--tls-cert", "junk.pem", "--tls-key", "junk.pem"], "TLS"),
    ],
)
def test_a_bad_timeout_or_tls_file_is_a_usage_error_in_one_line(node_client, tmp_path, args, named):
    """Exit 2 and one line naming what is wrong, before any call (not a deadline missed, nor a
    stack trace)."""
    for name in ("ca.pem", "caller.pem"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "junk.pem").write_text("not a PEM file\n", encoding="utf-8")
    cli = str(node_client / "cli.js")
    nobody = f"127.0.0.1:{free_port()}"
    done = subprocess.run(
        ["node", cli, "--address", nobody, *args, "check", "order-eligible"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert named in done.stderr
    assert "DEADLINE_EXCEEDED" not in done.stderr and "\n    at " not in done.stderr


@contextlib.contextmanager
def another_writer(database: pathlib.Path) -> Iterator[None]:
    """Another writer holding the SQLite database: the server's writes wait for it to let go."""
    other = sqlite3.connect(database, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_an_open_left_unanswered_says_its_request_id_and_its_retry_gets_the_entry_once(
    node_client, tmp_path
):
    """The server opens the entry after the caller stopped waiting: exit 5 (done or not), the
    request id, and the command that sends the same request again, which answers the entry that
    was opened rather than a refusal or a second entry."""
    with a_demo_server(tmp_path) as running:
        token = running.token("staff", "staff-owner")
        owner = Caller(running.address, token=token)
        with another_writer(tmp_path / "aftersales.db"):
            unanswered = node(node_client, owner, "--timeout", "1", "open", "order-eligible")

        assert (unanswered.exit, unanswered.body["code"]) == (5, "DEADLINE_EXCEEDED")
        request_id = unanswered.body["request_id"]
        retry = unanswered.body["retry"]
        assert f"--request-id {request_id}" in retry
        assert token not in retry and "$AFTERSALES_TOKEN" in retry  # no token in logs
        retried = subprocess.run(
            retry,
            shell=True,
            cwd=node_client,
            env={**os.environ, "AFTERSALES_TOKEN": token},
            capture_output=True,
            text=True,
            timeout=60,
        )
        entry = answer_of(retried)
        assert entry.ok, entry.body
        assert (entry.body["order_id"], entry.body["state"]) == (
            "order-eligible",
            "ENTRY_STATE_OPEN",
        )
        with Client(running.address) as reader:
            entries = reader.list_entries(order_id="order-eligible").entries
        assert [e.entry_id for e in entries] == [entry.body["entry_id"]]


def test_an_open_with_no_server_to_answer_reports_the_request_id_given(node_client):
    """--request-id names the request, in the report and in its retry."""
    nobody = Caller(f"127.0.0.1:{free_port()}", token="a-token")
    failed = node(node_client, nobody, "open", "order-eligible", "--request-id", "req-42")

    assert (failed.exit, failed.body["code"]) == (5, "UNAVAILABLE")
    assert failed.body["request_id"] == "req-42"
    assert "--request-id req-42" in failed.body["retry"] and "a-token" not in failed.body["retry"]


class FlakyEntries(entry_pb2_grpc.AfterSalesEntryServicer):
    """OpenEntry unavailable on its first call, then done: a database that was down a moment."""

    def __init__(self) -> None:
        self.request_ids: list[str] = []

    def OpenEntry(self, request, context):  # noqa: N802  # the RPC's name
        self.request_ids.append(request.request_id)
        if len(self.request_ids) == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the database is unavailable")
        return resources_pb2.Entry(
            entry_id="entry-1", order_id=request.order_id, state=resources_pb2.ENTRY_STATE_OPEN
        )


def test_the_node_client_retries_an_unavailable_open_with_the_same_request_id(node_client):
    """As the Python client does (client/client.py): UNAVAILABLE is retried by gRPC itself, the
    same request again."""
    flaky = FlakyEntries()
    fake = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    entry_pb2_grpc.add_AfterSalesEntryServicer_to_server(flaky, fake)
    port = fake.add_insecure_port("127.0.0.1:0")
    fake.start()
    try:
        opened = node(node_client, Caller(f"127.0.0.1:{port}"), "open", "order-eligible")
    finally:
        fake.stop(grace=None)

    assert opened.ok, opened.body
    assert opened.body["entry_id"] == "entry-1"
    assert len(flaky.request_ids) == 2 and flaky.request_ids[0] == flaky.request_ids[1]


# A WatchEvents through the Node client's `events` stub: its refusal, decoded, as JSON on stdout.
REFUSED_STREAM = """
const { createClient, richError } = require('./aftersales');
const client = createClient(process.argv[1]);
const deadline = Date.now() + 20000;
const stream = client.events.WatchEvents({ heartbeat_seconds: 1 }, { deadline });
stream.on('data', () => {});
stream.on('error', (err) => {
  client.close();
  console.log(JSON.stringify(richError(err)));
});
"""


def test_a_refusal_with_a_retry_delay_decodes_as_in_python(node_client, tmp_path):
    """A stream the server has no room for is refused with RetryInfo: its retry_delay in the
    protobuf JSON mapping ("1s"), as the Python client prints it."""
    with (
        a_demo_server(tmp_path, "--max-streams", "1") as running,
        Client(running.address) as client,
    ):
        request = events_pb2.WatchEventsRequest(heartbeat_seconds=1)
        held = client.events.WatchEvents(request, timeout=30)
        try:
            next(held)  # served: the one stream the server may serve
            watched = subprocess.run(
                ["node", "-e", REFUSED_STREAM, running.address],
                cwd=node_client,
                capture_output=True,
                text=True,
                timeout=60,
            )
            with pytest.raises(grpc.RpcError) as refused:
                next(client.events.WatchEvents(request, timeout=20))
        finally:
            held.cancel()
    assert watched.returncode == 0, watched.stderr
    by_node = Answer(False, json.loads(watched.stdout))
    by_python = refusal(from_rpc_error(refused.value))

    assert by_node.body["code"] == "RESOURCE_EXHAUSTED"
    assert details_of(by_node, RETRY_INFO)["retry_delay"] == "1s"
    assert details_of(by_node, ERROR_INFO)["metadata"] == {"retryable": "true"}
    assert by_node.body == by_python
