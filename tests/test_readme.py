"""The README's console sessions work as written: each command, run against `make run`'s server
with its demo data, prints what the README shows (times and generated ids aside)."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server import settings
from server.certs import DEV_ISSUER, write_all
from server.grpc.app import METHOD_NAMES
from tests.pg import free_port

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ADDRESS = "localhost:50051"
MARK = "__README_COMMAND_DONE__"

_VOLATILE = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)"), "<time>"),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"ipv4:127\.0\.0\.1:\d+"), "<peer>"),
]


def console_blocks(text: str, tag: str = "") -> list[list[tuple[str, str]]]:
    """Each ```console block (```console <tag> with a tag) as [(command, expected output)];
    `$ ` starts a command and a trailing backslash continues it."""
    blocks = []
    opening = "```console" + (f" {tag}" if tag else "")
    for body in re.findall(re.escape(opening) + r"\n(.*?)```", text, flags=re.S):
        steps: list[tuple[str, list[str]]] = []
        lines = body.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("$ "):
                command = [line[2:]]
                while command[-1].endswith("\\"):
                    i += 1
                    command.append(lines[i])
                steps.append(("\n".join(command), []))
            elif steps:
                steps[-1][1].append(line)
            i += 1
        blocks.append([(cmd, "\n".join(out)) for cmd, out in steps])
    return blocks


def normalise(text: str) -> str:
    for pattern, stand_in in _VOLATILE:
        text = pattern.sub(stand_in, text)
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def run_session(commands: list[str], address: str, env: dict[str, str]) -> list[str]:
    """Runs the commands in one bash session (variables carry over); returns each one's output,
    stdout and stderr together."""
    script = "".join(
        f"{command.replace(ADDRESS, address)}\necho; echo {MARK}\n" for command in commands
    )
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=env["WORKDIR"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    outputs = done.stdout.split(MARK + "\n")
    return [out for out in outputs[: len(commands)]]


def start_demo_server(
    workdir: pathlib.Path, *options: str, channel_credentials: grpc.ChannelCredentials | None = None
) -> tuple[subprocess.Popen, str]:
    """`make run`'s server: the shipped policy, SQLite under workdir/var, the demo data."""
    address = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "--demo", "--address", address, "--drain-seconds", "0"]
        + list(options),
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if channel_credentials is None:
        channel = grpc.insecure_channel(address)
    else:
        channel = grpc.secure_channel(address, channel_credentials)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 30
        while True:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return process, address
            except grpc.RpcError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the server did not start: {process.stderr.read().decode()}")
            time.sleep(0.1)


def session_env(workdir: pathlib.Path) -> dict[str, str]:
    """What `source .venv/bin/activate` gives: the venv's grpcurl and `aftersales` first on PATH."""
    bin_dir = pathlib.Path(sys.executable).parent
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "WORKDIR": str(workdir),
    }


@pytest.fixture
def demo_server(tmp_path):
    process, address = start_demo_server(tmp_path)
    yield address
    process.terminate()
    process.wait(timeout=15)


def test_readme_console_sessions_print_what_the_readme_shows(demo_server, tmp_path):
    steps = [step for block in console_blocks(README.read_text(encoding="utf-8")) for step in block]
    assert len(steps) >= 10, "the README should walk through the service"
    outputs = run_session([cmd for cmd, _ in steps], demo_server, session_env(tmp_path))
    assert len(outputs) == len(steps)
    for (command, expected), actual in zip(steps, outputs, strict=True):
        assert normalise(actual) == normalise(expected), f"README command:\n{command}"


def test_readme_secure_session_prints_what_the_readme_shows(tmp_path):
    """The secure mode as the README starts it: `make certs`' certificates, --tls-client-ca."""
    certs = tmp_path / "var" / "certs"
    write_all(certs, sorted(settings.load_access(METHOD_NAMES).grants))
    console = (certs / "operator-console.pem").read_bytes(), (certs / "operator-console.key")
    process, address = start_demo_server(
        tmp_path,
        "--tls-cert", str(certs / "server.pem"),
        "--tls-key", str(certs / "server.key"),
        "--tls-client-ca", str(certs / "ca.pem"),
        "--jwks", str(certs / "jwks.json"),
        "--token-issuer", DEV_ISSUER,
        channel_credentials=grpc.ssl_channel_credentials(
            (certs / "ca.pem").read_bytes(), console[1].read_bytes(), console[0]
        ),
    )  # fmt: skip
    try:
        steps = [
            step
            for block in console_blocks(README.read_text(encoding="utf-8"), tag="secure")
            for step in block
        ]
        assert len(steps) >= 4, "the README should show the secure mode"
        outputs = run_session([cmd for cmd, _ in steps], address, session_env(tmp_path))
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert len(outputs) == len(steps)
    for (command, expected), actual in zip(steps, outputs, strict=True):
        assert normalise(actual) == normalise(expected), f"README command:\n{command}"


def test_the_server_s_help_names_each_environment_variable_of_the_readme_s_table():
    table = README.read_text(encoding="utf-8").split("\n## Configuration\n")[1].split("\n#")[0]
    variables = [
        name
        for row in re.findall(r"^\| `--.*$", table, re.MULTILINE)
        for name in re.findall(r"`([A-Z][A-Z_]+)(?:=1)?`", row.split("|")[2])
    ]
    assert "AFTERSALES_METRICS_ADDRESS" in variables and len(variables) >= 20
    shown = subprocess.run(
        [sys.executable, "-m", "server", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    said = " ".join(shown.split()).replace("- ", "-")  # as one line, words cut at hyphens joined
    assert [name for name in variables if f"env {name}" not in said] == []
