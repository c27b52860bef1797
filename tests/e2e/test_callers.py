"""Callers prove who they are with a client certificate; the access table says what each may call.

A real `python -m server` with --tls-client-ca, certificates made by server.certs (the same tool
`make certs` runs), and calls through real TLS channels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import signal
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from google.protobuf import message_factory
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from aftersales.v1 import clawback_pb2, entry_pb2, events_pb2, sync_pb2
from client import Client, Unavailable
from server import settings
from server.certs import DEV_ISSUER, Authority, Issued, TokenKey
from server.grpc.app import METHOD_NAMES
from tests.e2e.test_process import ROOT, _environment, log_records
from tests.pg import free_port

TABLE = settings.load_access(METHOD_NAMES)


@dataclasses.dataclass
class Secured:
    address: str
    ca: bytes
    clients: dict[str, Issued]  # by identity
    stderr: pathlib.Path
    login: TokenKey  # the login service whose public key the server trusts

    def token_for(self, identity: str) -> str | None:
        """A valid token of the kind of person `identity` acts for, if it acts for one."""
        kind = TABLE.acts_for.get(identity)
        if kind is None:
            return None
        return self.login.mint("staff-owner" if kind.value == "staff" else "buyer-eligible", kind)


def a_cert_folder(folder: pathlib.Path, ca: Authority) -> tuple[pathlib.Path, pathlib.Path]:
    (folder / "ca.pem").write_bytes(ca.cert_pem)
    ca.server("localhost", "127.0.0.1").write(folder, "server")
    return folder / "ca.pem", folder / "server"


@contextlib.contextmanager
def a_secured_server(folder: pathlib.Path, database_url: str) -> Iterator[Secured]:
    """A server requiring client certificates from its CA, on `database_url` with the demo data;
    a client certificate for each identity of the shipped access table, and a few odd ones."""
    ca = Authority()
    ca_pem, server_cert = a_cert_folder(folder, ca)
    clients = {identity: ca.client(identity) for identity in TABLE.grants}
    clients["legacy-batch"] = ca.client("", common_name="legacy-batch")  # a CN, no URI SAN
    clients[""] = ca.client("", common_name="")  # proves no identity at all
    login = TokenKey()
    (folder / "jwks.json").write_text(json.dumps(login.jwks()), encoding="utf-8")
    table = folder / "access.toml"
    shipped = settings.ACCESS_PATH.read_text(encoding="utf-8")
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
        "--database", database_url,
        "--tls-cert", f"{server_cert}.pem",
        "--tls-key", f"{server_cert}.key",
        "--tls-client-ca", str(ca_pem),
        "--access", str(table),
        "--jwks", str(folder / "jwks.json"),
        "--token-issuer", DEV_ISSUER,
        "--drain-seconds", "0",
        "--demo",
    ]  # fmt: skip
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=ROOT, env=_environment(), stdout=subprocess.DEVNULL, stderr=sink
        )
    running = Secured(address, ca.cert_pem, clients, stderr, login)
    try:
        wait_until_serving(running, process)
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    folder = tmp_path_factory.mktemp("secured")
    with a_secured_server(folder, f"sqlite:///{folder / 'aftersales.db'}") as running:
        yield running


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


def call(
    ch: grpc.Channel, method: str, token: str | None = None, **fields: object
) -> grpc.RpcError | None:
    """Calls `method` ("package.Service/Method") with a request of `fields` (empty by default)
    and the person's `token`; the error, if any."""
    service, name = method.split("/")
    for module in (sync_pb2, entry_pb2, clawback_pb2, events_pb2):
        descriptor = module.DESCRIPTOR.services_by_name.get(service.rpartition(".")[2])
        if descriptor is not None and descriptor.full_name == service:
            rpc = descriptor.methods_by_name[name]
            break
    if rpc.server_streaming:
        fields.setdefault("heartbeat_seconds", 1)
    request = message_factory.GetMessageClass(rpc.input_type)(**fields)
    response = message_factory.GetMessageClass(rpc.output_type)
    metadata = [("authorization", f"Bearer {token}")] if token else None
    if rpc.server_streaming:
        stream = ch.unary_stream(
            f"/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response.FromString,
        )(request, timeout=10, metadata=metadata)
        try:
            next(stream, None)  # the first event or heartbeat: past the guard
        except grpc.RpcError as error:
            return error
        stream.cancel()
        return None
    stub = ch.unary_unary(
        f"/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response.FromString,
    )
    try:
        stub(request, timeout=10, metadata=metadata)
    except grpc.RpcError as error:
        return error
    return None


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    """The error's ErrorInfo, which names the service as its domain."""
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            assert info.domain == "aftersales.livecommerce.io"
            return info
    raise AssertionError("no ErrorInfo")


