"""Callers prove who they are with a client certificate; the access table says what each may call.

A real `python -m server` with --tls-client-ca, certificates made by server.certs (the same tool
`make certs` runs), and calls through real TLS channels.
"""

from __future__ import annotations

import dataclasses
import pathlib
import signal
import subprocess
import sys

import grpc
import pytest
from google.protobuf import message_factory
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from aftersales.v1 import clawback_pb2, entry_pb2, sync_pb2
from client import Client, Unavailable
from server.certs import Authority, Issued
from server.domain import access
from server.grpc.app import METHOD_NAMES
from tests.e2e.test_process import ROOT, _environment
from tests.pg import free_port

TABLE = access.load(METHOD_NAMES)


@dataclasses.dataclass
class Secured:
    address: str
    ca: bytes
    clients: dict[str, Issued]  # by identity
    stderr: pathlib.Path


def a_cert_folder(folder: pathlib.Path, ca: Authority) -> tuple[pathlib.Path, pathlib.Path]:
    (folder / "ca.pem").write_bytes(ca.cert_pem)
    ca.server("localhost", "127.0.0.1").write(folder, "server")
    return folder / "ca.pem", folder / "server"


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """A server requiring client certificates from its CA, with the demo data; a client
    certificate for each identity of the shipped access table, and a few odd ones."""
    folder = tmp_path_factory.mktemp("secured")
    ca = Authority()
    ca_pem, server_cert = a_cert_folder(folder, ca)
    clients = {identity: ca.client(identity) for identity in TABLE.grants}
    clients["legacy-batch"] = ca.client("", common_name="legacy-batch")  # a CN, no URI SAN
    clients[""] = ca.client("", common_name="")  # proves no identity at all
    table = folder / "access.toml"
    shipped = access.DEFAULT_PATH.read_text(encoding="utf-8")
    table.write_text(
        shipped
        + '\n[identities."legacy-batch"]\nmethods = ["aftersales.v1.Clawback/GetBalances"]\n',
        encoding="utf-8",
    )
    address = f"127.0.0.1:{free_port()}"
    stderr = folder / "server.stderr"
    command = [
        sys.executable, "-m", "server",
        "--address", address,
        "--database", f"sqlite:///{folder / 'aftersales.db'}",
        "--tls-cert", f"{server_cert}.pem",
        "--tls-key", f"{server_cert}.key",
        "--tls-client-ca", str(ca_pem),
        "--access", str(table),
        "--demo",
    ]  # fmt: skip
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=ROOT, env=_environment(), stdout=subprocess.DEVNULL, stderr=sink
        )
    running = Secured(address, ca.cert_pem, clients, stderr)
    try:
        wait_until_serving(running, process)
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)


def channel(server: Secured, identity: str | None, ca: bytes | None = None) -> grpc.Channel:
    """A TLS channel to the server, with the client certificate of `identity` (None: none)."""
    cert = server.clients[identity] if identity is not None else None
    credentials = grpc.ssl_channel_credentials(
        ca or server.ca, cert.key if cert else None, cert.cert if cert else None
    )
    return grpc.secure_channel(server.address, credentials)


def wait_until_serving(server: Secured, process: subprocess.Popen, seconds: float = 30) -> None:
    import time

    deadline = time.monotonic() + seconds
    with channel(server, "spiffe://platform/operator-console") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        while True:
            assert process.poll() is None, server.stderr.read_text()
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, server.stderr.read_text()
            time.sleep(0.1)


def call(ch: grpc.Channel, method: str) -> grpc.RpcError | None:
    """Calls `method` ("package.Service/Method") with an empty request; the error, if any."""
    service, name = method.split("/")
    for module in (sync_pb2, entry_pb2, clawback_pb2):
        descriptor = module.DESCRIPTOR.services_by_name.get(service.rpartition(".")[2])
        if descriptor is not None and descriptor.full_name == service:
            rpc = descriptor.methods_by_name[name]
            break
    request = message_factory.GetMessageClass(rpc.input_type)()
    response = message_factory.GetMessageClass(rpc.output_type)
    stub = ch.unary_unary(
        f"/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response.FromString,
    )
    try:
        stub(request, timeout=10)
    except grpc.RpcError as error:
        return error
    return None


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo")


