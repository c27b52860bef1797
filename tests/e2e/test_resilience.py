"""When the database goes away the service answers UNAVAILABLE (retryable), not INTERNAL, and it
recovers by itself once the database is back."""

import pytest

from aftersales.v1 import resources_pb2 as pb
from client import Client, Unavailable
from server import policy
from server.app import App
from server.clock import SystemClock
from server.service import Service
from server.store import Store, open_database
from tests.pg import PostgresServer

pytestmark = pytest.mark.postgres


def test_a_database_outage_is_unavailable_and_the_service_recovers_when_it_returns(tmp_path):
    database = PostgresServer().start()
    app = None
    try:
        store = Store(open_database(database.create_database("outage")))
        store.migrate()
        app = App(Service(store, SystemClock(), policy.load()), "127.0.0.1:0", workers=2).start()
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
            assert client.get_balances(owner_id="shop-outage") == {}
            assert client.put_shop(shop).shop_id == "shop-outage"
    finally:
        if app is not None:
            app.stop(grace=1)
        database.stop()
