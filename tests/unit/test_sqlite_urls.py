"""What a SQLite database URL names: a file, or a database in memory, and nothing it cannot say."""

from __future__ import annotations

import pytest

from server.store import open_database
from server.store.database import in_memory, sqlite_path


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/aftersales.db", "var/aftersales.db"),
        ("sqlite:////srv/aftersales.db", "/srv/aftersales.db"),
        ("sqlite:///var/a file%20with 100%.db", "var/a file%20with 100%.db"),
    ],
)
def test_a_sqlite_url_names_a_file(url, path):
    assert sqlite_path(url) == path
    assert not in_memory(sqlite_path(url))


def test_a_sqlite_url_names_a_database_in_memory_by_saying_so():
    assert in_memory(sqlite_path("sqlite:///:memory:"))


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite:///?",
        "sqlite:///var/aftersales.db?mode=ro",
        "sqlite:///var/aftersales.db?",
        "sqlite:///var/aftersales.db#main",
        "sqlite://host/var/aftersales.db",
        "sqlite:///file::memory:",
        "sqlite:///file:aftersales.db",
        "sqlite:////",
        "sqlite:///var/",
        "sqlite:///.",
        "sqlite:///var/..",
        "sqlite:x.db",
        "sqlite:/x.db",
        "sqlite::memory:",
    ],
)
def test_a_sqlite_url_that_cannot_say_what_it_seems_to_is_refused(url):
    with pytest.raises(ValueError, match="sqlite:///"):
        sqlite_path(url)
    with pytest.raises(ValueError, match="sqlite:///"):
        open_database(url)
