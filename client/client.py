"""The client: one channel, the generated stubs, and typed exceptions instead of grpc.RpcError."""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol, TypedDict, TypeVar, Unpack, overload

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.protobuf import timestamp_pb2

from aftersales.v1 import (
    clawback_pb2,
    clawback_pb2_grpc,
    entry_pb2,
    entry_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    resources_pb2,
    sync_pb2,
    sync_pb2_grpc,
)
from client.errors import from_rpc_error

# Transient failures (the server or its database unavailable, a transaction the database aborted)
# are retried by gRPC itself, within the call's deadline (its timeout covers every attempt). The
# server asks a retry to wait 1 s after UNAVAILABLE (its RetryInfo), twice as long after each
# further failure: gRPC retries twice, after 1 s then 2 s (each varied by up to 20%, so that
# clients failed together do not come back together). With a server that takes a second or two
# to find its database busy, the three attempts fit in the default timeout of 10 s: a database
# that stays down ends UNAVAILABLE (retryable, nothing done), not DEADLINE_EXCEEDED (outcome
# unknown), unless the caller's timeout is shorter. An ABORTED, which the server asks to retry
# at once, waits as long: rare, it is not worth a policy of its own.
# Retrying is safe for every method: reads have no effect; PostFunds, OpenEntry, ApplyAfterSales
# and RecordRefund carry a request_id, so a retried one is answered from the server's record;
# PutShop, PutStaff and PutOrder carry none but are versioned upserts of a whole record, which
# sent twice leave one.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [
                    {"service": "aftersales.v1.Sync"},
                    {"service": "aftersales.v1.AfterSalesEntry"},
                    {"service": "aftersales.v1.Clawback"},
                    {"service": "aftersales.v1.Events", "method": "ListEvents"},
                ],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE", "ABORTED"],
                },
            }
        ]
    }
)


def new_request_id() -> str:
    """A new request id (a random UUID), as the mutations make when given none."""
    return str(uuid.uuid4())


def timestamp(moment: datetime | None, name: str = "moment") -> timestamp_pb2.Timestamp | None:
    """`moment` as a protobuf Timestamp (None stays None). It must be timezone-aware: a naive
    datetime raises ValueError naming the argument `name`, since taking it as UTC (or as local
    time) would be a guess, hours off wherever the guess is wrong."""
    if moment is None:
        return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"{name} is a naive datetime: give an aware one, e.g. datetime.now(UTC) "
            "or with a tzinfo"
        )
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment)
    return ts


def check_certificates(pem: bytes, what: str) -> None:
    """Raises ValueError, naming `what`, unless `pem` holds one PEM certificate or more: gRPC
    would otherwise fail each call as UNAVAILABLE (retryable), as if the server were down."""
    try:
        x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ValueError(f"{what} holds no PEM certificate") from None


def check_private_key(pem: bytes, what: str) -> None:
    """Raises ValueError, naming `what`, unless `pem` is an unencrypted PEM private key (the
    only kind gRPC takes)."""
    try:
        serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):  # TypeError: encrypted
        raise ValueError(f"{what} is not an unencrypted PEM private key") from None


_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


_log = logging.getLogger(__name__)

# The most events one message of a stream may hold (events.proto): a message costs the server
# about twice what an event costs.
MAX_BATCH_EVENTS = 50
# What watch_events asks for: most of the saving of 50, and a consumer may take up to 6 s over
# each event (the server cuts a stream whose message waits 60 s for its consumer).
DEFAULT_BATCH_EVENTS = 10


def events_in(message: events_pb2.WatchEventsResponse) -> Sequence[events_pb2.Event]:
    """The events one message of WatchEvents carries, in position order: a batch's, one alone,
    none in a heartbeat."""
    item = message.WhichOneof("item")
    if item == "batch":
        return message.batch.events
    return (message.event,) if item == "event" else ()


class EntryFilters(TypedDict, total=False):
    """The filters of Client.list_entries, for Client.iter_entries."""

    shop_id: str
    order_id: str
    state: resources_pb2.EntryState.ValueType
    page_size: int
    timeout: float | None  # each page's


