"""The Events service: the outbox read in position order, paged (ListEvents) or as a stream that
follows the commits (WatchEvents)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from aftersales.v1 import events_pb2, events_pb2_grpc, resources_pb2
from server.domain import events
from server.grpc.callers import viewer
from server.grpc.common import (
    Fields,
    MessageFields,
    Servicer,
    filled,
    page_size,
    timestamp,
    timestamp_fields,
)
from server.grpc.resources import actor_fields
from server.service import Service

# Events read per statement while a stream catches up: what a stream holds in memory at most.
STREAM_BATCH = 100
DEFAULT_HEARTBEAT_SECONDS = 10
MAX_HEARTBEAT_SECONDS = 300
# How often a process looks for events other processes committed (its own wake its streams at
# once), while anyone watches.
POLL_SECONDS = 0.05
# A stream whose message has waited this long for its consumer to take it (a consumer that reads
# nothing, a hung host whose connection stays up) is cut: it would hold its slot for good.
STALLED_STREAM_SECONDS = 60.0

log = logging.getLogger("aftersales")


class Feed:
    """Wakes the streams of this process when events may have been committed: at once for this
    process's commits, and within POLL_SECONDS for other processes' (one thread polls the highest
    position while anyone watches). The same thread cuts the streams whose consumer has taken
    nothing for STALLED_STREAM_SECONDS."""

    def __init__(self, service: Service, poll: float = POLL_SECONDS) -> None:
        self.service = service
        self.poll = poll
        self.closed = threading.Event()
        self._waiters: set[threading.Event] = set()
        self._lock = threading.Lock()
        self.thread: threading.Thread | None = None
        # The streams sending a message: since when, and their call (by their waiter).
        self._sending: dict[threading.Event, tuple[float, Any]] = {}
        service.committed.append(self.wake_all)

    def sending(self, waiter: threading.Event, context: Any) -> None:
        """The stream of `waiter` hands a message to gRPC, which takes it once the consumer has
        room for it (its flow-control window)."""
        with self._lock:
            self._sending[waiter] = (time.monotonic(), context)

    def sent(self, waiter: threading.Event) -> None:
        with self._lock:
            self._sending.pop(waiter, None)

    def _cut_stalled(self) -> None:
        cutoff = time.monotonic() - STALLED_STREAM_SECONDS
        with self._lock:
            stalled = [(w, c) for w, (since, c) in self._sending.items() if since < cutoff]
            for waiter, _ in stalled:
                del self._sending[waiter]
        for _, context in stalled:
            log.warning(
                "an event stream is cut: its consumer took no message for %.0f s",
                STALLED_STREAM_SECONDS,
                extra={"peer": context.peer()},
            )
            context.cancel()

    def subscribe(self, waiter: threading.Event) -> None:
        with self._lock:
            self._waiters.add(waiter)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="event-feed", daemon=True)
                self.thread.start()

    def unsubscribe(self, waiter: threading.Event) -> None:
        with self._lock:
            self._waiters.discard(waiter)

    def wake_all(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for waiter in waiters:
            waiter.set()

    def close(self) -> None:
        """Streams end (UNAVAILABLE: the server is stopping; their consumers reconnect)."""
        self.closed.set()
        self.wake_all()

    def _run(self) -> None:
        top = None
        while not self.closed.wait(self.poll):
            if not self._waiters:
                continue
            self._cut_stalled()
            try:
                latest = self.service.last_event_position()
            except Exception:  # the streams' own reads report the failure
                continue
            if latest != top:
                top = latest
                self.wake_all()


class StreamSlots:
    """At most `limit` streams at once: each holds a thread while it lasts."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self._open >= self.limit:
                return False
            self._open += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self._open -= 1

    def busy(self) -> int:
        with self._lock:
            return self._open