GRANTS = [(identity, method) for identity in sorted(TABLE.grants) for method in METHOD_NAMES]


@pytest.mark.parametrize(("identity", "method"), GRANTS)
def test_every_method_is_open_to_the_identities_the_table_grants_and_to_no_other(
    secured, identity, method
):
    with channel(secured, identity) as ch:
        error = call(ch, method)

    if TABLE.allows(identity, method):
        # Past the guard: the empty request itself may still be refused, but not the caller.
        assert error is None or error.code() not in (
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.UNAUTHENTICATED,
        ), (error.code(), error.details())
    else:
        assert error is not None and error.code() is grpc.StatusCode.PERMISSION_DENIED
        info = error_info(error)
        assert info.reason == "CALLER_NOT_ALLOWED"
        assert dict(info.metadata) == {"identity": identity, "method": method}


def test_a_caller_without_a_certificate_is_refused_at_the_handshake(secured):
    with Client(secured.address, root_certificates=secured.ca) as client:
        with pytest.raises(Unavailable):
            client.get_balances(owner_id="shop-sunny")


def test_a_certificate_from_another_ca_is_refused_at_the_handshake(secured):
    stranger = Authority("another CA").client("spiffe://platform/wallet-system")
    with Client(
        secured.address,
        root_certificates=secured.ca,
        certificate_chain=stranger.cert,
        private_key=stranger.key,
    ) as client:
        with pytest.raises(Unavailable):
            client.get_balances(owner_id="shop-sunny")


def test_a_plaintext_caller_is_refused(secured):
    with Client(secured.address) as client:
        with pytest.raises(Unavailable):
            client.get_balances(owner_id="shop-sunny")


def test_a_certificate_without_a_uri_is_known_by_its_common_name(secured):
    with channel(secured, "legacy-batch") as ch:
        assert call(ch, "aftersales.v1.Clawback/GetBalances").code() is (
            grpc.StatusCode.INVALID_ARGUMENT  # past the guard: the empty request names nothing
        )
        refused = call(ch, "aftersales.v1.Clawback/ListTransfers")

    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error_info(refused).metadata["identity"] == "legacy-batch"


def test_a_certificate_that_names_no_one_is_unauthenticated(secured):
    with channel(secured, "") as ch:
        error = call(ch, "aftersales.v1.Clawback/GetBalances")

    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert error_info(error).reason == "CALLER_NOT_AUTHENTICATED"


def test_health_needs_a_certificate_but_no_grant(secured):
    with channel(secured, "legacy-batch") as ch:
        answer = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)

    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_an_allowed_caller_moves_money_and_the_log_names_it(secured):
    wallet = "spiffe://platform/wallet-system"
    cert = secured.clients[wallet]
    with Client(
        secured.address,
        root_certificates=secured.ca,
        certificate_chain=cert.cert,
        private_key=cert.key,
    ) as client:
        from aftersales.v1 import resources_pb2 as pb

        account = pb.AccountRef(kind=pb.ACCOUNT_KIND_ANXIN_WALLET, owner_id="shop-sunny")
        posted = client.post_funds(account, 1_000, memo="top-up")
    assert posted.balance.balance == 501_000
    assert f'"caller": "{wallet}"' in secured.stderr.read_text(encoding="utf-8")


def test_plaintext_is_refused_on_an_address_beyond_loopback_unless_told(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "server", "--address", f"0.0.0.0:{free_port()}",
         "--database", f"sqlite:///{tmp_path / 'a.db'}"],
        cwd=ROOT, env=_environment(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert done.returncode == 2
    assert "refusing to serve unauthenticated callers" in done.stderr
