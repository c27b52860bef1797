"""`python -m client`: the operators' command line for the late after-sales service.

Prints responses as JSON. A failed call prints its status and details as JSON on stderr and exits
with a code that says what kind of failure it was:

    0  done (also when the reader of the output stops reading it, as `| head` does)
    1  refused: the request or the rules (INVALID_ARGUMENT, FAILED_PRECONDITION, ALREADY_EXISTS)
    2  bad command line (a --tls-* file unreadable, not PEM or without its pair, or a token
       no header may carry, included)
    3  not found (NOT_FOUND), or events pruned past the position asked for (OUT_OF_RANGE)
    4  the caller is not authenticated or not allowed (UNAUTHENTICATED, PERMISSION_DENIED)
    5  the server could not be reached or did not answer in time (UNAVAILABLE,
       DEADLINE_EXCEEDED), or a command that changes something was interrupted (Ctrl-C, reported
       as CANCELLED) before its answer came: it may have done it or not; sending the same
       request again is safe
    6  anything else (INTERNAL: a bug on the server)
  130  a command that changes nothing was interrupted (Ctrl-C); `events --follow`, which runs
       until Ctrl-C, exits 0 then

A command that changes something (open, apply, funds, refund) is one request, named by its
request id: the one given with --request-id, else a new one. The same request sent again is
answered from the server's record and done once; a command run again without it is a new request
(a second top-up). So a failed one reports its `request_id`; and when it may have been done or
not (exit 5 or 6), `retry`: the shell command that sends the same request again, with its request
id (and a refund's --started-at and --paid-at, which default to the moment it was first sent),
and a token read from AFTERSALES_TOKEN rather than printed.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import sys
from datetime import UTC, datetime

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from aftersales.v1 import clawback_pb2, events_pb2, resources_pb2
from client import AfterSalesError, Client
from client.client import check_certificates, check_private_key, new_request_id
from client.errors import from_rpc_error

# The commands that change something: each is one request (see above).
MUTATIONS = frozenset({"open", "apply", "funds", "refund"})


def _print(message: Message) -> None:
    print(json_format.MessageToJson(message, indent=2, preserving_proto_field_name=True))


def _seconds(text: str) -> float:
    """A duration above zero, finite: a bad one is the command line's fault (exit 2), not a
    deadline the server missed (exit 5)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above zero and finite, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    # No abbreviated options: a retry (_retry) names each option as the parser knows it.
    p = argparse.ArgumentParser(
        prog="aftersales",
        description=__doc__,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the exit codes, a line each
    )
    p.add_argument("--address", default=os.environ.get("AFTERSALES_ADDRESS", "127.0.0.1:50051"))
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=10.0,
        help="seconds each call may take, above zero (default 10)",
    )
    p.add_argument(
        "--tls-ca",
        default=os.environ.get("AFTERSALES_TLS_CA", ""),
        help="PEM CA of the server's certificate: talk TLS (env AFTERSALES_TLS_CA)",
    )
    p.add_argument(
        "--tls-cert",
        default=os.environ.get("AFTERSALES_CLIENT_CERT", ""),
        help="PEM client certificate proving this caller's identity (env AFTERSALES_CLIENT_CERT)",
    )
    p.add_argument(
        "--tls-key",
        default=os.environ.get("AFTERSALES_CLIENT_KEY", ""),
        help="PEM private key of --tls-cert (env AFTERSALES_CLIENT_KEY)",
    )
    p.add_argument(
        "--token",
        default=os.environ.get("AFTERSALES_TOKEN", ""),
        help="signed token of the staff member or buyer to act for (env AFTERSALES_TOKEN)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check", help="could OPERATOR open the entry of ORDER now, and why not")
    c.add_argument("order_id")
    c.add_argument("operator_id", nargs="?", default="", help="the staff account (the token's)")

    c = sub.add_parser(
        "check-batch", help="check up to 500 ORDERs at once: one JSON line per order, in order"
    )
    c.add_argument("order_ids", nargs="+", metavar="order_id")
    c.add_argument("--operator", default="", help="the staff account (default: the token's)")

    c = sub.add_parser("open", help="open the entry of ORDER")
    c.add_argument("order_id")
    c.add_argument("operator_id", nargs="?", default="", help="the staff account (the token's)")
    c.add_argument("--note", default="")
    c.add_argument("--request-id", default=None)

    c = sub.add_parser("get", help="one entry")
    c.add_argument("entry_id")

    c = sub.add_parser("list", help="entries of a shop and/or an order, newest first")
    c.add_argument("--shop", default="")
    c.add_argument("--order", default="")
    c.add_argument(
        "--state",
        choices=[s.removeprefix("ENTRY_STATE_") for s in resources_pb2.EntryState.keys()[1:]],
    )

    c = sub.add_parser("apply", help="the buyer files within the window")
    c.add_argument("order_id")
    c.add_argument("buyer_id")
    c.add_argument("amount", type=int, help="in fen")
    c.add_argument("--reason", default="")
    c.add_argument("--request-id", default=None)

    c = sub.add_parser("order-entry", help="the buyer's view of ORDER's entry (a buyer's --token)")
    c.add_argument("order_id")

    c = sub.add_parser("funds", help="money into (positive) or out of (negative) an account")
    c.add_argument(
        "kind",
        type=str.upper,
        choices=[k.removeprefix("ACCOUNT_KIND_") for k in resources_pb2.AccountKind.keys()[1:]],
    )
    c.add_argument("owner_id", nargs="?", default="")
    c.add_argument("amount", type=int, help="in fen")
    c.add_argument("--memo", default="")
    c.add_argument("--request-id", default=None)

    c = sub.add_parser("refund", help="record a refund paid to the buyer (and its clawback)")
    c.add_argument("refund_id")
    c.add_argument("order_id")
    c.add_argument("amount", type=int, help="in fen")
    c.add_argument("--application", default="", help="the application it came through")
    c.add_argument(
        "--started-at",
        type=_time,
        default=None,
        help="ISO 8601 (UTC unless it says its offset); default now",
    )
    c.add_argument(
        "--paid-at",
        type=_time,
        default=None,
        help="ISO 8601 (UTC unless it says its offset); default now",
    )
    c.add_argument("--request-id", default=None)

    c = sub.add_parser("preview", help="what a late refund of AMOUNT would recover now")
    c.add_argument("order_id")
    c.add_argument("amount", type=int, help="in fen")
    c.add_argument(
        "--started-at",
        type=_time,
        default=None,
        help="ISO 8601 (UTC unless it says its offset); default now",
    )

    c = sub.add_parser("clawback", help="one clawback, by its id or --refund id")
    c.add_argument("clawback_id", nargs="?", default="")
    c.add_argument("--refund", default="")

    c = sub.add_parser("clawbacks", help="a shop's clawbacks, newest first")
    c.add_argument("shop_id")
    c.add_argument(
        "--state",
        choices=[s.removeprefix("CLAWBACK_STATE_") for s in resources_pb2.ClawbackState.keys()[1:]],
    )

    c = sub.add_parser("balances", help="balances of all accounts of an owner (shop or payee)")
    c.add_argument("owner_id")

    c = sub.add_parser("transfers", help="transfers of an account, newest first")
    c.add_argument(
        "kind",
        type=str.upper,
        choices=[k.removeprefix("ACCOUNT_KIND_") for k in resources_pb2.AccountKind.keys()[1:]],
    )
    c.add_argument("owner_id", nargs="?", default="")

    c = sub.add_parser(
        "events", help="the events, one JSON line each, in position order (service Events)"
    )
    c.add_argument(
        "--follow", action="store_true", help="then each event as it commits, until Ctrl-C"
    )
    c.add_argument(
        "--from",
        dest="after",
        type=int,
        default=None,
        metavar="POSITION",
        help="the events after POSITION (the last one handled); default: the oldest held",
    )
    c.add_argument("--shop", default="", help="only this shop's events")
    c.add_argument(
        "--type",
        dest="types",
        action="append",
        default=[],
        type=str.upper,
        choices=[t.removeprefix("EVENT_TYPE_") for t in events_pb2.EventType.keys()[1:]],
        help="only events of this type (repeat for more)",
    )
    for command in sub.choices.values():
        command.allow_abbrev = False
    return p