class EventsServicer(events_pb2_grpc.EventsServicer, Servicer):
    def __init__(self, service: Service, *, max_streams: int, poll: float = POLL_SECONDS) -> None:
        super().__init__(service)
        self.feed = Feed(service, poll)
        self.slots = StreamSlots(max_streams)

    def ListEvents(
        self, request: events_pb2.ListEventsRequest, context: Any
    ) -> events_pb2.ListEventsResponse:
        f = Fields(request)
        after, from_oldest, shop_id, types = _filters(f, request)
        if request.page_size < 0:
            f.bad("page_size", "must not be negative")
        f.raise_if_any()
        size = page_size(request.page_size)
        page = self.service.read_events(
            after=after,
            from_oldest=from_oldest,
            shop_id=shop_id,
            types=types,
            limit=size,
            viewer=viewer(),
        )
        response = events_pb2.ListEventsResponse(
            next_after_position=page.through, caught_up=page.caught_up
        )
        held = filled(response, "events", page.events, event_fields)
        if held < len(page.events):
            # Cut for its bytes: the next page goes on after the last event sent.
            response.next_after_position = page.events[held - 1].position
            response.caught_up = False
        return response

    def WatchEvents(
        self, request: events_pb2.WatchEventsRequest, context: Any
    ) -> Iterator[events_pb2.WatchEventsResponse]:
        f = Fields(request)
        after, from_oldest, shop_id, types = _filters(f, request)
        heartbeat = request.heartbeat_seconds or DEFAULT_HEARTBEAT_SECONDS
        if not 1 <= heartbeat <= MAX_HEARTBEAT_SECONDS:
            f.bad("heartbeat_seconds", f"must be from 1 to {MAX_HEARTBEAT_SECONDS}, or 0")
        f.raise_if_any()
        if not self.slots.take():
            raise TooManyStreams(self.slots.limit)
        wake = threading.Event()
        self.feed.subscribe(wake)
        context.add_callback(wake.set)
        person = viewer()
        try:
            last_sent = time.monotonic()
            while context.is_active() and not self.feed.closed.is_set():
                wake.clear()
                page = self.service.read_events(
                    after=after,
                    from_oldest=from_oldest,
                    shop_id=shop_id,
                    types=types,
                    limit=STREAM_BATCH,
                    viewer=person,
                )
                from_oldest = False
                for event in page.events:
                    self.feed.sending(wake, context)
                    yield events_pb2.WatchEventsResponse(event=event_pb(event))
                    self.feed.sent(wake)
                after = page.through
                if page.events:
                    last_sent = time.monotonic()
                idle = time.monotonic() - last_sent
                if idle >= heartbeat:  # also while a filtered backlog is read on, span by span
                    self.feed.sending(wake, context)
                    yield events_pb2.WatchEventsResponse(
                        heartbeat=events_pb2.Heartbeat(
                            position=after, sent_at=timestamp(self.service.now())
                        )
                    )
                    self.feed.sent(wake)
                    last_sent = time.monotonic()
                    idle = 0.0
                if len(page.events) >= STREAM_BATCH or not page.caught_up:
                    continue
                wake.wait(heartbeat - idle)
        finally:
            self.feed.sent(wake)
            self.feed.unsubscribe(wake)
            self.slots.give_back()
        if self.feed.closed.is_set() and context.is_active():
            raise ServerStopping()


