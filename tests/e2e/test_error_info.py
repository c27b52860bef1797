"""Every error the service sends carries one ErrorInfo (AIP-193) whose domain is the service's
name and whose reason is a value of the proto's ReasonCode: each path below is reached through a
real server, as a caller would reach it. (The secure mode's UNAUTHENTICATED and
PERMISSION_DENIED of callers are walked in test_callers.py, whose error_info checks the domain.)"""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from aftersales.v1 import resources_pb2 as pb
from client import AfterSalesError
from client.errors import from_rpc_error
from tests.e2e.seed import DOMAIN, PAID, error_info, wallet
from tests.e2e.test_faults import (
    a_busy_sqlite,
    a_deadlock,
    a_shop,
    bad_sql,
    captured,
    failing_put_shop,
)

REASONS = set(pb.ReasonCode.keys()) - {"REASON_CODE_UNSPECIFIED"}


def raised(call) -> AfterSalesError:
    with pytest.raises(AfterSalesError) as failed:
        call()
    return failed.value


def invalid_fields(client, seed, server) -> AfterSalesError:
    return raised(lambda: client.open_entry("", "staff-1"))


def request_id_reused(client, seed, server) -> AfterSalesError:
    case = seed.case("reused")
    client.open_entry(case.order_id, case.owner_id, note="one", request_id="request-reused")
    return raised(
        lambda: client.open_entry(
            case.order_id, case.owner_id, note="two", request_id="request-reused"
        )
    )


def undecodable(client, seed, server) -> AfterSalesError:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.RpcError) as failed:
            channel.unary_unary("/aftersales.v1.Sync/PutShop")(b"\xff\xff\xff", timeout=10)
    return from_rpc_error(failed.value)


def not_found(client, seed, server) -> AfterSalesError:
    return raised(lambda: client.get_entry("no-such-entry"))


def permission_denied(client, seed, server) -> AfterSalesError:
    case = seed.case("denied")
    agent = seed.staff("agent-denied", case.shop_id, pb.STAFF_ROLE_CS_AGENT)
    return raised(lambda: client.open_entry(case.order_id, agent))


def failed_precondition(client, seed, server) -> AfterSalesError:
    case = seed.case("short", wallet_balance=PAID)
    return raised(lambda: client.post_funds(wallet(case.shop_id), -2 * PAID))


def already_exists(client, seed, server) -> AfterSalesError:
    case = seed.case("twice")
    client.open_entry(case.order_id, case.owner_id)
    return raised(lambda: client.open_entry(case.order_id, case.owner_id))


def request_id_expired(client, seed, server) -> AfterSalesError:
    case = seed.case("expired")
    rid = "request-expired-1"
    client.post_funds(wallet(case.shop_id), 100, request_id=rid)
    service = server.service
    service.clock.advance(service.policy.request_retention + timedelta(seconds=1))
    service.prune_requests()
    return raised(lambda: client.post_funds(wallet(case.shop_id), 100, request_id=rid))


PATHS = [
    (invalid_fields, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELDS"),
    (request_id_reused, grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED"),
    (undecodable, grpc.StatusCode.INVALID_ARGUMENT, "UNDECODABLE_REQUEST"),
    (not_found, grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"),
    (permission_denied, grpc.StatusCode.PERMISSION_DENIED, "OPERATOR_NOT_ALLOWED"),
    (failed_precondition, grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS"),
    (already_exists, grpc.StatusCode.ALREADY_EXISTS, "ENTRY_ALREADY_OPEN"),
    (request_id_expired, grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_EXPIRED"),
]


def assert_error_info(error: AfterSalesError, code: grpc.StatusCode, reason: str) -> None:
    assert error.code == code
    info = error_info(error)
    assert (info.domain, info.reason) == (DOMAIN, reason)
    assert info.reason in REASONS


@pytest.mark.parametrize(("path", "code", "reason"), PATHS, ids=[p[0].__name__ for p in PATHS])
def test_every_refusal_carries_error_info_with_the_service_s_domain(
    client, seed, server, path, code, reason
):
    assert_error_info(path(client, seed, server), code, reason)


def test_a_resource_not_found_names_it_in_error_info_as_in_resource_info(client):
    error = raised(lambda: client.get_entry("no-such-entry"))

    assert error.resource == ("entry", "no-such-entry")
    assert error.metadata == {"resource_type": "entry", "resource_name": "no-such-entry"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_database_unavailable_carries_error_info_and_says_how_to_retry(
    database_url, store, client, monkeypatch
):
    failing_put_shop(monkeypatch, store, database_url, captured(a_busy_sqlite))

    error = raised(lambda: client.put_shop(a_shop()))

    assert_error_info(error, grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
    assert error.metadata == {"retryable": "true"}
    assert error.retry_delay is not None and error.retry_delay.total_seconds() > 0
    assert "request_id" in error.message and "RetryInfo" in error.message


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_bug_carries_error_info(database_url, store, client, monkeypatch):
    failing_put_shop(monkeypatch, store, database_url, bad_sql)

    error = raised(lambda: client.put_shop(a_shop()))

    assert_error_info(error, grpc.StatusCode.INTERNAL, "INTERNAL_ERROR")


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_an_aborted_transaction_carries_error_info(database_url, store, client, monkeypatch):
    failing_put_shop(monkeypatch, store, database_url, captured(a_deadlock))

    error = raised(lambda: client.put_shop(a_shop()))

    assert_error_info(error, grpc.StatusCode.ABORTED, "TRANSACTION_ABORTED")
    assert error.retry_delay is not None