class ClawbackFilters(TypedDict, total=False):
    """The filters of Client.list_clawbacks, for Client.iter_clawbacks."""

    state: resources_pb2.ClawbackState.ValueType
    start_time: datetime | None
    end_time: datetime | None
    page_size: int
    timeout: float | None  # each page's


class TransferFilters(TypedDict, total=False):
    """The filters of Client.list_transfers, for Client.iter_transfers."""

    page_size: int
    timeout: float | None  # each page's


class EventFilters(TypedDict, total=False):
    """The filters of Client.list_events, for Client.iter_events."""

    from_oldest: bool
    shop_id: str
    types: Sequence[events_pb2.EventType.ValueType]
    page_size: int
    timeout: float | None  # each page's


class _Bearer(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]  # grpc-stubs
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Adds `authorization: Bearer <token>` to every call of a plaintext channel."""

    def __init__(self, token: str) -> None:
        self._metadata = ("authorization", f"Bearer {token}")

    def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        return self.intercept_unary_unary(continuation, details, request)

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        metadata = [*(details.metadata or ()), self._metadata]
        with_token = _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )
        return continuation(with_token, request)


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    """Call details with other metadata (grpc's own are immutable)."""


class Client:
    """A client of one server. `channel` may be given (e.g. a secure channel); otherwise an
    insecure one to `address` is made. Every call takes `timeout` seconds at most, unless the
    call is given its own `timeout=` (seconds; None: the client's): a client shared by threads
    gives each call its own rather than changing the client's."""

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        channel: grpc.Channel | None = None,
        timeout: float = 10.0,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        token: str | None = None,
    ) -> None:
        """With `root_certificates` (PEM: the CA the server's certificate comes from) the channel
        is TLS; with `certificate_chain` and `private_key` too, this client proves its identity
        with its own certificate (servers started with --tls-client-ca require one): the two go
        together. Raises ValueError when one comes without the other, or when one is not PEM
        (a certificate or key that is PEM but wrong, such as another CA, shows only at the
        handshake: each call fails with Unavailable).

        `token` is the signed token of the person this client acts for, sent with every call
        as `authorization: Bearer <token>`, over TLS or plaintext alike: on plaintext anyone on
        the path may read it, so use TLS beyond loopback. Surrounding whitespace (a token file's
        trailing newline) is stripped; a token that still holds characters a header value may
        not (control characters, non-ASCII) raises ValueError."""
        if token is not None:
            token = token.strip()
            if not all(" " <= c <= "~" for c in token):
                raise ValueError(
                    "token holds characters a header value may not (only printable ASCII)"
                )
        if channel is not None and (token or root_certificates or certificate_chain):
            raise ValueError("a channel given is used as it is: give its credentials to it")
        # gRPC aborts the whole process on a certificate without its key (or the reverse).
        if bool(certificate_chain) != bool(private_key):
            raise ValueError("certificate_chain and private_key go together: give both or neither")
        if root_certificates:
            check_certificates(root_certificates, "root_certificates")
        if certificate_chain:
            check_certificates(certificate_chain, "certificate_chain")
        if private_key:
            check_private_key(private_key, "private_key")
        self._own_channel = channel is None
        self._closed = False
        options = [("grpc.service_config", _SERVICE_CONFIG), ("grpc.enable_retries", 1)]
        if channel is None:
            if root_certificates or certificate_chain or private_key:
                credentials = grpc.ssl_channel_credentials(
                    root_certificates, private_key, certificate_chain
                )
                if token:
                    credentials = grpc.composite_channel_credentials(
                        credentials, grpc.access_token_call_credentials(token)
                    )
                channel = grpc.secure_channel(address, credentials, options=options)
            else:
                channel = grpc.insecure_channel(address, options=options)
                if token:
                    # A development server on loopback (the demo): the token goes in plaintext.
                    channel = grpc.intercept_channel(channel, _Bearer(token))
        self.channel = channel
        self.timeout = timeout
        self.sync = sync_pb2_grpc.SyncStub(self.channel)
        self.entries = entry_pb2_grpc.AfterSalesEntryStub(self.channel)
        self.clawbacks = clawback_pb2_grpc.ClawbackStub(self.channel)
        self.events = events_pb2_grpc.EventsStub(self.channel)

    def _call(
        self,
        rpc: grpc.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        timeout: float | None,
        request_id: str | None = None,
    ) -> _Response:
        """`rpc(request)` within `timeout` seconds (None: the client's), a failure raised as
        its typed exception, naming the request's `request_id` (a mutation's)."""
        self._check_open()
        try:
            return rpc(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as e:
            raise from_rpc_error(e, request_id) from None

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("this Client is closed: make a new one")

    def close(self) -> None:
        """Closes the channel this client made (a channel given to it stays open: its owner's).
        A call made after raises ValueError. Closing twice does nothing more."""
        self._closed = True
        if self._own_channel:
            self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- Sync ---------------------------------------------------------------------------------

    def put_shop(
        self, shop: resources_pb2.Shop, *, timeout: float | None = None
    ) -> resources_pb2.Shop:
        """Creates or replaces the shop (the whole record, by its id); the stored shop is
        returned. Idempotent: the same record sent twice leaves one, and one with an older
        upstream `version` than the stored one changes nothing."""
        return self._call(self.sync.PutShop, sync_pb2.PutShopRequest(shop=shop), timeout)

    def put_staff(
        self, staff: resources_pb2.Staff, *, timeout: float | None = None
    ) -> resources_pb2.Staff:
        """Creates or replaces the staff account (the whole record, by its id), as put_shop.
        NotFound when its shop does not exist."""
        return self._call(self.sync.PutStaff, sync_pb2.PutStaffRequest(staff=staff), timeout)

    def put_order(
        self, order: resources_pb2.Order, *, timeout: float | None = None
    ) -> resources_pb2.Order:
        """Creates or replaces the order (the whole record, by its id), as put_shop. NotFound
        when its shop does not exist; FailedPrecondition (ORDER_FACTS_FROZEN) for a change of
        its shop, paid amount or commission lines once a refund was recorded on it."""
        return self._call(self.sync.PutOrder, sync_pb2.PutOrderRequest(order=order), timeout)

    def post_funds(
        self,
        account: resources_pb2.AccountRef,
        amount: int,
        *,
        memo: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> sync_pb2.PostFundsResponse:
        """Moves `amount` fen into the account (negative: out of it), e.g. a shop's top-up; returns
        the transfer. FailedPrecondition (INSUFFICIENT_FUNDS) for a withdrawal above the balance.
        Idempotent on `request_id` (made when not given; the exception names it): sent again
        with it, the money moves once."""
        request_id = request_id or new_request_id()
        return self._call(
            self.sync.PostFunds,
            sync_pb2.PostFundsRequest(
                request_id=request_id, account=account, amount=amount, memo=memo
            ),
            timeout,
            request_id,
        )

    # --- The entry ----------------------------------------------------------------------------

    def check_eligibility(
        self, order_id: str, operator_id: str = "", *, timeout: float | None = None
    ) -> entry_pb2.CheckEligibilityResponse:
        """Whether `operator_id` (default: the staff member of this client's token) could open
        the order's entry now: `eligible`, every unmet rule in `violations`, and the facts it
        was decided on. A read: it changes nothing. NotFound for an order nobody has or of
        another shop; PermissionDenied or Unauthenticated for a caller who may not ask."""
        return self._call(
            self.entries.CheckEligibility,
            entry_pb2.CheckEligibilityRequest(order_id=order_id, operator_id=operator_id),
            timeout,
        )

    def batch_check_eligibility(
        self, order_ids: Iterable[str], operator_id: str = "", *, timeout: float | None = None
    ) -> entry_pb2.BatchCheckEligibilityResponse:
        """check_eligibility of up to 500 orders in one call: one result per order id, in
        order; an order nobody has or of another shop is a result whose `error` is NOT_FOUND."""
        return self._call(
            self.entries.BatchCheckEligibility,
            entry_pb2.BatchCheckEligibilityRequest(
                order_ids=list(order_ids), operator_id=operator_id
            ),
            timeout,
        )

    def open_entry(
        self,
        order_id: str,
        operator_id: str = "",
        *,
        note: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> resources_pb2.Entry:
        """Opens the order's entry for the buyer, until its `expires_at`, as `operator_id`
        (default: the staff member of this client's token). FailedPrecondition lists every
        unmet rule; AlreadyExists names the entry open already (`entry_id`); NotFound,
        PermissionDenied as check_eligibility. Idempotent on `request_id` (made when not given;
        the exception names it): the same request sent again returns the same entry."""
        request_id = request_id or new_request_id()
        return self._call(
            self.entries.OpenEntry,
            entry_pb2.OpenEntryRequest(
                order_id=order_id,
                operator_id=operator_id,
                note=note,
                request_id=request_id,
            ),
            timeout,
            request_id,
        )

    def get_entry(self, entry_id: str, *, timeout: float | None = None) -> resources_pb2.Entry:
        """One entry by its id; NotFound when there is none (or it is another shop's)."""
        return self._call(
            self.entries.GetEntry, entry_pb2.GetEntryRequest(entry_id=entry_id), timeout
        )

    def list_entries(
        self,
        *,
        shop_id: str = "",
        order_id: str = "",
        state: resources_pb2.EntryState.ValueType = resources_pb2.ENTRY_STATE_UNSPECIFIED,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> entry_pb2.ListEntriesResponse:
        """A page of the entries of a shop and/or an order (one of the two is required), newest
        first, optionally in one `state`; the next page is asked for with the page's
        `next_page_token`, empty on the last (iter_entries follows them)."""
        return self._call(
            self.entries.ListEntries,
            entry_pb2.ListEntriesRequest(
                shop_id=shop_id,
                order_id=order_id,
                state=state,
                page_size=page_size,
                page_token=page_token,
            ),
            timeout,
        )

    def iter_entries(self, **filters: Unpack[EntryFilters]) -> Iterator[resources_pb2.Entry]:
        """Every entry matching the filters of list_entries, across pages."""
        return _pages(
            lambda token: self.list_entries(page_token=token, **filters), lambda page: page.entries
        )

    def get_buyer_order_entry(
        self, order_id: str, *, timeout: float | None = None
    ) -> entry_pb2.BuyerOrderEntry:
        """The buyer's order page: the order's newest entry, for the buyer of this client's
        token (`entry` unset when none was ever opened)."""
        return self._call(
            self.entries.GetBuyerOrderEntry,
            entry_pb2.GetBuyerOrderEntryRequest(order_id=order_id),
            timeout,
        )

    @overload
    def apply_after_sales(
        self,
        order_id: str,
        buyer_id: str,
        amount: int,
        *,
        reason: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> resources_pb2.Application: ...

    @overload
    def apply_after_sales(
        self,
        order_id: str,
        *,
        amount: int,
        buyer_id: str = "",
        reason: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> resources_pb2.Application: ...

    def apply_after_sales(
        self,
        order_id: str,
        buyer_id: str = "",
        amount: int | None = None,
        *,
        reason: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> resources_pb2.Application:
        """The buyer files for `amount` fen (at most the refundable amount) through the order's
        open entry: `apply_after_sales(order_id, buyer_id, amount)`, or with a buyer's token
        `apply_after_sales(order_id, amount=...)` (the buyer is the token's). FailedPrecondition
        when no entry is open or the amount is too much; PermissionDenied for another buyer.
        Idempotent on `request_id` (made when not given; the exception names it)."""
        if amount is None:
            raise TypeError("apply_after_sales() missing required argument: 'amount'")
        request_id = request_id or new_request_id()
        return self._call(
            self.entries.ApplyAfterSales,
            entry_pb2.ApplyAfterSalesRequest(
                order_id=order_id,
                buyer_id=buyer_id,
                amount=amount,
                reason=reason,
                request_id=request_id,
            ),
            timeout,
            request_id,
        )

    # --- Clawback -------------------------------------------------------------------------------

    def record_refund(
        self,
        refund_id: str,
        order_id: str,
        amount: int,
        *,
        started_at: datetime,
        paid_at: datetime,
        application_id: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> resources_pb2.RefundClawback:
        """Records a refund paid to the buyer and decides its clawback (returned, with every
        reason when it is NOT_ELIGIBLE). `started_at` and `paid_at` are aware datetimes
        (ValueError for a naive one). Idempotent on `refund_id` and on `request_id` (made when
        not given; the exception names it): the same refund sent again is one refund and one
        clawback. FailedPrecondition for an amount above what may be refunded; NotFound for an
        unknown order or application; InvalidArgument (REFUND_ID_REUSED) for the same
        `refund_id` with other facts."""
        request_id = request_id or new_request_id()
        return self._call(
            self.clawbacks.RecordRefund,
            clawback_pb2.RecordRefundRequest(
                refund_id=refund_id,
                order_id=order_id,
                application_id=application_id,
                amount=amount,
                started_at=timestamp(started_at, "started_at"),
                paid_at=timestamp(paid_at, "paid_at"),
                request_id=request_id,
            ),
            timeout,
            request_id,
        )

    def preview_clawback(
        self,
        order_id: str,
        amount: int,
        *,
        started_at: datetime | None = None,
        timeout: float | None = None,
    ) -> resources_pb2.RefundClawback:
        """What a late refund of `amount` fen, started at `started_at` (an aware datetime; default
        now), would recover now, per line, and why not if it would not. A read: nothing is
        written."""
        return self._call(
            self.clawbacks.PreviewClawback,
            clawback_pb2.PreviewClawbackRequest(
                order_id=order_id, amount=amount, started_at=timestamp(started_at, "started_at")
            ),
            timeout,
        )

    def get_clawback(
        self, *, clawback_id: str = "", refund_id: str = "", timeout: float | None = None
    ) -> resources_pb2.RefundClawback:
        """One clawback, by its `clawback_id` or by the `refund_id` it was recorded for: exactly
        one of the two (ValueError otherwise). NotFound when there is none."""
        if bool(clawback_id) == bool(refund_id):
            raise ValueError("give exactly one of clawback_id and refund_id")
        request = (
            clawback_pb2.GetClawbackRequest(clawback_id=clawback_id)
            if clawback_id
            else clawback_pb2.GetClawbackRequest(refund_id=refund_id)
        )
        return self._call(self.clawbacks.GetClawback, request, timeout)

    def list_clawbacks(
        self,
        shop_id: str,
        *,
        state: resources_pb2.ClawbackState.ValueType = resources_pb2.CLAWBACK_STATE_UNSPECIFIED,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> clawback_pb2.ListClawbacksResponse:
        """A page of the shop's clawbacks, newest first, optionally in one `state` and
        recorded within [`start_time`, `end_time`) (aware datetimes); next pages as list_entries
        (iter_clawbacks follows them)."""
        return self._call(
            self.clawbacks.ListClawbacks,
            clawback_pb2.ListClawbacksRequest(
                shop_id=shop_id,
                state=state,
                start_time=timestamp(start_time, "start_time"),
                end_time=timestamp(end_time, "end_time"),
                page_size=page_size,
                page_token=page_token,
            ),
            timeout,
        )

    def iter_clawbacks(
        self, shop_id: str, **filters: Unpack[ClawbackFilters]
    ) -> Iterator[resources_pb2.RefundClawback]:
        """Every clawback of the shop matching the filters of list_clawbacks, across pages."""
        return _pages(
            lambda token: self.list_clawbacks(shop_id, page_token=token, **filters),
            lambda page: page.clawbacks,
        )

    def get_balances(
        self,
        accounts: Iterable[resources_pb2.AccountRef] = (),
        *,
        owner_id: str = "",
        timeout: float | None = None,
    ) -> dict[tuple[resources_pb2.AccountKind.ValueType, str], int]:
        """Balances as {(account kind, owner id): fen}."""
        response = self._call(
            self.clawbacks.GetBalances,
            clawback_pb2.GetBalancesRequest(accounts=list(accounts), owner_id=owner_id),
            timeout,
        )
        return {(b.account.kind, b.account.owner_id): b.balance for b in response.balances}

    def list_transfers(
        self,
        account: resources_pb2.AccountRef,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> clawback_pb2.ListTransfersResponse:
        """A page of the transfers into and out of the account, newest first; next pages as
        list_entries (iter_transfers follows them). NotFound for the wallet or deposit of a shop
        nobody has."""
        return self._call(
            self.clawbacks.ListTransfers,
            clawback_pb2.ListTransfersRequest(
                account=account, page_size=page_size, page_token=page_token
            ),
            timeout,
        )

    def iter_transfers(
        self, account: resources_pb2.AccountRef, **filters: Unpack[TransferFilters]
    ) -> Iterator[resources_pb2.Transfer]:
        """Every transfer of the account, newest first, across pages."""
        return _pages(
            lambda token: self.list_transfers(account, page_token=token, **filters),
            lambda page: page.transfers,
        )

    # --- Events -------------------------------------------------------------------------------

    def list_events(
        self,
        after_position: int = 0,
        *,
        from_oldest: bool = False,
        shop_id: str = "",
        types: Sequence[events_pb2.EventType.ValueType] = (),
        page_size: int = 0,
        timeout: float | None = None,
    ) -> events_pb2.ListEventsResponse:
        """A page of the events after `after_position` (or from the oldest held, with
        `from_oldest`), in position order; the next page is after `next_after_position`. A
        short page, even an empty one, is not the end: a filtered read goes on span by span,
        and a page ends before its bytes pass their bound. The end is the page whose
        `caught_up` is set. OutOfRange when the events after `after_position` were pruned."""
        return self._call(
            self.events.ListEvents,
            events_pb2.ListEventsRequest(
                after_position=after_position,
                from_oldest=from_oldest,
                shop_id=shop_id,
                types=types,
                page_size=page_size,
            ),
            timeout,
        )

    def iter_events(
        self, after_position: int = 0, **filters: Unpack[EventFilters]
    ) -> Iterator[events_pb2.Event]:
        """Every event held after `after_position` (or from the oldest held, with
        `from_oldest`) matching the filters of list_events, in position order, across pages up
        to the one that is `caught_up`. It does not wait for events to come: watch_events
        does."""
        after = after_position
        while True:
            page = self.list_events(after, **filters)
            yield from page.events
            if page.caught_up:
                return
            after, filters["from_oldest"] = page.next_after_position, False

    @overload
    def watch_events(
        self,
        after_position: int = 0,
        *,
        from_oldest: bool = False,
        shop_id: str = "",
        types: Sequence[events_pb2.EventType.ValueType] = (),
        heartbeat_seconds: int = 0,
        heartbeats: Literal[False] = False,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 30.0,
        max_batch_events: int = DEFAULT_BATCH_EVENTS,
    ) -> Iterator[events_pb2.Event]: ...

    @overload
    def watch_events(
        self,
        after_position: int = 0,
        *,
        from_oldest: bool = False,
        shop_id: str = "",
        types: Sequence[events_pb2.EventType.ValueType] = (),
        heartbeat_seconds: int = 0,
        heartbeats: bool,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 30.0,
        max_batch_events: int = DEFAULT_BATCH_EVENTS,
    ) -> Iterator[events_pb2.Event | events_pb2.Heartbeat]: ...

    def watch_events(
        self,
        after_position: int = 0,
        *,
        from_oldest: bool = False,
        shop_id: str = "",
        types: Sequence[events_pb2.EventType.ValueType] = (),
        heartbeat_seconds: int = 0,
        heartbeats: bool = False,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 30.0,
        max_batch_events: int = DEFAULT_BATCH_EVENTS,
    ) -> Iterator[events_pb2.Event | events_pb2.Heartbeat]:
        """Every event after `after_position` (or from the oldest held), in position order:
        first the backlog, then each event as it commits, for as long as the caller iterates.
        With `heartbeats`, the heartbeats too (their `position` may be stored as an event's);
        a type checker then sees Event | Heartbeat, else Event.
        The server sends the events ready together in one message, up to `max_batch_events`
        (1: one a message, up to MAX_BATCH_EVENTS); they are yielded one by one all the same.
        The caller takes each message's events within 60 s, or the server cuts the stream
        (CANCELLED): with n a message, it may spend up to 60/n seconds on each event.

        Resumes by itself: when the stream breaks (UNAVAILABLE: the server stops, the network
        fails; ABORTED), the server has no room for it (RESOURCE_EXHAUSTED) or falls silent
        (nothing, not even a heartbeat, for three heartbeat intervals: a dead host or a dropped
        connection), it reconnects from the last position it yielded, so that the caller sees
        each event once, for as long as the caller iterates. It waits before each reconnection:
        `reconnect_delay` seconds after the first failure, twice as long after each further one
        in a row, up to `max_reconnect_delay`, each wait between half and all of that (so that
        consumers cut together do not come back together); at least the RetryInfo delay when
        the server sent one (RESOURCE_EXHAUSTED: it serves as many streams as it may). A stream
        that delivered something starts the count again. Each reconnection is logged at WARNING
        (logger "client.client") with the failure, the position it resumes after and the wait.
        Any other failure raises its typed
        exception (OutOfRange: the position asked for was pruned; an AfterSalesError of code
        CANCELLED: the server cut the stream, its events left untaken, or the channel was
        closed)."""
        self._check_open()
        after = after_position
        silence = 3 * (heartbeat_seconds or DEFAULT_HEARTBEAT_SECONDS)
        failures = 0  # in a row: since a stream last delivered something
        while True:
            request = events_pb2.WatchEventsRequest(
                after_position=after,
                from_oldest=from_oldest and after == 0,
                shop_id=shop_id,
                types=types,
                heartbeat_seconds=heartbeat_seconds,
                max_batch_events=max_batch_events,
            )
            stream = self.events.WatchEvents(request)
            watchdog = _Watchdog(silence, stream.cancel)
            try:
                for item in stream:
                    failures = 0
                    watchdog.heard()
                    if item.HasField("heartbeat"):
                        after = max(after, item.heartbeat.position)
                        if heartbeats:
                            with watchdog.away():
                                yield item.heartbeat
                        continue
                    for event in events_in(item):
                        after = event.position
                        with watchdog.away():  # the caller's time is not the stream's silence
                            yield event
            except grpc.RpcError as e:
                error = from_rpc_error(e)
                if error.code not in _RESUMED and not watchdog.fired:
                    raise error from None
                delay = _reconnect_wait(reconnect_delay, max_reconnect_delay, failures)
                if error.retry_delay is not None:
                    delay = max(delay, error.retry_delay.total_seconds())
                failures += 1
                _log.warning(
                    "watch_events: the stream broke (%s); reconnecting after position %d in "
                    "%.2f s (failure %d in a row)",
                    f"nothing heard for {silence} s" if watchdog.fired else error,
                    after,
                    delay,
                    failures,
                )
                time.sleep(delay)
            finally:
                watchdog.stop()
                stream.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs


def _reconnect_wait(first: float, most: float, failures: int) -> float:
    """The wait before reconnecting after `failures` earlier failures in a row: `first` doubled
    for each, at most `most`, and of that between half and all (jitter)."""
    ceiling = min(most, first * 2 ** min(failures, 32))
    return random.uniform(ceiling / 2, ceiling)


# The heartbeat interval of a stream that asks for none (the server's default; events.proto).
DEFAULT_HEARTBEAT_SECONDS = 10


class _Watchdog:
    """Calls `cancel` once nothing was heard for `silence` seconds while the stream was waited
    on (not while the caller handles what it was given); one thread per stream."""

    def __init__(self, silence: float, cancel: Callable[[], object]) -> None:
        self.silence = silence
        self.cancel = cancel
        self.last = time.monotonic()
        self.waiting_on_caller = False
        self.fired = False
        self.stopped = threading.Event()
        threading.Thread(target=self._watch, name="watch-events-watchdog", daemon=True).start()

    def heard(self) -> None:
        self.last = time.monotonic()

    @contextlib.contextmanager
    def away(self) -> Iterator[None]:
        """While the caller holds what it was given: the silence counts from its return."""
        self.waiting_on_caller = True
        try:
            yield
        finally:
            self.heard()
            self.waiting_on_caller = False

    def stop(self) -> None:
        self.stopped.set()

    def _watch(self) -> None:
        while not self.stopped.wait(min(1.0, self.silence / 4)):
            if not self.waiting_on_caller and time.monotonic() - self.last >= self.silence:
                self.fired = True
                self.cancel()
                return


# A stream that breaks with these is resumed by Client.watch_events.
_RESUMED = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
)


class _Page(Protocol):
    @property
    def next_page_token(self) -> str: ...


_PageT = TypeVar("_PageT", bound=_Page)
_ItemT = TypeVar("_ItemT")


def _pages(
    list_page: Callable[[str], _PageT], items: Callable[[_PageT], Iterable[_ItemT]]
) -> Iterator[_ItemT]:
    """The items of every page, following next_page_token (AIP-158) to the last page."""
    token = ""
    while True:
        page = list_page(token)
        yield from items(page)
        token = page.next_page_token
        if not token:
            return
