"""The test databases: emptying the session one between tests, and dedicated ones for fault tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cadenza.db import Database, open_database
from cadenza.settings import LimitSettings, Settings


def public_tables(conn: Any) -> list[str]:
    """Every table of the schema, by name (the migration record included)."""
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
    return [r[0] for r in rows.fetchall()]


def truncate_all(db: Database) -> None:
    """Empty every table but the migration record (identities restart, so ids are predictable)."""
    with db.connection() as conn:
        tables = [t for t in public_tables(conn) if t != "schema_migrations"]
        if tables:
            conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
        conn.commit()


@contextmanager
def own_embedded_database(home: Path, *, restart_tries: int) -> Iterator[tuple[Settings, Database]]:
    """A dedicated embedded PostgreSQL in ``home`` (not the session one: a test may kill it), its
    server restarting it up to ``restart_tries`` times; the app's rate limit off."""
    settings = Settings.from_env(
        {
            "CADENZA_HOME": str(home),
            "CADENZA_DB_CONNECT_TIMEOUT": "2",
            "CADENZA_DB_RESTART_TRIES": str(restart_tries),
        }
    )
    settings = dataclasses.replace(settings, limits=LimitSettings(requests_per_minute=0))
    db = open_database(settings)
    try:
        yield settings, db
    finally:
        db.close()
