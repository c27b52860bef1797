"""Use cases of the Events service: read the outbox in position order; prune what the retention
no longer keeps."""

from __future__ import annotations

from collections.abc import Collection

from server.domain.access import Person, PersonKind
from server.domain.errors import EventsAhead, EventsPruned, NotFound, NotTheAuthenticatedPerson
from server.domain.events import EventPage, EventType
from server.service.base import UseCases
from server.service.unit_of_work import UnitOfWork

# Events a sweep prunes per transaction, and transactions per sweep at most: up to 200,000 events
# a sweep (every 30 s by default), well above what the platform writes, so that the retention
# holds; a sweep that finds fewer stops at the first short batch.
PRUNE_BATCH = 1_000
PRUNE_BATCHES = 200


class EventUseCases(UseCases):
    def read_events(
        self,
        *,
        after: int,
        from_oldest: bool,
        shop_id: str | None,
        types: Collection[EventType],
        limit: int,
        viewer: Person | None = None,
    ) -> EventPage:
        """At most `limit` events after position `after` (or from the oldest held), in position
        order. A staff member sees only its own shop's events, and only if it may see the shop's
        money (the events tell of it); a buyer is refused (NotTheAuthenticatedPerson).
        EventsPruned when events after `after` are gone."""
        with self.unit_of_work(read_only=True) as uow:
            shop_id = self._events_shop(uow, shop_id, viewer)
            page = uow.events.read(
                after=after, shop_id=shop_id, types=types, limit=limit, from_oldest=from_oldest
            )
        if not from_oldest and after < page.pruned_through:
            raise EventsPruned(after, page.pruned_through)
        if after > page.top:
            # No position past the highest held was ever handed out (they follow the commit
            # order): the consumer's position is of another database, or of one restored from a
            # backup. Silence would skip every event until the positions pass it.
            raise EventsAhead(after, page.top)
        return page

    def events_shop(self, *, shop_id: str | None, viewer: Person | None) -> str | None:
        """The shop whose events `viewer` may read when it asks for `shop_id`'s (None: every
        shop's), refused as read_events refuses it. A service acting for no one reads nothing."""
        if viewer is None:
            return shop_id
        with self.unit_of_work(read_only=True) as uow:
            return self._events_shop(uow, shop_id, viewer)

    def _events_shop(
        self, uow: UnitOfWork, shop_id: str | None, viewer: Person | None
    ) -> str | None:
        scope = self.scope(uow, viewer)
        if scope is None:
            return shop_id
        if viewer is not None and viewer.kind is PersonKind.BUYER:
            raise NotTheAuthenticatedPerson(viewer.person_id, "a staff member is needed here")
        shop_id = shop_id or scope.shop_id
        if shop_id is None or not scope.sees_money_of(shop_id):
            raise NotFound("shop", shop_id or "")
        return shop_id

    def prune_events(self, batch: int = PRUNE_BATCH, batches: int = PRUNE_BATCHES) -> int:
        """Deletes the events older than the policy's retention, in transactions of at most
        `batch` events, `batches` of them at most (the next sweep goes on)."""
        return self.in_batches(
            lambda uow: uow.events.prune(self.clock.now() - self.policy.event_retention, batch),
            batch,
            batches,
        )

    def last_event_position(self) -> int:
        """The highest position written (0 when none)."""
        with self.unit_of_work(read_only=True) as uow:
            return uow.events.held()[1]
