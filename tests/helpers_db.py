"""Emptying the test database between tests and modules."""

from __future__ import annotations

from cadenza.db import Database


def truncate_all(db: Database) -> None:
    """Empty every table but the migration record (identities restart, so ids are predictable)."""
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
