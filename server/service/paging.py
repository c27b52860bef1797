"""Pages of listings (AIP-158): opaque page tokens, signed so that a caller cannot make one up."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from server.domain.errors import InvalidArgument

T = TypeVar("T")

# What a page token holds: where the last page ended, e.g. (opened_at in µs, entry id).
Position = tuple[int | str, ...]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclasses.dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str = ""
    # The token of a page that would end after items[i] (see cut).
    token_after: Callable[[int], str] | None = dataclasses.field(default=None, compare=False)

    def cut(self, count: int) -> Page[T]:
        """This page with its first `count` items only, the next page starting after them."""
        if count >= len(self.items) or self.token_after is None:
            return self
        return Page(self.items[:count], self.token_after(count - 1), self.token_after)


class PageTokens:
    """Tokens bound to the listing's filters and signed with the key all replicas share."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def encode(self, position: Position, filters: str) -> str:
        payload = json.dumps([list(position), filters], separators=(",", ":")).encode()
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")

    def decode(self, token: str, filters: str, types: tuple[type, ...]) -> Position | None:
        """Where the previous page ended; None for the first page. A token this service did not
        make for the same filters is the caller's mistake (INVALID_ARGUMENT on page_token)."""
        if not token:
            return None
        position = self._verified(token, filters, types)
        if position is None:
            raise InvalidArgument(
                [("page_token", "is not a page token of this listing with these filters")]
            )
        return position

    def _verified(self, token: str, filters: str, types: tuple[type, ...]) -> Position | None:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            return None
        mac, payload = raw[:16], raw[16:]
        expected = hmac.new(self._key, payload, hashlib.sha256).digest()[:16]
        if len(mac) != 16 or not hmac.compare_digest(mac, expected):
            return None
        try:
            position, token_filters = json.loads(payload)
        except (ValueError, TypeError):
            return None
        if (
            token_filters != filters
            or not isinstance(position, list)
            or len(position) != len(types)
            or not all(type(v) is t for v, t in zip(position, types, strict=True))
        ):
            return None
        return tuple(position)

    def page(
        self, found: Sequence[T], limit: int, filters: str, position_of: Callable[[T], Position]
    ) -> Page[T]:
        """The first `limit` of `found` (which holds one more when another page follows)."""
        items = list(found[:limit])
        more = len(found) > limit

        def token_after(index: int) -> str:
            return self.encode(position_of(items[index]), filters)

        return Page(items, token_after(len(items) - 1) if more else "", token_after)


_MICROSECOND = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    """A moment as whole microseconds since the Unix epoch: how positions hold times."""
    return (moment - _EPOCH) // _MICROSECOND
