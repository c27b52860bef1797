"""Requests whose bytes are not their message: refused as INVALID_ARGUMENT before any servicer
runs, and logged at most once per peer per interval.

Left to itself, grpc answers them INTERNAL ("Exception deserializing request!") and logs a
traceback for each, so anyone able to send bytes could flood the log. Here the deserializer gives
an `Undecodable` instead, and the method's behaviour refuses it (`refuse`).
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError

from server.grpc import answers, status

log = logging.getLogger("aftersales")

# At most one warning per peer (its address, whatever its port) in this many seconds, and this
# many peers remembered: the oldest one is forgotten first.
LOG_INTERVAL_SECONDS = 60.0
LOG_PEERS = 1000


class Undecodable:
    """What a request decodes to when its bytes are not a `message_type`."""

    __slots__ = ("message_type",)

    def __init__(self, message_type: str) -> None:
        self.message_type = message_type


@functools.lru_cache(maxsize=256)
def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserializer`, giving an Undecodable instead of raising DecodeError. (Made once per
    method: its handler's deserializer is the same object on every call.)"""
    if deserializer is None:
        return None
    # A generated message's FromString is bound to its class; any other callable names itself.
    message_class = getattr(deserializer, "__self__", None)
    descriptor = getattr(message_class, "DESCRIPTOR", None)
    message_type = str(
        getattr(descriptor, "full_name", "") or getattr(deserializer, "__name__", "")
    )

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            return Undecodable(message_type)

    return deserialize


class PeerLog:
    """Says whether a peer is due another log line: at most one per `interval` seconds each,
    among the `size` peers logged about most recently."""

    def __init__(
        self,
        interval: float = LOG_INTERVAL_SECONDS,
        size: int = LOG_PEERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.size = size
        self.clock = clock
        # peer -> (when it was last logged, how many times it was not logged since)
        self._peers: collections.OrderedDict[str, tuple[float, int]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def due(self, peer: str) -> int | None:
        """None when `peer` was logged less than `interval` ago; else how many of its events were
        not logged since its last line (which is now)."""
        now = self.clock()
        with self._lock:
            last, skipped = self._peers.get(peer, (None, 0))
            if last is not None and now - last < self.interval:
                self._peers[peer] = (last, skipped + 1)
                return None
            self._peers[peer] = (now, 0)
            self._peers.move_to_end(peer)
            while len(self._peers) > self.size:
                self._peers.popitem(last=False)
            return skipped


def address_of(peer: str) -> str:
    """The peer's address without its port ("ipv4:10.0.0.7:51234" -> "ipv4:10.0.0.7"): a client
    opening connection after connection is still one peer."""
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in address:
        return f"{kind}:{address.rsplit(':', 1)[0]}"
    return peer


def refuse(
    request: Undecodable, context: grpc.ServicerContext, method: str, peers: PeerLog
) -> NoReturn:
    """Answers INVALID_ARGUMENT (raises, as context.abort does), and logs it if the peer is due."""
    peer = address_of(context.peer())
    skipped = peers.due(peer)
    if skipped is not None:
        log.warning(
            "undecodable request from %s to %s: not a valid %s (%d more since the last line; "
            "the next line about this peer in %g s at the earliest)",
            peer,
            method,
            request.message_type,
            skipped,
            peers.interval,
        )
    answers.abort(context, status.undecodable(request.message_type))


def streaming(
    handler: grpc.RpcMethodHandler[Any, Any], method: str, peers: PeerLog
) -> grpc.RpcMethodHandler[Any, Any]:
    """A streaming method's handler that refuses undecodable requests as unary methods do."""
    deserializer = tolerant(handler.request_deserializer)
    serializer = handler.response_serializer
    if handler.unary_stream is not None:
        unary_stream = handler.unary_stream

        def one_in(request: Any, context: grpc.ServicerContext, *callback: Any) -> Any:
            if isinstance(request, Undecodable):
                refuse(request, context, method, peers)
            return unary_stream(request, context, *callback)

        keep_threading(one_in, unary_stream)
        return grpc.unary_stream_rpc_method_handler(
            one_in, request_deserializer=deserializer, response_serializer=serializer
        )

    def checked(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        for request in requests:
            if isinstance(request, Undecodable):
                refuse(request, context, method, peers)
            yield request

    if handler.stream_stream is not None:
        stream_stream = handler.stream_stream

        def many_in_many_out(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            return stream_stream(checked(requests, context), context)

        return grpc.stream_stream_rpc_method_handler(
            many_in_many_out, request_deserializer=deserializer, response_serializer=serializer
        )
    if handler.stream_unary is not None:
        stream_unary = handler.stream_unary

        def many_in(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            return stream_unary(checked(requests, context), context)

        return grpc.stream_unary_rpc_method_handler(
            many_in, request_deserializer=deserializer, response_serializer=serializer
        )
    return handler


# What grpc reads from a method's behaviour to run it: a non-blocking one (health Watch) answers
# through a `send_response_callback` it is given and holds no thread while it waits.
THREADING_ATTRIBUTES = ("experimental_non_blocking", "experimental_thread_pool")


def keep_threading(wrapper: Callable[..., Any], behavior: Callable[..., Any]) -> None:
    """Gives `wrapper` the threading attributes of the `behavior` it calls: without them grpc
    would run a non-blocking method as a blocking one, holding an RPC worker per open Watch.
    The wrapper must pass the `send_response_callback` grpc gives it (a third argument) on."""
    for name in THREADING_ATTRIBUTES:
        if hasattr(behavior, name):
            setattr(wrapper, name, getattr(behavior, name))
