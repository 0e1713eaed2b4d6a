"""Shared fixtures: a real PostgreSQL + pgvector for the whole session.

The session starts one embedded PostgreSQL in a temporary ``CADENZA_HOME`` (or uses
``CADENZA_TEST_DATABASE_URL``), applies the migrations once, and every test that asks for
``db`` gets it with empty tables afterwards (TRUNCATE … RESTART IDENTITY), so tests see
only their own rows.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from cadenza.db import Database, open_database
from cadenza.settings import Settings


def pytest_configure(config: pytest.Config) -> None:
    # As root, pgserver runs PostgreSQL as its own user and opens the folders above its data
    # for it; but every new pytest run resets the shared /tmp/pytest-of-root to mode 0700,
    # locking the server of any other run on the machine out of its data. A base folder of
    # our own per run keeps concurrent runs apart.
    if config.option.basetemp is None and hasattr(os, "geteuid") and os.geteuid() == 0:
        config.option.basetemp = tempfile.mkdtemp(prefix="cadenza-pytest-")
        config.stash[_OWN_BASETEMP] = config.option.basetemp


def pytest_unconfigure(config: pytest.Config) -> None:
    own = config.stash.get(_OWN_BASETEMP, None)
    if own:
        shutil.rmtree(own, ignore_errors=True)


_OWN_BASETEMP = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def cadenza_home(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("cadenza-home")


@pytest.fixture(scope="session")
def settings(cadenza_home) -> Settings:
    env = {
        "CADENZA_HOME": str(cadenza_home),
        "CADENZA_DATABASE_URL": os.environ.get("CADENZA_TEST_DATABASE_URL", ""),
    }
    return Settings.from_env(env)


@pytest.fixture(scope="session")
def session_db(settings: Settings) -> Iterator[Database]:
    db = open_database(settings)
    try:
        yield db
    finally:
        db.close()


def truncate_all(db: Database) -> None:
    with db.connection() as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
            ).fetchall()
        ]
        if tables:
            conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
        conn.commit()


@pytest.fixture
def db(session_db: Database) -> Iterator[Database]:
    truncate_all(session_db)
    yield session_db
    truncate_all(session_db)