GRANTS = [(identity, method) for identity in sorted(TABLE.grants) for method in METHOD_NAMES]


@pytest.mark.parametrize(("identity", "method"), GRANTS)
def test_every_method_is_open_to_the_identities_the_table_grants_and_to_no_other(
    secured, identity, method
):
    with channel(secured, identity) as ch:
        error = call(ch, method, secured.token_for(identity))

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
    # The refusal's log line names who was refused, for whoever watches the log.
    lines = log_records(secured.stderr)
    refused_callers = {
        line["caller"]
        for line in lines
        if line.get("method") == "/aftersales.v1.Clawback/ListTransfers"
        and line.get("code") == "PERMISSION_DENIED"
    }
    assert "legacy-batch" in refused_callers and None not in refused_callers


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


# --- The people front ends act for --------------------------------------------------------------

BACKOFFICE = "spiffe://platform/merchant-backoffice"
BUYER_APP = "spiffe://platform/buyer-app"
CHECK = "aftersales.v1.AfterSalesEntry/CheckEligibility"
OPEN = "aftersales.v1.AfterSalesEntry/OpenEntry"
APPLY = "aftersales.v1.AfterSalesEntry/ApplyAfterSales"


def entries_of(secured: Secured, order_id: str) -> list:
    cert = secured.clients["spiffe://platform/operator-console"]
    with Client(
        secured.address,
        root_certificates=secured.ca,
        certificate_chain=cert.cert,
        private_key=cert.key,
    ) as client:
        return list(client.list_entries(order_id=order_id).entries)


def test_the_staff_member_acting_is_the_token_s_subject_not_a_request_field(secured):
    token = secured.login.mint("staff-owner", "staff")
    cert = secured.clients[BACKOFFICE]
    with Client(
        secured.address,
        root_certificates=secured.ca,
        certificate_chain=cert.cert,
        private_key=cert.key,
        token=token,
    ) as client:
        entry = client.open_entry("order-campaign", operator_id="")

    assert entry.operator_id == "staff-owner"
    assert [e.entry_id for e in entries_of(secured, "order-campaign")] == [entry.entry_id]


def test_a_request_naming_another_staff_member_than_the_token_is_refused_and_writes_nothing(
    secured,
):
    token = secured.login.mint("staff-agent", "staff")
    with channel(secured, BACKOFFICE) as ch:
        error = call(
            ch,
            OPEN,
            token,
            order_id="order-recent",
            operator_id="staff-owner",
            request_id="callers-impersonation-1",
        )

    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error_info(error).reason == "NOT_THE_AUTHENTICATED_PERSON"
    assert entries_of(secured, "order-recent") == []


def test_a_person_s_token_from_a_caller_that_acts_for_no_one_is_refused(secured):
    """The operator console reads for itself: a staff member's token it sends would otherwise
    be ignored, and the call answered with the console's wider view than the token's."""
    console = "spiffe://platform/operator-console"
    token = secured.login.mint("staff-owner", "staff")
    with channel(secured, console) as ch:
        with_token = call(ch, CHECK, token, order_id="order-eligible", operator_id="staff-owner")
        without = call(ch, CHECK, order_id="order-eligible", operator_id="staff-owner")

    assert with_token.code() is grpc.StatusCode.PERMISSION_DENIED
    info = error_info(with_token)
    assert info.reason == "CALLER_NOT_ALLOWED"
    assert dict(info.metadata) == {"identity": console, "method": CHECK}
    assert "acts for no one" in with_token.details()
    assert without is None


def test_a_buyer_token_on_a_staff_front_end_is_refused(secured):
    token = secured.login.mint("staff-owner", "buyer")
    with channel(secured, BACKOFFICE) as ch:
        error = call(ch, CHECK, token, order_id="order-eligible")

    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error_info(error).reason == "NOT_THE_AUTHENTICATED_PERSON"


def test_the_buyer_applying_is_the_token_s_subject(secured):
    with channel(secured, BUYER_APP) as ch:
        someone_else = call(
            ch,
            APPLY,
            secured.login.mint("buyer-eligible", "buyer"),
            order_id="order-eligible",
            buyer_id="buyer-campaign",
            amount=100,
            request_id="callers-apply-1",
        )

    assert someone_else.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error_info(someone_else).reason == "NOT_THE_AUTHENTICATED_PERSON"


