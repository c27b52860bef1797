"""The domain's reason codes and the proto's ReasonCode enum are one list: same names, same set."""

from __future__ import annotations

from aftersales.v1 import resources_pb2
from server.domain.model import ReasonCode


def proto_reason_codes() -> set[str]:
    return {name for name in resources_pb2.ReasonCode.keys() if name != "REASON_CODE_UNSPECIFIED"}


def test_every_domain_reason_code_is_in_the_proto_under_the_same_name():
    assert {code.value for code in ReasonCode} - proto_reason_codes() == set()


def test_every_proto_reason_code_is_one_the_domain_can_give():
    assert proto_reason_codes() - {code.value for code in ReasonCode} == set()


def test_each_code_s_value_is_its_name():
    assert all(code.name == code.value for code in ReasonCode)
