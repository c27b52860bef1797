"""Builders of the facts the store tests start from, and small tools for threads and counting."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from datetime import timedelta
from typing import Any

from server.domain.model import (
    AccountKind,
    AccountRef,
    ClawbackLine,
    CommissionLine,
    Entry,
    EntryState,
    Order,
    OrderKind,
    PayeeKind,
    Refund,
    RefundClawback,
    Shop,
    ShopStatus,
    Staff,
    StaffRole,
)
from server.service import Service
from server.store import SqlStore


def request_id() -> str:
    return str(uuid.uuid4())


def wallet_of(shop_id: str) -> AccountRef:
    return AccountRef(AccountKind.ANXIN_WALLET, shop_id)


def deposit_of(shop_id: str) -> AccountRef:
    return AccountRef(AccountKind.DEPOSIT, shop_id)


@dataclasses.dataclass(frozen=True)
class Setup:
    """A shop in normal operation with funds, its main account and one order it may open."""

    shop_id: str
    owner_id: str
    order_id: str
    buyer_id: str


def a_normal_shop(service: Service, shop_id: str = "shop-1", wallet: int = 1_000_000) -> str:
    now = service.now()
    service.put_shop(Shop(shop_id, f"Shop {shop_id}", ShopStatus.NORMAL, now - timedelta(days=365)))
    if wallet:
        service.post_funds(request_id(), wallet_of(shop_id), wallet, "initial funds")
    return shop_id


def an_owner(service: Service, shop_id: str) -> str:
    staff_id = f"{shop_id}-owner"
    service.put_staff(Staff(staff_id, shop_id, StaffRole.OWNER, "Main account"))
    return staff_id


def an_eligible_order(
    service: Service,
    shop_id: str,
    order_id: str = "order-1",
    buyer_id: str = "buyer-1",
    paid_amount: int = 10_000,
) -> str:
    """An ordinary order completed 30 days before the clock; its regular period ended long ago."""
    completed = service.now() - timedelta(days=30)
    service.put_order(
        Order(
            order_id=order_id,
            shop_id=shop_id,
            buyer_id=buyer_id,
            kind=OrderKind.ORDINARY,
            marketing_campaign=False,
            category_id="appliances",
            paid_amount=paid_amount,
            created_at=completed - timedelta(days=3),
            completed_at=completed,
            after_sales_ends_at=completed + timedelta(days=15),
        )
    )
    return order_id


def an_eligible_setup(
    service: Service, shop_id: str = "shop-1", order_id: str = "order-1"
) -> Setup:
    a_normal_shop(service, shop_id)
    owner_id = an_owner(service, shop_id)
    an_eligible_order(service, shop_id, order_id)
    return Setup(shop_id, owner_id, order_id, "buyer-1")


def a_late_refund_order(service: Service, setup: Setup) -> None:
    """The setup's order, in a designated category, paying an influencer with no cash."""
    with service.unit_of_work(read_only=True) as uow:
        order = uow.facts.order(setup.order_id)
    service.put_order(
        dataclasses.replace(
            order,
            category_id="home-appliances",
            commission_lines=(
                CommissionLine(PayeeKind.INFLUENCER, "kol-1", 1_000),
                CommissionLine(PayeeKind.TECHNICAL_SERVICE_FEE, "", 500),
            ),
        )
    )


def an_entry(
    setup: Setup,
    service: Service,
    state: EntryState = EntryState.OPEN,
    opened_ago: timedelta = timedelta(0),
) -> Entry:
    """An entry value for writing straight through the store, below the service."""
    opened_at = service.now() - opened_ago
    return Entry(
        entry_id=request_id(),
        order_id=setup.order_id,
        shop_id=setup.shop_id,
        state=state,
        opened_at=opened_at,
        expires_at=opened_at + service.policy.entry_window,
        operator_id=setup.owner_id,
        note="",
        policy_version=service.policy.version,
    )


@dataclasses.dataclass(frozen=True)
class Outcome:
    value: object = None
    error: BaseException | None = None


def at_once(store: SqlStore, count: int, work: Callable[[int], object]) -> list[Outcome]:
    """Runs work(0..count-1) on `count` threads released together, as replicas would; each
    thread has its own connection (peewee's are per thread) and closes its SQLite one after."""
    start = threading.Barrier(count)

    def one(index: int) -> Outcome:
        try:
            start.wait(timeout=30)
            return Outcome(value=work(index))
        except Exception as error:  # noqa: BLE001 - the outcome is what the test looks at
            return Outcome(error=error)
        finally:
            if not store.is_postgres:
                store.database.close()

    with futures.ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


