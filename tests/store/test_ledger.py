"""Double-entry money: every movement is a transfer between two accounts; balances sum to zero."""

from __future__ import annotations

import pytest

from server.domain.errors import RulesRefused
from server.domain.model import EXTERNAL, PLATFORM_COMMISSION, ReasonCode, TransferKind
from server.service.unit_of_work import WriteConflict
from server.store.schema import TransferRow
from tests.store.factories import a_normal_shop, at_once, deposit_of, request_id, wallet_of

REPLICAS = 8


def assert_ledger_balances(store) -> dict:
    """All balances sum to zero and each kept balance is the one its transfers add up to."""
    with store.unit_of_work(read_only=True) as uow:
        total, accounts = uow.ledger.ledger_totals()
    assert total == 0
    assert {ref: kept for ref, (kept, _) in accounts.items()} == {
        ref: derived for ref, (_, derived) in accounts.items()
    }
    return {ref: kept for ref, (kept, _) in accounts.items()}


def transfer_count(store) -> int:
    with store.unit_of_work(read_only=True):
        return TransferRow.select().count()


def test_posting_funds_moves_money_between_the_outside_and_the_shop(store, service):
    a_normal_shop(service, "shop-1", wallet=0)

    def post(account, amount: int) -> int:
        return service.post_funds(request_id(), account, amount, "").balance

    assert post(wallet_of("shop-1"), 50_000) == 50_000
    assert post(deposit_of("shop-1"), 20_000) == 20_000
    assert post(wallet_of("shop-1"), -5_000) == 45_000

    balances = assert_ledger_balances(store)
    assert balances == {
        EXTERNAL: -65_000,
        PLATFORM_COMMISSION: 0,  # made with the schema, like the external account
        wallet_of("shop-1"): 45_000,
        deposit_of("shop-1"): 20_000,
    }
    assert transfer_count(store) == 3


def test_a_withdrawal_beyond_the_balance_is_refused_and_writes_nothing(store, service):
    a_normal_shop(service, "shop-1", wallet=30_000)
    before = assert_ledger_balances(store)

    with pytest.raises(RulesRefused) as refused:
        service.post_funds(request_id(), wallet_of("shop-1"), -30_001, "too much")

    assert refused.value.codes == (ReasonCode.INSUFFICIENT_FUNDS,)
    assert assert_ledger_balances(store) == before
    assert transfer_count(store) == 1


def test_a_withdrawal_beyond_the_platform_commission_balance_is_refused_too(store, service):
    # The platform's account is changed last of all in a posting: its guard holds there too.
    service.post_funds(request_id(), PLATFORM_COMMISSION, 5_000, "fees")
    before = assert_ledger_balances(store)

    with pytest.raises(RulesRefused) as refused:
        service.post_funds(request_id(), PLATFORM_COMMISSION, -5_001, "too much")

    assert refused.value.codes == (ReasonCode.INSUFFICIENT_FUNDS,)
    assert assert_ledger_balances(store) == before
    posted = service.post_funds(request_id(), PLATFORM_COMMISSION, -5_000, "all of it")
    assert posted.balance == 0


def test_a_withdrawal_from_an_account_never_funded_creates_no_account(store, service):
    a_normal_shop(service, "shop-1", wallet=10_000)
    before = assert_ledger_balances(store)

    with pytest.raises(RulesRefused) as refused:
        service.post_funds(request_id(), deposit_of("shop-1"), -1, "nothing there")

    assert refused.value.codes == (ReasonCode.INSUFFICIENT_FUNDS,)
    assert assert_ledger_balances(store) == before


def test_withdrawing_the_whole_balance_is_allowed(store, service):
    a_normal_shop(service, "shop-1", wallet=30_000)

    assert service.post_funds(request_id(), wallet_of("shop-1"), -30_000, "all").balance == 0

    assert assert_ledger_balances(store)[wallet_of("shop-1")] == 0


def test_the_same_transfer_idempotency_key_twice_is_refused_by_the_database(store, service, clock):
    a_normal_shop(service, "shop-1", wallet=0)

    def post() -> None:
        with store.unit_of_work() as uow:
            uow.ledger.post_transfer(
                from_account=EXTERNAL,
                to_account=wallet_of("shop-1"),
                amount=1_000,
                kind=TransferKind.FUNDS_IN,
                reference="once",
                idempotency_key="funds:the-same-key",
                now=clock.now(),
                guard_from=False,
            )
            uow.commit()

    post()
    # The database's refusal leaves the unit of work as WriteConflict.
    with pytest.raises(WriteConflict):
        post()

    assert assert_ledger_balances(store)[wallet_of("shop-1")] == 1_000
    assert transfer_count(store) == 1


def test_the_same_funds_request_id_twice_posts_once(store, service):
    a_normal_shop(service, "shop-1", wallet=0)
    rid = request_id()
    service.post_funds(rid, wallet_of("shop-1"), 1_000, "once")

    with pytest.raises(WriteConflict):
        service.post_funds(rid, wallet_of("shop-1"), 1_000, "once")

    assert assert_ledger_balances(store)[wallet_of("shop-1")] == 1_000


def test_replicas_withdrawing_at_once_never_overdraw(store, service):
    a_normal_shop(service, "shop-1", wallet=1_000)

    outcomes = at_once(
        store,
        REPLICAS,
        lambda _: service.post_funds(request_id(), wallet_of("shop-1"), -300, "race"),
    )

    refused = [o.error for o in outcomes if o.error is not None]
    assert all(isinstance(e, RulesRefused) for e in refused), [repr(e) for e in refused]
    assert [e.codes for e in refused] == [(ReasonCode.INSUFFICIENT_FUNDS,)] * (REPLICAS - 3)
    assert assert_ledger_balances(store)[wallet_of("shop-1")] == 100


def test_replicas_paying_in_and_out_of_one_wallet_at_once_all_succeed(store, service):
    """Deposits and withdrawals on one wallet touch the same two accounts in opposite directions:
    none may wait on another in a cycle (on PostgreSQL one would die as a deadlock victim)."""
    a_normal_shop(service, "shop-1", wallet=100_000)
    a_normal_shop(service, "shop-2", wallet=100_000)
    rounds = 10

    def in_and_out(index: int) -> None:
        shop = "shop-1" if index % 4 < 2 else "shop-2"
        for _ in range(rounds):
            amount = 100 if index % 2 else -100
            service.post_funds(request_id(), wallet_of(shop), amount, "busy")

    outcomes = at_once(store, REPLICAS, in_and_out)

    assert [repr(o.error) for o in outcomes if o.error is not None] == []
    balances = assert_ledger_balances(store)
    assert balances[wallet_of("shop-1")] == balances[wallet_of("shop-2")] == 100_000
