"""Moments leave the server as protobuf's own conversion would write them, to the microsecond,
before the epoch too."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from server.grpc.common import from_timestamp, timestamp, timestamp_fields

MOMENTS = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999_999)
).map(lambda d: d.replace(tzinfo=UTC))


@given(MOMENTS)
def test_a_moment_is_rendered_as_protobuf_renders_it_and_read_back_the_same(moment):
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(moment)
    assert timestamp_fields(moment) == {"seconds": expected.seconds, "nanos": expected.nanos}
    assert from_timestamp(timestamp(moment)) == moment


def test_a_moment_just_before_the_epoch_has_negative_seconds_and_positive_nanos():
    moment = datetime(1969, 12, 31, 23, 59, 59, 250_000, tzinfo=UTC)
    assert timestamp_fields(moment) == {"seconds": -1, "nanos": 250_000_000}
    assert timestamp_fields(None) is None