# The threads of a server (server/grpc/background.py, events.py) that reach the database on their
# own schedule: the store's upkeep, the sweeper, the health probe and the events' feed.
BACKGROUND_THREADS = frozenset({"store-upkeep", "sweeper", "health-probe", "event-feed"})


@contextlib.contextmanager
def counted_statements(store: SqlStore) -> Iterator[list[str]]:
    """Every SQL statement the store's database runs meanwhile, transaction control included,
    but those of a server's own background threads (BACKGROUND_THREADS), which run when their
    interval says, not because of a call."""
    with _recorded(store, lambda sql, params=(): sql, lambda control: control) as statements:
        yield statements


@contextlib.contextmanager
def statements_with_parameters(store: SqlStore) -> Iterator[list[tuple[str, list[Any]]]]:
    """The statements counted_statements counts, each with its parameters (none for BEGIN,
    COMMIT and ROLLBACK)."""
    with _recorded(
        store, lambda sql, params=(): (sql, list(params or ())), lambda control: (control, [])
    ) as statements:
        yield statements


@contextlib.contextmanager
def _recorded(
    store: SqlStore, statement: Callable[..., Any], control: Callable[[str], Any]
) -> Iterator[list[Any]]:
    database = store.database
    statements: list[Any] = []

    def recording(name: str, label: Callable[..., Any]):
        original = getattr(database, name)

        def wrapper(*args, **kwargs):
            if threading.current_thread().name not in BACKGROUND_THREADS:
                statements.append(label(*args, **kwargs))
            return original(*args, **kwargs)

        return wrapper

    wrapped = {
        "execute_sql": recording("execute_sql", statement),
        "begin": recording("begin", lambda *a, **k: control("BEGIN")),
        "commit": recording("commit", lambda *a, **k: control("COMMIT")),
        "rollback": recording("rollback", lambda *a, **k: control("ROLLBACK")),
    }
    for name, wrapper in wrapped.items():
        setattr(database, name, wrapper)
    try:
        yield statements
    finally:
        for name in wrapped:
            delattr(database, name)


@contextlib.contextmanager
def held_by_another_thread(held: contextlib.AbstractContextManager[Any]) -> Iterator[None]:
    """Another thread holds `held` (a writer's turn, a connection) until the block ends."""
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with held:
            holding.set()
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(30)
        yield
    finally:
        done.set()
        holder.join(30)


def a_writer_holding_its_turn(store: SqlStore) -> contextlib.AbstractContextManager[None]:
    """Another thread holds the SQLite writers' turn until the block ends."""
    assert store.writer is not None
    return held_by_another_thread(store.writer)


OWED = 100  # fen per shop


def a_payee_owing(service, store, payee: str, shops: int, *, tag: str = "") -> list[str]:
    """`shops` shops, each owed OWED by `payee` on a clawback line nothing was recovered of; the
    ids are "shop-0000", "order-0000", "clawback-0000"..., after `tag` if given."""
    now = service.now()
    shop_ids = [f"{tag}shop-{i:04d}" for i in range(shops)]
    with store.unit_of_work() as uow:
        for i, shop_id in enumerate(shop_ids):
            uow.facts.put_shop(Shop(shop_id, shop_id, ShopStatus.NORMAL, now - timedelta(days=99)))
            order = Order(
                order_id=f"{tag}order-{i:04d}",
                shop_id=shop_id,
                buyer_id="buyer",
                kind=OrderKind.ORDINARY,
                marketing_campaign=False,
                category_id="furniture",
                paid_amount=10_000,
                created_at=now - timedelta(days=40),
                completed_at=now - timedelta(days=30),
                after_sales_ends_at=now - timedelta(days=23),
                commission_lines=(CommissionLine(PayeeKind.INFLUENCER, payee, 1_000),),
            )
            uow.facts.put_order(order)
            uow.clawbacks.record_refund(
                RefundClawback(
                    clawback_id=f"{tag}clawback-{i:04d}",
                    refund=Refund(f"{tag}refund-{i:04d}", order.order_id, "", 1_000, now, now),
                    shop_id=shop_id,
                    reasons=(),
                    lines=(ClawbackLine(0, PayeeKind.INFLUENCER, payee, 1_000, OWED, 0),),
                    refunded_before=0,
                    refunded_after=1_000,
                    policy_version="test",
                    created_at=now + timedelta(microseconds=i),
                )
            )
        uow.commit()
    return shop_ids
