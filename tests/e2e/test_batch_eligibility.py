"""BatchCheckEligibility answers for each order what CheckEligibility answers for it alone, in
the request's order, with orders nobody has and other shops' orders as results of their own; on
SQLite and PostgreSQL."""

from __future__ import annotations

import itertools

import pytest
from google.rpc import code_pb2

from aftersales.v1 import entry_pb2
from aftersales.v1 import resources_pb2 as pb
from client import Client, InvalidArgument, NotFound
from tests.e2e.seed import PAID, Seed

# Each kind of order of the shop, and what CheckEligibility says of it (for its owner, the shop
# in normal operation). The wallet holds 5 * PAID, the deposit PAID.
KINDS: dict[str, dict[str, object]] = {
    "eligible": {},
    "campaign": {"marketing_campaign": True, "kind": pb.ORDER_KIND_CROSS_BORDER},
    "too-old": {"completed_days_ago": 130},
    "in-transit": {"completed_days_ago": None},
    "recent": {"completed_days_ago": 3},
    "presale": {"kind": pb.ORDER_KIND_PRESALE},
    "refunded": {"prior_refunded": PAID},
    "expensive": {"paid": 10 * PAID},
    "troubled": {"completed_days_ago": 150, "kind": pb.ORDER_KIND_PRESALE, "paid": 10 * PAID},
}
OPENED = 10  # eligible orders whose entry is open: ENTRY_ALREADY_OPEN
OF_THE_SHOP = 440
OF_ANOTHER_SHOP = 20
UNKNOWN = 40


def a_mixed_batch(seed: Seed, client: Client) -> tuple[str, list[str]]:
    """500 order ids, interleaved: the shop's orders of every kind (some with an open entry),
    another shop's orders and ids nobody has. Returns the shop and the ids."""
    shop_id = seed.shop("shop-batch", wallet_balance=5 * PAID, deposit_balance=PAID)
    seed.staff("owner-batch", shop_id)
    seed.staff("agent-batch", shop_id, pb.STAFF_ROLE_CS_AGENT)
    other = seed.shop("shop-batch-other", wallet_balance=5 * PAID)
    kinds = itertools.cycle(KINDS.items())
    ours = []
    for i in range(OF_THE_SHOP):
        name, order = next(kinds)
        ours.append(seed.order(f"batch-{i}-{name}", shop_id, **order).order_id)  # type: ignore[arg-type]
    for order_id in [o for o in ours if o.endswith("-eligible")][:OPENED]:
        client.open_entry(order_id, "owner-batch")
    theirs = [seed.order(f"batch-other-{i}", other).order_id for i in range(OF_ANOTHER_SHOP)]
    nobody = [f"batch-unknown-{i}" for i in range(UNKNOWN)]
    ids = []
    for i in range(OF_THE_SHOP):
        ids.append(ours[i])
        if i % 11 == 0 and theirs:
            ids.append(theirs.pop())
        if i % 11 == 5 and nobody:
            ids.append(nobody.pop())
    ids.extend(theirs + nobody)
    assert len(ids) == 500
    return shop_id, ids


def single(client: Client, order_id: str, operator_id: str) -> entry_pb2.OrderEligibility:
    """What CheckEligibility says of one order, in the form of a batch's result."""
    try:
        answer = client.check_eligibility(order_id, operator_id)
    except NotFound as e:
        return entry_pb2.OrderEligibility(
            order_id=order_id, error=entry_pb2.ItemError(code=code_pb2.NOT_FOUND, message=e.message)
        )
    return entry_pb2.OrderEligibility(order_id=order_id, eligibility=answer)


def assert_agrees(
    client: Client, ids: list[str], operator_id: str
) -> list[entry_pb2.OrderEligibility]:
    results = list(client.batch_check_eligibility(ids, operator_id).results)
    assert [r.order_id for r in results] == ids
    for order_id, result in zip(ids, results, strict=True):
        assert result == single(client, order_id, operator_id), order_id
    return results