def forged_tokens(login: TokenKey) -> dict[str, str | None]:
    from datetime import UTC, datetime, timedelta

    import jwt

    now = datetime.now(UTC)
    stranger = TokenKey()  # another key under the same key id
    claims = {"sub": "staff-owner", "kind": "staff", "iss": DEV_ISSUER, "aud": "aftersales"}
    timed = {**claims, "iat": now, "exp": now + timedelta(hours=1)}
    public_pem = login.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "missing": None,
        "expired": login.mint(
            "staff-owner", "staff", now=now - timedelta(hours=3), lifetime=timedelta(hours=1)
        ),
        "wrong-issuer": login.mint("staff-owner", "staff", issuer="someone-else"),
        "wrong-audience": login.mint("staff-owner", "staff", audience="another-service"),
        "wrong-key": stranger.mint("staff-owner", "staff"),
        "alg-none": jwt.encode(timed, None, algorithm="none", headers={"kid": login.key_id}),
        "unknown-kid": TokenKey(login.key, "rotated-away").mint("staff-owner", "staff"),
        "hs256-with-the-public-key": _hs256(timed, public_pem, login.key_id),
        "garbage": "not-a-token",
        # Signed by the login, but naming no id this service takes.
        "subject-too-long": login.mint("s" * 129, "staff"),
        "subject-with-spaces": login.mint(" staff-owner", "staff"),
    }


def _hs256(claims: dict, secret: bytes, kid: str) -> str:
    """The classic key-confusion forgery: HMAC keyed with the server's public key."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(claims, default=lambda d: int(d.timestamp())).encode())
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


FORGERIES = [
    "missing", "expired", "wrong-issuer", "wrong-audience", "wrong-key", "alg-none",
    "unknown-kid", "hs256-with-the-public-key", "garbage", "subject-too-long",
    "subject-with-spaces",
]  # fmt: skip


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_token_that_does_not_verify_is_unauthenticated_and_writes_nothing(secured, forgery):
    token = forged_tokens(secured.login)[forgery]
    with channel(secured, BACKOFFICE) as ch:
        error = call(
            ch,
            OPEN,
            token,
            order_id="order-eligible",
            request_id=f"callers-forged-{forgery}",
        )

    # order-eligible would open for the real staff-owner: only the token stands in the way.
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED, error.details()
    assert error_info(error).reason == "PERSON_NOT_AUTHENTICATED"
    assert entries_of(secured, "order-eligible") == []


def test_the_same_call_with_a_valid_token_opens_the_entry(secured):
    """After the forgeries above: the call they made succeeds with a real token."""
    with channel(secured, BACKOFFICE) as ch:
        error = call(
            ch,
            OPEN,
            secured.login.mint("staff-owner", "staff"),
            order_id="order-eligible",
            request_id="callers-genuine-1",
        )

    assert error is None
    assert [e.operator_id for e in entries_of(secured, "order-eligible")] == ["staff-owner"]


# --- Nothing of another shop shows, not even that it exists --------------------------------------


def as_service(secured: Secured, name: str) -> Client:
    cert = secured.clients[f"spiffe://platform/{name}"]
    return Client(
        secured.address,
        root_certificates=secured.ca,
        certificate_chain=cert.cert,
        private_key=cert.key,
        token=secured.token_for(f"spiffe://platform/{name}"),
    )


@pytest.fixture(scope="module")
def other_shop(secured):
    """A second shop with an open entry and a recorded refund, fed by the systems that own them;
    the demo's staff-owner (shop-sunny) must see none of it."""
    from datetime import UTC, datetime, timedelta

    from aftersales.v1 import resources_pb2 as pb
    from client.client import timestamp

    now = datetime.now(UTC)
    with as_service(secured, "shop-system") as shops:
        shop = shops.put_shop(
            pb.Shop(shop_id="shop-other", name="Other", status=pb.SHOP_STATUS_NORMAL)
        )
        shops.put_staff(
            pb.Staff(staff_id="other-owner", shop_id="shop-other", role=pb.STAFF_ROLE_OWNER)
        )
    with as_service(secured, "order-system") as orders:
        orders.put_order(
            pb.Order(
                order_id="order-other",
                shop_id="shop-other",
                buyer_id="buyer-other",
                kind=pb.ORDER_KIND_ORDINARY,
                category_id="furniture",
                paid_amount=10_000,
                created_at=timestamp(now - timedelta(days=40)),
                completed_at=timestamp(now - timedelta(days=30)),
                after_sales_ends_at=timestamp(now - timedelta(days=23)),
            )
        )
    wallet = pb.AccountRef(kind=pb.ACCOUNT_KIND_ANXIN_WALLET, owner_id="shop-other")
    with as_service(secured, "wallet-system") as wallets:
        funded = wallets.post_funds(wallet, 50_000)
    cert = secured.clients[BACKOFFICE]
    with Client(
        secured.address,
        root_certificates=secured.ca,
        certificate_chain=cert.cert,
        private_key=cert.key,
        token=secured.login.mint("other-owner", "staff"),
    ) as backoffice:
        entry = backoffice.open_entry("order-other", "")
    with as_service(secured, "refund-system") as refunds:
        clawback = refunds.record_refund(
            "refund-other", "order-other", 1_000, started_at=now, paid_at=now
        )
    recorded.update(shop=shop, funded=funded, entry=entry, clawback=clawback)
    return {"entry_id": entry.entry_id, "clawback_id": clawback.clawback_id}