def _time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _events(args: argparse.Namespace, client: Client) -> None:
    """Every event held after --from, then with --follow each one as it commits."""
    types = [events_pb2.EventType.Value("EVENT_TYPE_" + t) for t in args.types]
    after, from_oldest = args.after or 0, args.after is None
    if args.follow:
        for event in client.watch_events(
            after, from_oldest=from_oldest, shop_id=args.shop, types=types
        ):
            print(_line(event), flush=True)
        return
    events = client.iter_events(
        after, from_oldest=from_oldest, shop_id=args.shop, types=types, page_size=500
    )
    for event in events:
        print(_line(event))


def _line(message: Message) -> str:
    return json_format.MessageToJson(message, indent=None, preserving_proto_field_name=True)


def run(args: argparse.Namespace, client: Client) -> None:
    if args.command == "events":
        _events(args, client)
    elif args.command == "check":
        _print(client.check_eligibility(args.order_id, args.operator_id))
    elif args.command == "check-batch":
        batch = client.batch_check_eligibility(args.order_ids, args.operator)
        for result in batch.results:
            print(json_format.MessageToJson(result, indent=None, preserving_proto_field_name=True))
    elif args.command == "open":
        _print(
            client.open_entry(
                args.order_id, args.operator_id, note=args.note, request_id=args.request_id
            )
        )
    elif args.command == "get":
        _print(client.get_entry(args.entry_id))
    elif args.command == "list":
        entry_state = (
            resources_pb2.EntryState.Value("ENTRY_STATE_" + args.state)
            if args.state
            else resources_pb2.ENTRY_STATE_UNSPECIFIED
        )
        entries = client.iter_entries(shop_id=args.shop, order_id=args.order, state=entry_state)
        for entry in entries:
            print(json_format.MessageToJson(entry, indent=None, preserving_proto_field_name=True))
    elif args.command == "order-entry":
        _print(client.get_buyer_order_entry(args.order_id))
    elif args.command == "apply":
        _print(
            client.apply_after_sales(
                args.order_id,
                args.buyer_id,
                args.amount,
                reason=args.reason,
                request_id=args.request_id,
            )
        )
    elif args.command == "funds":
        account = resources_pb2.AccountRef(
            kind=resources_pb2.AccountKind.Value("ACCOUNT_KIND_" + args.kind),
            owner_id=args.owner_id,
        )
        _print(client.post_funds(account, args.amount, memo=args.memo, request_id=args.request_id))
    elif args.command == "refund":
        _print(
            client.record_refund(
                args.refund_id,
                args.order_id,
                args.amount,
                application_id=args.application,
                started_at=args.started_at,
                paid_at=args.paid_at,
                request_id=args.request_id,
            )
        )
    elif args.command == "preview":
        _print(client.preview_clawback(args.order_id, args.amount, started_at=args.started_at))
    elif args.command == "clawback":
        _print(client.get_clawback(clawback_id=args.clawback_id, refund_id=args.refund))
    elif args.command == "clawbacks":
        clawback_state = (
            resources_pb2.ClawbackState.Value("CLAWBACK_STATE_" + args.state)
            if args.state
            else resources_pb2.CLAWBACK_STATE_UNSPECIFIED
        )
        for clawback in client.iter_clawbacks(args.shop_id, state=clawback_state):
            print(
                json_format.MessageToJson(clawback, indent=None, preserving_proto_field_name=True)
            )
    elif args.command == "balances":
        response = client.clawbacks.GetBalances(
            clawback_pb2.GetBalancesRequest(owner_id=args.owner_id), timeout=client.timeout
        )
        _print(response)
    elif args.command == "transfers":
        account = resources_pb2.AccountRef(
            kind=resources_pb2.AccountKind.Value("ACCOUNT_KIND_" + args.kind),
            owner_id=args.owner_id,
        )
        for transfer in client.iter_transfers(account):
            print(
                json_format.MessageToJson(transfer, indent=None, preserving_proto_field_name=True)
            )


