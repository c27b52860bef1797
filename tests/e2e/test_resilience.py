"""When the database goes away the service answers UNAVAILABLE (retryable), not INTERNAL, and it
recovers by itself once the database is back."""

import pytest

from aftersales.v1 import resources_pb2 as pb
from client import Client, Unavailable
from server import settings
from server.grpc.app import App
from server.service import Service
from server.service.clock import SystemClock
from server.store import SqlStore, open_database
from tests.pg import PostgresServer

pytestmark = pytest.mark.postgres


def test_a_database_outage_is_unavailable_and_the_service_recovers_when_it_returns(tmp_path):
    database = PostgresServer().start()
    app = None
    try:
        store = SqlStore(open_database(database.create_database("outage")))
        store.migrate()
        app = App(
            Service(store, SystemClock(), settings.load_policy()), "127.0.0.1:0", workers=2
        ).start()
        with Client(f"127.0.0.1:{app.port}", timeout=5) as client:
            shop = pb.Shop(shop_id="shop-outage", status=pb.SHOP_STATUS_NORMAL)
            assert client.put_shop(shop).shop_id == "shop-outage"

            database.stop_server()
            with pytest.raises(Unavailable):
                client.put_shop(shop)

            database.start_server()
            for _ in range(3):  # connections broken by the outage are dropped as they are met
                try:
                    client.put_shop(shop)
                    break
                except Unavailable:
                    continue
            assert client.get_balances(owner_id="shop-outage") == {
                (pb.ACCOUNT_KIND_ANXIN_WALLET, "shop-outage"): 0,
                (pb.ACCOUNT_KIND_DEPOSIT, "shop-outage"): 0,
            }
            assert client.put_shop(shop).shop_id == "shop-outage"
    finally:
        if app is not None:
            app.stop(grace=1)
        database.stop()
