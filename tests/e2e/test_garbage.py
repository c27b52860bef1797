"""Bytes that are not the method's request message answer INVALID_ARGUMENT, write nothing, and
cost the log at most one line per peer, whatever their number: never a traceback."""

from __future__ import annotations

import logging

import grpc
import pytest
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from aftersales.v1 import entry_pb2, sync_pb2
from client.errors import AfterSalesError, InvalidArgument, from_rpc_error
from server.grpc.decoding import PeerLog, address_of
from tests.e2e.seed import wallet

GARBAGE = b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"  # a varint too long for a tag


@pytest.fixture
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


def send(channel: grpc.Channel, method: str, payload: bytes) -> AfterSalesError:
    """The error `payload`, as it is, sent to `method` is answered with."""
    # No serializers: the bytes go out and come back untouched.
    call = channel.unary_unary(method)
    with pytest.raises(grpc.RpcError) as failed:
        call(payload, timeout=10)
    return from_rpc_error(failed.value)


def truncated(message) -> bytes:
    """`message` serialized, less its last byte: its last field cut short."""
    payload = message.SerializeToString()[:-1]
    with pytest.raises(DecodeError):
        type(message).FromString(payload)
    return payload


def assert_undecodable(error: AfterSalesError, message_type: str) -> None:
    assert isinstance(error, InvalidArgument)
    assert error.message == f"request is not a valid {message_type}"
    assert [(v.field, v.description) for v in error.field_violations] == [("", error.message)]
    assert error.reason == "UNDECODABLE_REQUEST"
    assert error.metadata == {"message_type": message_type}


@pytest.mark.parametrize(
    ("method", "message_type"),
    [
        ("/aftersales.v1.Sync/PutShop", "aftersales.v1.PutShopRequest"),
        ("/aftersales.v1.Sync/PutOrder", "aftersales.v1.PutOrderRequest"),
        (
            "/aftersales.v1.AfterSalesEntry/CheckEligibility",
            "aftersales.v1.CheckEligibilityRequest",
        ),
        ("/aftersales.v1.AfterSalesEntry/OpenEntry", "aftersales.v1.OpenEntryRequest"),
        ("/aftersales.v1.Clawback/RecordRefund", "aftersales.v1.RecordRefundRequest"),
        ("/aftersales.v1.Clawback/GetBalances", "aftersales.v1.GetBalancesRequest"),
        ("/grpc.health.v1.Health/Check", "grpc.health.v1.HealthCheckRequest"),
    ],
)
def test_garbage_bytes_answer_invalid_argument_naming_the_message_type(
    channel, method, message_type
):
    assert_undecodable(send(channel, method, GARBAGE), message_type)


def test_a_mutation_cut_short_writes_nothing(channel, client, seed):
    case = seed.case("garbage")
    before = client.get_balances(owner_id=case.shop_id)
    funds = sync_pb2.PostFundsRequest(
        request_id="garbage-funds", account=wallet(case.shop_id), amount=123_456_789
    )
    entry = entry_pb2.OpenEntryRequest(
        order_id=case.order_id, operator_id=case.owner_id, request_id="garbage-entry"
    )

    error = send(channel, "/aftersales.v1.Sync/PostFunds", truncated(funds))
    assert_undecodable(error, "aftersales.v1.PostFundsRequest")
    error = send(channel, "/aftersales.v1.AfterSalesEntry/OpenEntry", truncated(entry))
    assert_undecodable(error, "aftersales.v1.OpenEntryRequest")

    assert client.get_balances(owner_id=case.shop_id) == before
    assert list(client.list_entries(order_id=case.order_id).entries) == []
    # Neither request id was recorded: the whole request, sent now, runs.
    client.post_funds(wallet(case.shop_id), 1, request_id="garbage-funds")
    assert client.open_entry(case.order_id, case.owner_id, request_id="garbage-entry").entry_id


def test_a_streaming_method_refuses_garbage_as_well(channel):
    watch = channel.unary_stream("/grpc.health.v1.Health/Watch")
    with pytest.raises(grpc.RpcError) as failed:
        next(watch(GARBAGE, timeout=10))
    assert_undecodable(from_rpc_error(failed.value), "grpc.health.v1.HealthCheckRequest")

    info = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    with pytest.raises(grpc.RpcError) as failed:
        list(info(iter([GARBAGE]), timeout=10))
    assert_undecodable(
        from_rpc_error(failed.value), "grpc.reflection.v1alpha.ServerReflectionRequest"
    )


def test_the_methods_still_decode_what_is_valid(channel):
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    assert check(health_pb2.HealthCheckRequest(), timeout=10).status == (
        health_pb2.HealthCheckResponse.SERVING
    )
    watch = channel.unary_stream(
        "/grpc.health.v1.Health/Watch",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    updates = watch(health_pb2.HealthCheckRequest(), timeout=10)
    assert next(updates).status == health_pb2.HealthCheckResponse.SERVING
    updates.cancel()
    info = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    [answer] = info(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    assert "aftersales.v1.Sync" in {s.name for s in answer.list_services_response.service}


def test_a_flood_of_garbage_from_one_peer_logs_one_warning_and_no_traceback(
    server, channel, caplog
):
    methods = ["/aftersales.v1.Sync/PutShop", "/aftersales.v1.AfterSalesEntry/OpenEntry"]

    with caplog.at_level(logging.INFO):
        for i in range(50):
            send(channel, methods[i % 2], GARBAGE)
        # ... and from new connections of the same host.
        for _ in range(3):
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as another:
                send(another, methods[0], GARBAGE)

    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "not a valid aftersales.v1.PutShopRequest" in warnings[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)


def test_a_peer_is_logged_again_after_the_interval_and_the_oldest_peers_are_forgotten():
    now = [0.0]
    peers = PeerLog(interval=60, size=2, clock=lambda: now[0])

    assert peers.due("a") == 0
    assert [peers.due("a") for _ in range(3)] == [None, None, None]
    now[0] = 60
    assert peers.due("a") == 3  # and the three it did not log
    assert peers.due("b") == 0
    assert peers.due("c") == 0  # forgets "a", logged about longest ago
    assert peers.due("a") == 0
    assert peers.due("c") is None


def test_a_peer_is_its_address_whatever_its_port():
    assert address_of("ipv4:10.0.0.7:51234") == "ipv4:10.0.0.7"
    assert address_of("ipv6:[::1]:51234") == "ipv6:[::1]"
    assert address_of("unix:/run/aftersales.sock") == "unix:/run/aftersales.sock"
