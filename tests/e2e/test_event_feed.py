"""Many streams in one process, on SQLite and PostgreSQL: the events of a commit are read from
the database once for all of them (the feed), each stream still gets exactly its own, and a
stream served from memory still loses its caller's sight when the caller does."""

from __future__ import annotations

import json
import threading
import time

import grpc

from aftersales.v1 import events_pb2
from client import Client
from server.certs import DEV_AUDIENCE, DEV_ISSUER, TokenKey
from server.grpc import events as events_api
from server.grpc.app import App
from server.grpc.tokens import TokenSettings, TokenVerifier
from tests.e2e.seed import Seed, wallet

POSTS = 20
SHOPS = 4


class Follower(threading.Thread):
    """A consumer of WatchEvents: what it received, and how its stream ended."""

    def __init__(self, client: Client, after: int, shop_id: str = "") -> None:
        super().__init__(daemon=True)
        self.stream = client.events.WatchEvents(
            events_pb2.WatchEventsRequest(after_position=after, shop_id=shop_id)
        )
        self.events: list[events_pb2.Event] = []
        self.ended: grpc.RpcError | None = None

    def run(self) -> None:
        try:
            for item in self.stream:
                if item.HasField("event"):
                    self.events.append(item.event)
        except grpc.RpcError as e:
            self.ended = e


def eventually(check, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s"
        time.sleep(0.01)


def test_the_streams_of_a_process_read_each_commit_once_for_all_of_them(service, seed):
    app = App(service, "127.0.0.1:0", workers=2, max_streams=8, sweep_interval=None).start()
    # Only this process's commits wake the feed: the reads counted are the commits' own.
    app.events.feed.poll = 3600
    reads = []
    read_events = service.read_events

    def counted(**request):
        reads.append(request)
        return read_events(**request)

    try:
        with Client(f"127.0.0.1:{app.port}") as client:
            shops = [seed.shop(f"shop-feed-{i}") for i in range(SHOPS)]
            top = client.list_events(0, page_size=1).next_after_position
            while not (page := client.list_events(top, page_size=500)).caught_up:
                top = page.next_after_position
            top = page.next_after_position
            service.read_events = counted
            everyone = [Follower(client, top) for _ in range(SHOPS)]
            each = [Follower(client, top, shop) for shop in shops]
            for follower in everyone + each:
                follower.start()
            eventually(lambda: app.events.slots.busy() == 2 * SHOPS)

            for i in range(POSTS):
                seed.funds(wallet(shops[i % SHOPS]), 1 + i)
                # One commit at a time: each is read on its own.
                eventually(lambda n=i + 1: all(len(f.events) == n for f in everyone))
            eventually(lambda: all(len(f.events) == POSTS // SHOPS for f in each))
            time.sleep(0.2)  # nothing more arrives

            posted = [(e.shop_id, e.funds_posted.amount) for e in everyone[0].events]
            assert posted == [(shops[i % SHOPS], 1 + i) for i in range(POSTS)]
            for follower in everyone:
                assert follower.events == everyone[0].events
            for shop, follower in zip(shops, each, strict=True):
                assert follower.events == [e for e in everyone[0].events if e.shop_id == shop]
            # Each stream's first read, the feed's as each stream came (at most), then one per
            # commit: not one per commit and stream (8 × 20 here).
            assert len(reads) <= 2 * len(everyone + each) + POSTS, len(reads)
            for follower in everyone + each:
                follower.stream.cancel()
    finally:
        service.read_events = read_events
        app.stop(grace=1)


def test_a_stream_served_from_memory_ends_when_its_staff_member_leaves_the_shop(
    service, clock, tmp_path, monkeypatch
):
    monkeypatch.setattr(events_api, "ACCESS_CHECK_SECONDS", 0.2)
    login = TokenKey()
    (tmp_path / "jwks.json").write_text(json.dumps(login.jwks()), encoding="utf-8")
    tokens = TokenVerifier(TokenSettings(tmp_path / "jwks.json", DEV_ISSUER, DEV_AUDIENCE))
    app = App(service, "127.0.0.1:0", workers=2, tokens=tokens, sweep_interval=None).start()
    address = f"127.0.0.1:{app.port}"
    try:
        with Client(address) as feeder:
            seed = Seed(feeder, clock)
            case = seed.case("feed-leaves")
            with Client(address, token=login.mint(case.owner_id, "staff")) as owner:
                follower = Follower(owner, 0)
                follower.start()
                seed.funds(wallet(case.shop_id), 7)
                eventually(lambda: follower.events and follower.events[-1].funds_posted.amount == 7)
                served = app.events.feed.since(
                    follower.events[-1].position, events_api.Interest(case.shop_id, frozenset()), 1
                )
                assert served is not None  # the stream is within what the feed holds

                seed.staff(case.owner_id, seed.shop("shop-feed-elsewhere"))
                time.sleep(0.3)  # past the access check's interval
                seed.funds(wallet(case.shop_id), 8)
                eventually(lambda: follower.ended is not None, seconds=5)
                assert follower.ended.code() is grpc.StatusCode.NOT_FOUND
                assert [e.funds_posted.amount for e in follower.events][-1] == 7
    finally:
        app.stop(grace=1)
