"""What every use case shares: the store, the clock, the policy, and who owns the transaction."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Concatenate, ParamSpec, TypeVar

from server.domain import rules
from server.domain.access import Person, PersonKind, Scope
from server.domain.model import AccountKind, AccountRef, Policy
from server.service.clock import Clock
from server.service.outcomes import Outcome
from server.service.unit_of_work import Store, UnitOfWork

log = logging.getLogger("aftersales")

T = TypeVar("T")
P = ParamSpec("P")
U = TypeVar("U", bound="UseCases")

# Told the outcomes of each unit of work that committed.
Observer = Callable[[Sequence[Outcome]], None]


def new_uuid() -> str:
    return str(uuid.uuid4())


class UseCases:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        policy: Policy,
        new_id: Callable[[], str] = new_uuid,
    ) -> None:
        self.store = store
        self.clock = clock
        self.policy = policy
        self.new_id = new_id
        self.observers: list[Observer] = []
        self._current = threading.local()
        # Called after each write unit of work that wrote events commits (the Events service
        # wakes its streams).
        self.committed: list[Callable[[], None]] = []

    def observe(self, observer: Observer) -> None:
        """From now on, `observer` is told the outcomes of every unit of work that commits
        (once, however often it is added)."""
        if observer not in self.observers:
            self.observers.append(observer)

    def happened(self, outcome: Outcome) -> None:
        """Records what the use case achieved, for the observers once its unit of work has
        committed; forgotten if it rolls back."""
        pending: list[Outcome] | None = getattr(self._current, "outcomes", None)
        if pending is not None:
            pending.append(outcome)

    @contextlib.contextmanager
    def unit_of_work(self, *, read_only: bool = False) -> Iterator[UnitOfWork]:
        """The unit of work a use case runs in: committed when the block ends, rolled back when
        it raises (a refusal writes nothing).

        The outermost block owns it. A use case called inside another's block (a mutation run
        by `once`, which stores the response in the same transaction; the demo loader) runs in
        that one, so that everything commits or rolls back together."""
        current: UnitOfWork | None = getattr(self._current, "uow", None)
        if current is not None:
            if self._current.read_only and not read_only:
                raise RuntimeError("a use case that writes was called inside a read-only one")
            yield current
            return
        outcomes: list[Outcome] = []
        with self.store.unit_of_work(read_only=read_only) as uow:
            self._current.uow, self._current.read_only = uow, read_only
            self._current.outcomes = outcomes if self.observers else None
            try:
                yield uow
                if not read_only:
                    uow.on_commit(lambda: self._after_commit(outcomes, uow.events.added_any))
                    uow.commit()
            finally:
                self._current.uow = self._current.outcomes = None

    def in_batches(self, step: Callable[[UnitOfWork], int], batch: int, batches: int) -> int:
        """Runs `step` (it handles at most `batch` things and returns how many) in a unit of work
        of its own, again and again, `batches` times at most: it stops at the first short batch.
        Returns how many were handled: a sweep's task whose work is bounded per transaction and
        per sweep (the next sweep goes on)."""
        done = 0
        for _ in range(batches):
            with self.unit_of_work() as uow:
                found = step(uow)
            done += found
            if found < batch:
                break
        return done

    def serially(self, work: Callable[[], T]) -> T:
        """Runs `work`, a use case that writes, where the store runs its writers
        (Store.serially); inside another use case's unit of work, in it."""
        if getattr(self._current, "uow", None) is not None:
            return work()
        return self.store.serially(work)

    def _after_commit(self, outcomes: Sequence[Outcome], events_added: bool) -> None:
        if outcomes:
            self._tell(outcomes)
        if events_added:
            for listener in self.committed:
                listener()

    def _tell(self, outcomes: Sequence[Outcome]) -> None:
        """Tells the observers what committed. Their failure is logged, never the caller's: the
        change is made, and its response must say so."""
        for observer in self.observers:
            try:
                observer(outcomes)
            except Exception:
                log.exception(
                    "an observer of the use cases failed", extra={"outcomes": len(outcomes)}
                )

    def scope(self, uow: UnitOfWork, viewer: Person | None) -> Scope | None:
        """What `viewer` may see (None: everything, for a service acting for no one)."""
        if viewer is None:
            return None
        if viewer.kind is PersonKind.STAFF:
            staff = uow.facts.staff(viewer.person_id)
            return Scope(shop_id=staff.shop_id, sees_money=rules.shows_balances(staff, self.policy))
        return Scope(buyer_id=viewer.person_id)

    def now(self) -> datetime:
        return self.clock.now()

    def store_upkeep(self) -> int:
        """The store's upkeep between calls (Store.upkeep)."""
        return self.store.upkeep()

    def close(self) -> None:
        self.store.close()


def serial(use_case: Callable[Concatenate[U, P], T]) -> Callable[Concatenate[U, P], T]:
    """Marks a use case that writes: it runs where the store runs its writers
    (UseCases.serially)."""

    @functools.wraps(use_case)
    def run(self: U, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.serially(lambda: use_case(self, *args, **kwargs))

    return run


def wallet_of(shop_id: str) -> AccountRef:
    return AccountRef(AccountKind.ANXIN_WALLET, shop_id)


def deposit_of(shop_id: str) -> AccountRef:
    return AccountRef(AccountKind.DEPOSIT, shop_id)


def order_subject(order_id: str) -> str:
    return f"orders/{order_id}"


def account_subject(account: AccountRef) -> str:
    owner = f"/{account.owner_id}" if account.owner_id else ""
    return f"accounts/{account.kind.value.lower()}{owner}"
