"""The fake store is transactional like the SQL one, and the service runs on it alone."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import peewee
import pytest

from server import settings
from server.domain.model import EntryState, Shop, ShopStatus
from server.service import Service, Store
from server.service.clock import FakeClock
from tests.conftest import T0
from tests.fakes import FakeStore
from tests.service.scenarios import a_clawback_setup, a_late_refund, an_application, cash_of, fund

SHOP = Shop("shop-1", "Shop", ShopStatus.NORMAL, None)


def shop_exists(store: Store, shop_id: str = "shop-1") -> bool:
    with store.unit_of_work(read_only=True) as uow:
        return uow.facts.shop_exists(shop_id)


def test_changes_are_seen_by_others_only_once_committed(store):
    with store.unit_of_work() as uow:
        uow.facts.put_shop(SHOP)
        assert uow.facts.shop_exists("shop-1")
        assert not shop_exists(store)
        uow.commit()
        assert shop_exists(store)


def test_a_unit_of_work_left_without_commit_leaves_nothing_behind(store):
    with store.unit_of_work() as uow:
        uow.facts.put_shop(SHOP)

    assert not shop_exists(store)


def test_a_unit_of_work_that_raised_leaves_nothing_behind(store):
    with pytest.raises(RuntimeError), store.unit_of_work() as uow:
        uow.facts.put_shop(SHOP)
        uow.ledger.lock_accounts({cash_of("payee-1")})
        raise RuntimeError("boom")

    assert not shop_exists(store)
    with store.unit_of_work(read_only=True) as uow:
        assert uow.ledger.balances_of("payee-1") == {}


def test_a_read_only_unit_of_work_sees_the_state_it_started_with(store):
    with store.unit_of_work(read_only=True) as reader:
        with store.unit_of_work() as writer:
            writer.facts.put_shop(SHOP)
            writer.commit()
        assert not reader.facts.shop_exists("shop-1")


def test_write_units_of_work_run_one_at_a_time(store):
    order: list[str] = []
    first_in = threading.Event()

    def first() -> None:
        with store.unit_of_work() as uow:
            first_in.set()
            time.sleep(0.05)
            order.append("first ends")
            uow.commit()

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(timeout=5)
    with store.unit_of_work():
        order.append("second starts")
    thread.join()

    assert order == ["first ends", "second starts"]


def test_the_service_runs_on_the_fake_store_alone_without_any_sql(monkeypatch):
    def no_sql(*args: object, **kwargs: object) -> None:
        raise AssertionError("the service touched a peewee database")

    for name in ("connect", "execute_sql", "begin", "atomic", "cursor"):
        monkeypatch.setattr(peewee.Database, name, no_sql)
    store = FakeStore()
    clock = FakeClock(T0)
    service = Service(store, clock, settings.load_policy())
    fund(service, cash_of("influencer-1"), 5_000)
    setup = a_clawback_setup(service)

    clawback = service.record_refund(a_late_refund(service, an_application(service, setup, 5_000)))
    clock.advance(timedelta(days=4))
    entry = service.open_entry(setup.order_id, setup.owner_id, "again")
    clock.set(entry.expires_at)

    assert clawback.recovered == 500 + 100
    assert service.expire_entries() == 1
    assert service.get_entry(entry.entry_id).state is EntryState.EXPIRED
    assert service.store is store
