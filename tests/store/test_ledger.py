"""Double-entry money: every movement is a transfer between two accounts; balances sum to zero."""

from __future__ import annotations

import pytest

from server.domain.errors import RequestIdExpired, RulesRefused
from server.domain.model import (
    EXTERNAL,
    PLATFORM_COMMISSION,
    AccountKind,
    AccountRef,
    Movement,
    ReasonCode,
    Refund,
    TransferKind,
)
from server.service.unit_of_work import TransactionAborted, TransferExists
from server.store import unit_of_work
from server.store.schema import TransferRow
from tests.store.factories import (
    a_late_refund_order,
    a_normal_shop,
    an_eligible_setup,
    at_once,
    deposit_of,
    request_id,
    statements_with_parameters,
    wallet_of,
)

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
    # The platform's account is changed at the transaction's end, but when guarded: it holds.
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


def test_the_same_transfer_idempotency_key_twice_is_refused_naming_the_transfer(
    store, service, clock
):
    a_normal_shop(service, "shop-1", wallet=0)

    def post() -> str:
        with store.unit_of_work() as uow:
            transfer = uow.ledger.post_transfer(
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
        return transfer.transfer_id

    first = post()
    # The database keeps the key unique: the second INSERT skips the row, and nothing of the
    # unit of work (the balance it changed first) is committed.
    with pytest.raises(TransferExists) as posted:
        post()

    assert (posted.value.idempotency_key, posted.value.transfer_id) == ("funds:the-same-key", first)
    assert assert_ledger_balances(store)[wallet_of("shop-1")] == 1_000
    assert transfer_count(store) == 1


def test_two_movements_of_one_call_with_one_idempotency_key_are_refused(store, service, clock):
    a_normal_shop(service, "shop-1", wallet=0)
    twice = Movement(
        EXTERNAL, wallet_of("shop-1"), 1_000, TransferKind.FUNDS_IN, "twice", "funds:twice", ""
    )

    with pytest.raises(ValueError, match="idempotency key"):
        with store.unit_of_work() as uow:
            uow.ledger.post_transfers([twice, twice], now=clock.now(), guarded=())
            uow.commit()

    assert assert_ledger_balances(store).get(wallet_of("shop-1"), 0) == 0
    assert transfer_count(store) == 0


def test_the_same_funds_request_id_twice_posts_once(store, service):
    """Without its request's record (the retention forgot it), a PostFunds sent again is
    refused naming the transfer its id posted."""
    a_normal_shop(service, "shop-1", wallet=0)
    rid = request_id()
    first = service.post_funds(rid, wallet_of("shop-1"), 1_000, "once")

    with pytest.raises(RequestIdExpired) as refused:
        service.post_funds(rid, wallet_of("shop-1"), 1_000, "once")

    assert refused.value.transfer_id == first.transfer.transfer_id
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


def test_a_late_refund_changes_the_platform_account_by_its_last_statement(store, service, clock):
    # Every late refund gives back its technical service fee out of the platform's commission
    # account: that one row, once changed, is locked until the commit, and every other refund
    # waits for it. So no statement but the transaction's last changes it: on PostgreSQL the one
    # that writes the events, followed only by the COMMIT.
    setup = an_eligible_setup(service)
    a_late_refund_order(service, setup)
    service.open_entry(setup.order_id, setup.owner_id, "agreed")
    application = service.apply(setup.order_id, setup.buyer_id, 10_000, "broken")
    platform = store.fixed_account_ids[PLATFORM_COMMISSION]
    before = assert_ledger_balances(store)
    refund = Refund(
        "refund-1", setup.order_id, application.application_id, 10_000, clock.now(), clock.now()
    )

    with statements_with_parameters(store) as statements:
        service.record_refund(refund)

    changing = [
        i
        for i, (sql, params) in enumerate(statements)
        if 'UPDATE "account"' in sql and (platform in params or [platform] in params)
    ]
    assert len(changing) == 1, statements
    (last,) = changing
    after = [sql for sql, _ in statements[last + 1 :]]
    if store.is_postgres:
        assert 'INSERT INTO "event"' in statements[last][0]
        assert after == ["COMMIT"]
    else:
        assert [sql.split(" (")[0] for sql in after] == ['INSERT INTO "event"', "COMMIT"]
    balances = assert_ledger_balances(store)
    assert balances[PLATFORM_COMMISSION] == before.get(PLATFORM_COMMISSION, 0) - 500


def test_the_platform_account_read_after_its_change_in_one_transaction_has_it(store, service):
    # Its change waits for the transaction's end (above), but never behind a read of it.
    a_normal_shop(service, "shop-1", wallet=0)
    service.post_funds(request_id(), PLATFORM_COMMISSION, 5_000, "fees")
    movement = Movement(
        PLATFORM_COMMISSION, wallet_of("shop-1"), 1_200, TransferKind.CLAWBACK, "r", "key-1"
    )

    with store.unit_of_work() as uow:
        uow.ledger.post_transfers([movement], now=service.now(), guarded=())
        assert uow.ledger.balances([PLATFORM_COMMISSION]) == {PLATFORM_COMMISSION: 3_800}
        assert uow.ledger.balances_of("shop-1")[wallet_of("shop-1")] == 1_200
        uow.commit()

    assert assert_ledger_balances(store)[PLATFORM_COMMISSION] == 3_800


def _locked(store, refs, *, commit=True) -> tuple[dict, list[str]]:
    """lock_accounts(refs) in a unit of work of its own: the balances, and the statements run."""
    with statements_with_parameters(store) as statements, store.unit_of_work() as uow:
        balances = uow.ledger.lock_accounts(set(refs))
        if commit:
            uow.commit()
    return balances, [sql for sql, _ in statements]


def _makes_accounts(statements: list[str]) -> bool:
    return any(sql.startswith('INSERT INTO "account"') for sql in statements)


def test_accounts_locked_once_are_locked_again_without_being_made(store, service):
    a_normal_shop(service, "shop-1", wallet=7_000)
    payee = AccountRef(AccountKind.CASH, "kol-new")

    first, statements = _locked(store, [wallet_of("shop-1"), payee])
    assert first == {wallet_of("shop-1"): 7_000, payee: 0}
    assert _makes_accounts(statements)  # the payee's cash did not exist

    again, statements = _locked(store, [wallet_of("shop-1"), payee])
    assert again == first
    assert not _makes_accounts(statements)


def test_accounts_of_a_rolled_back_transaction_are_not_taken_as_existing(store):
    payee = AccountRef(AccountKind.CASH, "kol-rolled-back")

    _locked(store, [payee], commit=False)

    assert payee not in store.known_accounts
    _, statements = _locked(store, [payee])
    assert _makes_accounts(statements)
    assert payee in store.known_accounts


def test_an_account_taken_as_existing_that_is_not_there_aborts_the_call_for_a_retry(store, service):
    """As after the database was restored from a copy older than what this process saw: made
    then, it would be locked out of the one order that keeps lockers from waiting on each other
    in a cycle. The retry makes it, and locks it in that order."""
    a_normal_shop(service, "shop-1", wallet=7_000)
    gone = AccountRef(AccountKind.CASH, "kol-restored-away")
    store.knows_accounts([gone, wallet_of("shop-1")])

    with pytest.raises(TransactionAborted):
        _locked(store, [wallet_of("shop-1"), gone])

    assert store.known_accounts == set()
    balances, statements = _locked(store, [wallet_of("shop-1"), gone])
    assert balances == {wallet_of("shop-1"): 7_000, gone: 0}
    assert _makes_accounts(statements)
    service.post_funds(request_id(), gone, 500, "")
    assert assert_ledger_balances(store)[gone] == 500


def test_the_accounts_taken_as_existing_are_bounded(store, monkeypatch):
    monkeypatch.setattr(unit_of_work, "KNOWN_ACCOUNTS", 3)
    refs = [AccountRef(AccountKind.CASH, f"kol-{i}") for i in range(4)]

    store.knows_accounts(refs[:3])
    store.knows_accounts(refs[:3])  # known already: nothing more is kept
    assert store.known_accounts == set(refs[:3])
    store.knows_accounts(refs[3:])

    # Full: the older ones are forgotten (and made again, if need be, as they are locked).
    assert store.known_accounts == {refs[3]}


def test_a_payment_to_an_account_taken_as_existing_that_is_not_there_is_made_once_retried(
    store, service
):
    gone = AccountRef(AccountKind.CASH, "kol-restored-away")
    store.knows_accounts([gone])
    rid = request_id()

    try:
        posted = service.post_funds(rid, gone, 500, "")
    except TransactionAborted:  # retryable; SQLite's group writer retries it by itself
        posted = service.post_funds(rid, gone, 500, "")

    assert posted.balance == 500
    assert assert_ledger_balances(store)[gone] == 500