# Exit codes the status codes do not give (see the module's docstring).
UNKNOWN_OUTCOME = 5
INTERRUPTED = 130

EXIT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: 1,
    grpc.StatusCode.FAILED_PRECONDITION: 1,
    grpc.StatusCode.ALREADY_EXISTS: 1,
    grpc.StatusCode.NOT_FOUND: 3,
    grpc.StatusCode.OUT_OF_RANGE: 3,
    grpc.StatusCode.UNAUTHENTICATED: 4,
    grpc.StatusCode.PERMISSION_DENIED: 4,
    grpc.StatusCode.UNAVAILABLE: UNKNOWN_OUTCOME,
    grpc.StatusCode.DEADLINE_EXCEEDED: UNKNOWN_OUTCOME,
}


class _BadCommandLine(Exception):
    """What makes the command line unusable before any call: one line on stderr, exit 2."""


def _read(option: str, path: str) -> bytes | None:
    """The bytes of the file an option names (None when not given)."""
    try:
        return pathlib.Path(path).read_bytes() if path else None
    except OSError as e:
        raise _BadCommandLine(f"{option}: cannot read {path}: {e.strerror}") from None


def _client(args: argparse.Namespace) -> Client:
    """The client the options describe: the TLS files read and checked first, since gRPC
    aborts the process on a certificate without its key and fails a file that is not PEM as if
    the server were unavailable."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise _BadCommandLine("--tls-cert and --tls-key go together: give both or neither")
    root = _read("--tls-ca", args.tls_ca)
    chain = _read("--tls-cert", args.tls_cert)
    key = _read("--tls-key", args.tls_key)
    try:
        if root is not None:
            check_certificates(root, f"--tls-ca {args.tls_ca}")
        if chain is not None:
            check_certificates(chain, f"--tls-cert {args.tls_cert}")
        if key is not None:
            check_private_key(key, f"--tls-key {args.tls_key}")
        return Client(
            args.address,
            timeout=args.timeout,
            root_certificates=root,
            certificate_chain=chain,
            private_key=key,
            token=args.token or None,
        )
    except ValueError as e:
        raise _BadCommandLine(str(e)) from None


def _fix(args: argparse.Namespace) -> list[str]:
    """Fixes what a mutation would otherwise make anew each time it is sent (its request id, a
    refund's times), and returns the options that say them again."""
    again: list[str] = []
    if args.request_id is None:
        args.request_id = new_request_id()
        again += ["--request-id", args.request_id]
    if args.command == "refund":
        now = datetime.now(UTC)
        for option, name in (("--started-at", "started_at"), ("--paid-at", "paid_at")):
            if getattr(args, name) is None:
                setattr(args, name, now)
                again += [option, now.isoformat()]
    return again


# Global options that take a value, as a command line gives them before the command.
_VALUED = frozenset({"--address", "--timeout", "--tls-ca", "--tls-cert", "--tls-key", "--token"})
# What a retry says for a token: a bearer token is nothing to print where logs keep it.
_TOKEN = '"$AFTERSALES_TOKEN"'


def _retry(prog: str, argv: list[str], command: str, again: list[str]) -> str:
    """The shell command that sends the same request as `argv`: `again` right after the
    command (so before any `--`), and a token given read from AFTERSALES_TOKEN instead."""
    words = [shlex.quote(prog)]
    placed = False
    i = 0
    while i < len(argv):
        word = argv[i]
        if not placed and word in _VALUED and i + 1 < len(argv):
            words += [word, _TOKEN if word == "--token" else shlex.quote(argv[i + 1])]
            i += 2
            continue
        words.append(
            f"--token={_TOKEN}" if not placed and word.startswith("--token=") else shlex.quote(word)
        )
        if not placed and word == command:
            words += [shlex.quote(w) for w in again]
            placed = True
        i += 1
    return " ".join(words)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    again = _fix(args) if args.command in MUTATIONS else None
    try:
        if args.command == "clawback" and bool(args.clawback_id) == bool(args.refund):
            raise _BadCommandLine("clawback: give one of CLAWBACK_ID and --refund")
        client = _client(args)
    except _BadCommandLine as bad:
        print(f"{parser.prog}: error: {bad}", file=sys.stderr)
        return 2
    with client:
        try:
            run(args, client)
            sys.stdout.flush()  # here, where a reader that left is answered below
        except KeyboardInterrupt:
            if again is None:  # a read: nothing was done
                return 0 if args.command == "events" and args.follow else INTERRUPTED
            # A mutation sent may have been done or not, as when no answer came in time.
            interrupted = {
                "code": grpc.StatusCode.CANCELLED.name,
                "message": "interrupted before the answer came: it may have been done or not",
                "details": [],
                "request_id": args.request_id,
                "retry": _retry(parser.prog, argv, args.command, again),
            }
            print(json.dumps(interrupted, indent=2, ensure_ascii=False), file=sys.stderr)
            return UNKNOWN_OUTCOME
        except BrokenPipeError:
            # The reader of the output left (`| head`): what it read was done; nothing more
            # is to be written, not even by the interpreter flushing stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except (AfterSalesError, grpc.RpcError) as error:
            e = error if isinstance(error, AfterSalesError) else from_rpc_error(error)
            report = {
                "code": e.code.name,
                "message": e.message,
                # Each detail as google.protobuf.Any renders in JSON: its type, then its fields.
                "details": [
                    {
                        "@type": f"type.googleapis.com/{d.DESCRIPTOR.full_name}",
                        **json_format.MessageToDict(d, preserving_proto_field_name=True),
                    }
                    for d in e.details
                ],
            }
            if again is not None:
                report["request_id"] = args.request_id
                if EXIT_CODES.get(e.code, 6) >= 5:  # it may have been done or not
                    report["retry"] = _retry(parser.prog, argv, args.command, again)
            print(json.dumps(report, indent=2, ensure_ascii=False), file=sys.stderr)
            return EXIT_CODES.get(e.code, 6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
