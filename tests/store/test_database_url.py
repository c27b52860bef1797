"""A PostgreSQL URL keeps every libpq parameter it names, and its password may stay out of it."""

from __future__ import annotations

import peewee as pw
import pytest

from server.certs import Authority
from server.store import open_database
from tests.pg import PASSWORD, PASSWORD_ROLE

pytestmark = pytest.mark.postgres

# Whether this connection is encrypted, as the server sees it.
TLS_IN_USE = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


def one(database: pw.Database, sql: str) -> str:
    """The one value `sql` selects, on a connection of `database`."""
    with database.connection_context():
        value = database.execute_sql(sql).fetchone()[0]
    database.close_all()
    return str(value)


def test_the_url_s_parameters_reach_the_connection(postgres_server):
    url = postgres_server.url("postgres") + "?application_name=aftersales-test&connect_timeout=3"

    assert one(open_database(url), "SELECT current_setting('application_name')") == (
        "aftersales-test"
    )


def test_a_tls_connection_the_url_asks_for_is_one(postgres_server):
    url = (
        postgres_server.url("postgres")
        + f"?sslmode=verify-full&sslrootcert={postgres_server.ca_file}"
    )

    assert one(open_database(url), TLS_IN_USE) == "True"


def test_a_server_certificate_from_another_ca_is_refused(postgres_server, tmp_path):
    stranger = tmp_path / "other-ca.pem"
    stranger.write_bytes(Authority("another CA").cert_pem)
    url = postgres_server.url("postgres") + f"?sslmode=verify-full&sslrootcert={stranger}"

    with pytest.raises(pw.OperationalError, match="certificate verify failed"):
        open_database(url).connect()


def test_a_password_given_apart_from_the_url_logs_in(postgres_server):
    url = f"postgresql://{PASSWORD_ROLE}@127.0.0.1:{postgres_server.port}/postgres"

    assert one(open_database(url, password=PASSWORD), "SELECT current_user") == PASSWORD_ROLE
    with pytest.raises(pw.OperationalError, match="password"):
        open_database(url).connect()


def test_a_password_in_the_url_wins_over_one_given_apart(postgres_server):
    secret = PASSWORD.replace(" ", "%20")
    url = f"postgresql://{PASSWORD_ROLE}:{secret}@127.0.0.1:{postgres_server.port}/postgres"

    database = open_database(url, password="wrong")

    assert one(database, "SELECT current_user") == PASSWORD_ROLE
