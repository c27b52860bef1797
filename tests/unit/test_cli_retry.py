"""The `retry` a failed CLI mutation reports: the same command, its request id (and a refund's
times) right after the command name, and no bearer token in the clear."""

from __future__ import annotations

import shlex

import pytest

from client.__main__ import _retry, build_parser


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
