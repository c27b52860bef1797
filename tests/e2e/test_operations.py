"""What operators rely on: Prometheus metrics over HTTP and TLS, on a real `python -m server`."""

from __future__ import annotations

import datetime
import ipaddress
import pathlib
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import Client, FailedPrecondition
from server.certs import TokenKey
from tests.environment import server_environment
from tests.pg import free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _self_signed(folder: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.crt", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def as_staff(port: int, demo_key: pathlib.Path, staff_id: str) -> Client:
    """A TLS client acting for a demo staff member, with a token of the demo's login key."""
    cert = demo_key.parent.parent / "server.crt"  # _self_signed's, beside the demo keys
    return Client(
        f"localhost:{port}",
        root_certificates=cert.read_bytes(),
        token=TokenKey.read(demo_key).mint(staff_id, "staff"),
    )


@pytest.fixture
def tls_server(tmp_path):
    cert, key = _self_signed(tmp_path)
    port, metrics_port = free_port(), free_port()
    log = tmp_path / "server.log"
    env = server_environment()
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server",
                "--demo",
                "--address",
                f"127.0.0.1:{port}",
                "--database",
                f"sqlite:///{tmp_path / 'db.sqlite'}",
                "--tls-cert",
                str(cert),
                "--tls-key",
                str(key),
                "--metrics-address",
                f"127.0.0.1:{metrics_port}",
                "--demo-keys",
                str(tmp_path / "demo"),
                "--drain-seconds",
                "0",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    channel = grpc.secure_channel(f"localhost:{port}", credentials)
    deadline = time.monotonic() + 30
    while True:
        try:
            health = health_pb2_grpc.HealthStub(channel)
            if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                break
        except grpc.RpcError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                pytest.fail(f"the server did not serve within 30 s:\n{_tail(log)}")
            time.sleep(0.1)
    yield port, metrics_port, channel, tmp_path / "demo" / "token-key.pem"
    channel.close()
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"the server did not stop within 15 s of SIGTERM:\n{_tail(log)}")


def _tail(log: pathlib.Path) -> str:
    """The last lines of a server's log."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-30:])


def test_the_server_speaks_tls_and_refuses_plaintext(tls_server):
    port, _, channel, demo_key = tls_server
    with as_staff(port, demo_key, "staff-owner") as client:
        assert client.check_eligibility("order-eligible", "staff-owner").eligible

    with Client(f"127.0.0.1:{port}", timeout=2) as plaintext:
        with pytest.raises(Exception) as refused:
            plaintext.check_eligibility("order-eligible", "staff-owner")
    assert refused.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_metrics_count_calls_by_method_and_status_code(tls_server):
    port, metrics_port, channel, demo_key = tls_server
    with as_staff(port, demo_key, "staff-owner") as client:
        client.check_eligibility("order-eligible", "staff-owner")
    with as_staff(port, demo_key, "tiny-owner") as client:
        with pytest.raises(FailedPrecondition):
            client.open_entry("order-tiny", "tiny-owner")

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    lines = text.decode().splitlines()
    entry = 'grpc_service="aftersales.v1.AfterSalesEntry",grpc_type="UNARY"'
    assert (
        f'grpc_server_handled_total{{grpc_code="OK",grpc_method="CheckEligibility",{entry}}} 1.0'
        in lines
    )
    assert (
        f'grpc_server_handled_total{{grpc_code="FAILED_PRECONDITION",grpc_method="OpenEntry",'
        f"{entry}}} 1.0" in lines
    )
    assert f'grpc_server_handling_seconds_count{{grpc_method="CheckEligibility",{entry}}} 1.0' in (
        lines
    )