# What the other_shop fixture's calls answered, for the audit test.
recorded: dict = {}


# Each read or write, with an id of the other shop and with an id nobody has.
ACROSS = [
    (CHECK, {"order_id": "{order}"}),
    (OPEN, {"order_id": "{order}", "request_id": "across-open-{order}"}),
    ("aftersales.v1.AfterSalesEntry/GetEntry", {"entry_id": "{entry}"}),
    ("aftersales.v1.AfterSalesEntry/ListEntries", {"shop_id": "{shop}"}),
    ("aftersales.v1.AfterSalesEntry/ListEntries", {"order_id": "{order}"}),
    ("aftersales.v1.Clawback/PreviewClawback", {"order_id": "{order}", "amount": 100}),
    ("aftersales.v1.Clawback/GetClawback", {"clawback_id": "{clawback}"}),
    ("aftersales.v1.Clawback/ListClawbacks", {"shop_id": "{shop}"}),
    ("aftersales.v1.Clawback/GetBalances", {"owner_id": "{shop}"}),
    ("aftersales.v1.Clawback/GetBalances", {"accounts": "{wallet}"}),
    ("aftersales.v1.Clawback/ListTransfers", {"account": "{wallet}"}),
]


def _fields(template: dict, ids: dict) -> dict:
    from aftersales.v1 import resources_pb2 as pb

    fields = {}
    for name, value in template.items():
        if value == "{wallet}":
            ref = pb.AccountRef(kind=pb.ACCOUNT_KIND_ANXIN_WALLET, owner_id=ids["shop"])
            fields[name] = [ref] if name == "accounts" else ref
        elif isinstance(value, str):
            fields[name] = value.format(**ids)
        else:
            fields[name] = value
    return fields


@pytest.mark.parametrize(("method", "template"), ACROSS, ids=[f"{m}-{t}" for m, t in ACROSS])
def test_another_shop_s_records_answer_exactly_as_ids_nobody_has(
    secured, other_shop, method, template
):
    theirs = {"order": "order-other", "shop": "shop-other", **other_shop}
    nobody = {
        "order": "order-nobody",
        "shop": "shop-nobody",
        "entry_id": "entry-nobody",
        "clawback_id": "clawback-nobody",
    }
    token = secured.login.mint("staff-owner", "staff")  # shop-sunny's main account
    answers = []
    for ids in (theirs, nobody):
        ids = {**ids, "entry": ids["entry_id"], "clawback": ids["clawback_id"]}
        with channel(secured, BACKOFFICE) as ch:
            answers.append(call(ch, method, token, **_fields(template, ids)))

    seen, unseen = answers
    assert seen is not None and unseen is not None
    assert seen.code() is grpc.StatusCode.NOT_FOUND, seen.details()
    assert unseen.code() is seen.code()

    def shape(text: str) -> str:
        for value in [*theirs.values(), *nobody.values()]:
            text = text.replace(str(value), "<id>")
        return text

    assert shape(seen.details()) == shape(unseen.details())


def test_the_buyer_app_reads_no_entry_not_even_of_the_buyer_s_own_order(secured, other_shop):
    # An Entry names the staff member who opened it and holds the shop's note: the buyer's
    # order page is GetBuyerOrderEntry.
    token = secured.login.mint("buyer-other", "buyer")
    with channel(secured, BUYER_APP) as ch:
        errors = [
            call(
                ch, "aftersales.v1.AfterSalesEntry/GetEntry", token, entry_id=other_shop["entry_id"]
            ),
            call(ch, "aftersales.v1.AfterSalesEntry/ListEntries", token, order_id="order-other"),
        ]

    assert [e.code() for e in errors] == [grpc.StatusCode.PERMISSION_DENIED] * 2
    assert [error_info(e).reason for e in errors] == ["CALLER_NOT_ALLOWED"] * 2


