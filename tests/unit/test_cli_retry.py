"""The `retry` a failed CLI mutation reports: the same command, its request id (and a refund's
times) right after the command name, and no bearer token in the clear."""

from __future__ import annotations

import json
import shlex
import signal
import socket
import subprocess
import sys
import time

import pytest

from client.__main__ import _retry, build_parser, main
from server.certs import Authority


def test_the_retry_says_the_request_id_after_the_command_and_before_a_double_dash():
    argv = ["--address", "funds", "funds", "CASH", "kol-1", "--", "-500"]

    retry = _retry("aftersales", argv, "funds", ["--request-id", "req-00000001"])

    words = shlex.split(retry)
    assert words == [
        "aftersales", "--address", "funds", "funds", "--request-id", "req-00000001",
        "CASH", "kol-1", "--", "-500",
    ]  # fmt: skip
    parsed = build_parser().parse_args(words[1:])
    assert (parsed.request_id, parsed.amount, parsed.address) == ("req-00000001", -500, "funds")


def test_the_retry_reads_the_token_from_the_environment_instead_of_printing_it():
    for argv in (
        ["--token", "eyJ.secret.sig", "open", "order-1", "staff-1"],
        ["--token=eyJ.secret.sig", "open", "order-1", "staff-1"],
    ):
        retry = _retry("aftersales", argv, "open", ["--request-id", "req-00000002"])

        assert "secret" not in retry
        assert '"$AFTERSALES_TOKEN"' in retry
        assert shlex.split(retry, posix=True)[-3:] == ["req-00000002", "order-1", "staff-1"]


def test_the_command_line_takes_no_abbreviated_option():
    """`--tok SECRET` would escape the retry's redaction, `--addr` its placement."""
    parser = build_parser()
    for argv in (
        ["--tok", "eyJ.secret.sig", "open", "o", "s"],
        ["funds", "CASH", "k", "1", "--me", "x"],
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)


# --- A bad command line: exit 2 with one line, before any call ------------------------------------


def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(["--address", "127.0.0.1:1", *argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("option", ["--tls-cert", "--tls-key"])
def test_a_client_certificate_without_its_key_or_the_reverse_is_a_bad_command_line(
    tmp_path, option
):
    """In a process of its own: gRPC aborts the process it is given one of the two in."""
    pem = tmp_path / "one.pem"
    pem.write_bytes(Authority().cert_pem)

    done = subprocess.run(
        [sys.executable, "-m", "client", "--address", "127.0.0.1:1", option, str(pem), "get", "e"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "aftersales: error: --tls-cert and --tls-key go together: give both or neither"
    ]


@pytest.mark.parametrize("option", ["--tls-ca", "--tls-cert", "--tls-key"])
def test_an_unreadable_tls_file_is_a_bad_command_line(capsys, tmp_path, option):
    issued = Authority().client("spiffe://test/caller")
    files = {"--tls-cert": tmp_path / "c.pem", "--tls-key": tmp_path / "c.key"}
    files["--tls-cert"].write_bytes(issued.cert)
    files["--tls-key"].write_bytes(issued.key)
    files[option] = tmp_path / "missing.pem"
    argv = [word for name, path in files.items() for word in (name, str(path))]

    code, err = _cli(capsys, *argv, "get", "entry-1")

    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith(f"aftersales: error: {option}: cannot read ")


@pytest.mark.parametrize("option", ["--tls-ca", "--tls-cert", "--tls-key"])
def test_a_tls_file_that_is_not_pem_is_a_bad_command_line(capsys, tmp_path, option):
    authority = Authority()
    issued = authority.client("spiffe://test/caller")
    contents = {"--tls-ca": authority.cert_pem, "--tls-cert": issued.cert, "--tls-key": issued.key}
    contents[option] = b"not PEM\n"
    argv = []
    for name, content in contents.items():
        path = tmp_path / name.removeprefix("--")
        path.write_bytes(content)
        argv += [name, str(path)]

    code, err = _cli(capsys, *argv, "get", "entry-1")

    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith(f"aftersales: error: {option} ")


# --- Ctrl-C ---------------------------------------------------------------------------------------


@pytest.fixture
def silent_server():
    """An address that takes connections and never answers: a call waits there until stopped."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(30)
        yield listener


def _interrupted(listener: socket.socket, *argv: str) -> subprocess.CompletedProcess[str]:
    """`python -m client ARGV` against the silent server, sent SIGINT once its call is on the
    wire, as an operator's Ctrl-C."""
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    process = subprocess.Popen(
        [sys.executable, "-m", "client", "--address", address, "--timeout", "60", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    connection, _ = listener.accept()  # the call's channel connects
    with connection:
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_a_mutation_interrupted_before_its_answer_reports_an_unknown_outcome_and_its_retry(
    silent_server,
):
    done = _interrupted(silent_server, "funds", "CASH", "kol-1", "500")

    assert done.returncode == 5, done.stderr
    assert done.stdout == ""
    report = json.loads(done.stderr)
    assert report["code"] == "CANCELLED"
    retry = shlex.split(report["retry"])
    assert retry[retry.index("--request-id") + 1] == report["request_id"]
    assert build_parser().parse_args(retry[1:]).amount == 500


def test_a_read_interrupted_exits_130(silent_server):
    done = _interrupted(silent_server, "get", "entry-1")

    assert done.returncode == 130, done.stderr
    assert (done.stdout, done.stderr) == ("", "")


def test_events_follow_stopped_by_ctrl_c_exits_0(silent_server):
    """Following runs until Ctrl-C: that is its end, not a failure."""
    done = _interrupted(silent_server, "events", "--follow")

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@pytest.mark.parametrize("ids", [[], ["clawback-1", "--refund", "refund-1"]], ids=["none", "both"])
def test_a_clawback_asked_for_by_no_id_or_both_is_a_bad_command_line(capsys, ids):
    code, err = _cli(capsys, "clawback", *ids)

    assert code == 2
    assert err.strip().splitlines() == [
        "aftersales: error: clawback: give one of CLAWBACK_ID and --refund"
    ]