class TooManyStreams(Exception):
    """Every slot for a stream is taken (RESOURCE_EXHAUSTED, retryable later)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"this server serves {limit} event streams at most; retry later")


class ServerStopping(Exception):
    """The server is stopping: its streams end UNAVAILABLE, for consumers to resume elsewhere."""

    def __init__(self) -> None:
        super().__init__("the server is stopping; resume from the last position handled")


def _filters(
    f: Fields, request: events_pb2.ListEventsRequest | events_pb2.WatchEventsRequest
) -> tuple[int, bool, str | None, tuple[events.EventType, ...]]:
    if request.after_position < 0:
        f.bad("after_position", "must not be negative")
    if request.from_oldest and request.after_position:
        f.bad("from_oldest", "goes with after_position 0 only")
    shop_id = f.id("shop_id", request.shop_id, required=False) or None
    types = []
    for i, value in enumerate(request.types):
        member = f.enum(f"types[{i}]", events_pb2.EventType, value, events.EventType, "EVENT_TYPE_")
        if member is not None:
            types.append(member)
    return request.after_position, request.from_oldest, shop_id, tuple(dict.fromkeys(types))


# --- Events -> messages ------------------------------------------------------------------------


def event_pb(e: events.Event) -> events_pb2.Event:
    return events_pb2.Event(**event_fields(e))


def event_fields(e: events.Event) -> MessageFields:
    """The event as its message's fields, its payload under the name of its oneof field
    (resources.py: nested messages as dicts are built in place)."""
    name, payload = _payload_fields(e.payload)
    return {
        "position": e.position,
        "type": events_pb2.EventType.Value("EVENT_TYPE_" + e.type.value),
        "occurred_at": timestamp_fields(e.occurred_at),
        "shop_id": e.shop_id,
        "order_id": e.order_id,
        "actor": actor_fields(e.actor),
        "policy_version": e.policy_version,
        name: payload,
    }


def _payload_fields(p: events.Payload) -> tuple[str, MessageFields]:
    if isinstance(p, events.EntryOpened):
        return "entry_opened", {
            "entry_id": p.entry_id,
            "opened_at": timestamp_fields(p.opened_at),
            "expires_at": timestamp_fields(p.expires_at),
            "operator_id": p.operator_id,
            "note": p.note,
        }
    if isinstance(p, events.EntryUsed):
        return "entry_used", {
            "entry_id": p.entry_id,
            "application_id": p.application_id,
            "buyer_id": p.buyer_id,
            "amount": p.amount,
            "filed_at": timestamp_fields(p.filed_at),
        }
    if isinstance(p, events.EntryExpired):
        return "entry_expired", {
            "entry_id": p.entry_id,
            "opened_at": timestamp_fields(p.opened_at),
            "expires_at": timestamp_fields(p.expires_at),
        }
    if isinstance(p, events.RefundRecorded):
        return "refund_recorded", {
            "refund_id": p.refund_id,
            "clawback_id": p.clawback_id,
            "application_id": p.application_id,
            "amount": p.amount,
            "paid_from_wallet": p.paid_from_wallet,
            "paid_from_deposit": p.paid_from_deposit,
            "state": resources_pb2.ClawbackState.Value("CLAWBACK_STATE_" + p.state),
            "reasons": [resources_pb2.ReasonCode.Value(r) for r in p.reasons],
            "lines": [
                {
                    "line_no": line.line_no,
                    "payee_kind": resources_pb2.PayeeKind.Value("PAYEE_KIND_" + line.payee_kind),
                    "payee_id": line.payee_id,
                    "account": _account(line.account_kind, line.account_owner_id),
                    "due": line.due,
                    "recovered": line.recovered,
                    "outstanding": line.outstanding,
                }
                for line in p.lines
            ],
        }
    if isinstance(p, events.DebtRecovered):
        return "debt_recovered", {
            "clawback_id": p.clawback_id,
            "line_no": p.line_no,
            "payee_id": p.payee_id,
            "from_account": _account(p.from_account_kind, p.from_account_owner_id),
            "to_account": _account(p.to_account_kind, p.to_account_owner_id),
            "amount": p.amount,
            "outstanding": p.outstanding,
            "transfer_id": p.transfer_id,
        }
    if isinstance(p, events.FundsPosted):
        return "funds_posted", {
            "transfer_id": p.transfer_id,
            "account": _account(p.account_kind, p.account_owner_id),
            "amount": p.amount,
            "memo": p.memo,
            "balance": p.balance,
        }
    assert isinstance(p, events.ShopStatusChanged)
    return "shop_status_changed", {
        "previous": _shop_status(p.previous),
        "status": _shop_status(p.status),
    }


def _account(kind: str, owner_id: str) -> MessageFields:
    return {"kind": resources_pb2.AccountKind.Value("ACCOUNT_KIND_" + kind), "owner_id": owner_id}


def _shop_status(status: str) -> resources_pb2.ShopStatus.ValueType:
    if not status:
        return resources_pb2.SHOP_STATUS_UNSPECIFIED
    return resources_pb2.ShopStatus.Value("SHOP_STATUS_" + status)