def reasons(result: entry_pb2.OrderEligibility) -> set[str]:
    return {pb.ReasonCode.Name(v.code) for v in result.eligibility.violations}


def test_a_mixed_batch_of_500_agrees_with_check_eligibility_order_by_order(client, seed):
    shop_id, ids = a_mixed_batch(seed, client)

    results = assert_agrees(client, ids, "owner-batch")

    # The batch is as mixed as it should be: every kind of result shows.
    kinds = {r.WhichOneof("result") for r in results}
    assert kinds == {"eligibility", "error"}
    assert sum(r.WhichOneof("result") == "error" for r in results) == OF_ANOTHER_SHOP + UNKNOWN
    seen = set().union(*(reasons(r) for r in results if r.HasField("eligibility")))
    assert seen == {
        "COMPLETION_WINDOW_EXCEEDED",
        "ORDER_NOT_COMPLETED",
        "WITHIN_AFTER_SALES_PERIOD",
        "ORDER_KIND_NOT_SUPPORTED",
        "NOTHING_REFUNDABLE",
        "INSUFFICIENT_GUARANTEE",
        "ENTRY_ALREADY_OPEN",
    }
    assert any(r.eligibility.eligible for r in results)

    # A role that may not open: OPERATOR_NOT_ALLOWED on every order, and no balances shown.
    as_agent = assert_agrees(client, ids, "agent-batch")
    decided = [r for r in as_agent if r.HasField("eligibility")]
    assert all("OPERATOR_NOT_ALLOWED" in reasons(r) for r in decided)
    assert not any(r.eligibility.facts.HasField("wallet_balance") for r in decided)

    # The shop suspended: SHOP_NOT_OPERATING on every order.
    seed.shop(shop_id, status=pb.SHOP_STATUS_SUSPENDED)
    suspended = assert_agrees(client, ids, "owner-batch")
    assert all("SHOP_NOT_OPERATING" in reasons(r) for r in suspended if r.HasField("eligibility"))


def test_an_id_named_twice_gets_its_result_twice(client, seed):
    case = seed.case("twice")

    results = client.batch_check_eligibility(
        [case.order_id, "nobody-has-it", case.order_id], case.owner_id
    ).results

    assert [r.order_id for r in results] == [case.order_id, "nobody-has-it", case.order_id]
    assert results[0] == results[2] and results[0].eligibility.eligible
    assert results[1].error.code == code_pb2.NOT_FOUND


def test_an_operator_of_another_shop_learns_nothing_of_its_orders(client, seed):
    case = seed.case("theirs")
    seed.staff("owner-elsewhere", seed.shop("shop-elsewhere"))

    results = client.batch_check_eligibility([case.order_id, "nobody-has-it"], "owner-elsewhere")

    # Word for word as an order nobody has, but for the id.
    first, second = results.results
    assert first.error.code == second.error.code == code_pb2.NOT_FOUND
    assert first.error.message.replace(case.order_id, "?") == second.error.message.replace(
        "nobody-has-it", "?"
    )


def test_an_unknown_operator_fails_the_whole_batch(client, seed):
    case = seed.case("no-operator")

    with pytest.raises(NotFound) as refused:
        client.batch_check_eligibility([case.order_id], "nobody")

    assert refused.value.resource == ("staff", "nobody")


@pytest.mark.parametrize(
    ("order_ids", "field", "says"),
    [
        ([], "order_ids", "at least 1"),
        ([f"o-{i}" for i in range(501)], "order_ids", "no more than 500"),
        (["fine", ""], "order_ids[1]", "is required"),
        (["fine", "x" * 129], "order_ids[1]", "longer than 128"),
    ],
)
def test_a_bad_batch_is_invalid_argument_naming_the_field_and_the_bound(
    client, seed, order_ids, field, says
):
    case = seed.case("bad-batch")

    with pytest.raises(InvalidArgument) as refused:
        client.batch_check_eligibility(order_ids, case.owner_id)

    assert [v.field for v in refused.value.field_violations] == [field]
    assert says in refused.value.field_violations[0].description