def test_the_buyer_app_shows_a_buyer_its_own_order_s_entry_and_no_one_else(secured, other_shop):
    from client import NotFound

    cert = secured.clients[BUYER_APP]

    def buyer_app(buyer_id: str) -> Client:
        return Client(
            secured.address,
            root_certificates=secured.ca,
            certificate_chain=cert.cert,
            private_key=cert.key,
            token=secured.login.mint(buyer_id, "buyer"),
        )

    with buyer_app("buyer-other") as own:
        page = own.get_buyer_order_entry("order-other")
    with buyer_app("buyer-eligible") as other, pytest.raises(NotFound):
        other.get_buyer_order_entry("order-other")

    assert page.entry.HasField("opened_at") and page.entry.HasField("expires_at")


def test_a_staff_member_sees_its_own_shop(secured, other_shop):
    with channel(secured, BACKOFFICE) as ch:
        error = call(
            ch,
            "aftersales.v1.Clawback/GetClawback",
            secured.login.mint("other-owner", "staff"),
            clawback_id=other_shop["clawback_id"],
        )

    assert error is None


def test_every_change_records_the_service_and_the_person_that_made_it(secured, other_shop):
    def who(message) -> tuple[str, str]:
        return message.recorded_by.service, message.recorded_by.person

    assert who(recorded["shop"]) == ("spiffe://platform/shop-system", "")
    assert who(recorded["funded"].transfer) == ("spiffe://platform/wallet-system", "")
    assert who(recorded["entry"]) == (BACKOFFICE, "staff:other-owner")
    assert who(recorded["clawback"]) == ("spiffe://platform/refund-system", "")
    # ... and the reads show it, from what was stored.
    token = secured.login.mint("other-owner", "staff")
    cert = secured.clients[BACKOFFICE]
    with Client(
        secured.address,
        root_certificates=secured.ca,
        certificate_chain=cert.cert,
        private_key=cert.key,
        token=token,
    ) as backoffice:
        entry = backoffice.get_entry(other_shop["entry_id"])
        clawback = backoffice.get_clawback(clawback_id=other_shop["clawback_id"])
        from aftersales.v1 import resources_pb2 as pb

        wallet = pb.AccountRef(kind=pb.ACCOUNT_KIND_ANXIN_WALLET, owner_id="shop-other")
        transfers = list(backoffice.iter_transfers(wallet))
    assert who(entry) == (BACKOFFICE, "staff:other-owner")
    assert who(clawback) == ("spiffe://platform/refund-system", "")
    assert sorted({who(t) for t in transfers}) == [
        ("spiffe://platform/refund-system", ""),
        ("spiffe://platform/wallet-system", ""),
    ]


def test_an_application_records_the_buyer_app_and_the_buyer(secured, other_shop):
    cert = secured.clients[BUYER_APP]
    with Client(
        secured.address,
        root_certificates=secured.ca,
        certificate_chain=cert.cert,
        private_key=cert.key,
        token=secured.login.mint("buyer-other", "buyer"),
    ) as buyer_app:
        application = buyer_app.apply_after_sales("order-other", "", 500, reason="broken")

    assert application.buyer_id == "buyer-other"
    assert (application.recorded_by.service, application.recorded_by.person) == (
        BUYER_APP,
        "buyer:buyer-other",
    )


def test_the_shop_s_money_shows_only_to_roles_that_may_open(secured):
    wallet = {"kind": 1, "owner_id": "shop-sunny"}  # ACCOUNT_KIND_ANXIN_WALLET
    from aftersales.v1 import resources_pb2 as pb

    answers = {}
    for staff_id in ("staff-owner", "staff-agent"):
        token = secured.login.mint(staff_id, "staff")
        with channel(secured, BACKOFFICE) as ch:
            answers[staff_id] = (
                call(ch, "aftersales.v1.Clawback/GetBalances", token, owner_id="shop-sunny"),
                call(
                    ch,
                    "aftersales.v1.Clawback/ListTransfers",
                    token,
                    account=pb.AccountRef(**wallet),
                ),
                # A clawback shows what the wallet and the payees held.
                call(
                    ch,
                    "aftersales.v1.Clawback/PreviewClawback",
                    token,
                    order_id="order-eligible",
                    amount=1_000,
                ),
                call(ch, "aftersales.v1.Clawback/ListClawbacks", token, shop_id="shop-sunny"),
            )

    assert answers["staff-owner"] == (None,) * 4
    assert [e.code() for e in answers["staff-agent"]] == [grpc.StatusCode.NOT_FOUND] * 4
