"""The proto's ReasonCode enum is every ErrorInfo.reason the service sends: the domain's reason
codes (the rules', same names) and the gRPC layer's own (status.REASONS), nothing else."""

from __future__ import annotations

from aftersales.v1 import resources_pb2
from server.domain.model import ReasonCode
from server.grpc import status


def proto_reason_codes() -> set[str]:
    return {name for name in resources_pb2.ReasonCode.keys() if name != "REASON_CODE_UNSPECIFIED"}


def test_every_domain_reason_code_is_in_the_proto_under_the_same_name():
    assert {code.value for code in ReasonCode} - proto_reason_codes() == set()


def test_every_reason_of_the_grpc_layer_is_in_the_proto():
    assert status.REASONS - proto_reason_codes() == set()


def test_every_proto_reason_code_is_one_the_service_can_give():
    assert proto_reason_codes() - {code.value for code in ReasonCode} - status.REASONS == set()


def test_the_grpc_layer_s_reasons_are_not_rules():
    assert status.REASONS & {code.value for code in ReasonCode} == set()


def test_each_code_s_value_is_its_name():
    assert all(code.name == code.value for code in ReasonCode)
