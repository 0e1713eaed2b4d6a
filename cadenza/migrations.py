"""Migrations: the numbered ``sql/NNN_name.sql`` files, applied in order, each once."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import psycopg

from cadenza.errors import ConfigError
from cadenza.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

SQL_DIR = PROJECT_ROOT / "sql"
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Arbitrary constant: serializes concurrent `db upgrade` runs against one database.
_MIGRATION_LOCK = 0xCADE


def migration_files(sql_dir: Path = SQL_DIR) -> list[tuple[int, Path]]:
    files = []
    for path in sorted(sql_dir.glob("*.sql")):
        m = _MIGRATION_NAME.match(path.name)
        if not m:
            raise ConfigError(f"{path} is not named NNN_name.sql; rename it")
        files.append((int(m.group(1)), path))
    versions = [v for v, _ in files]
    if len(set(versions)) != len(versions):
        raise ConfigError(f"two migrations in {sql_dir} share a number; renumber them")
    return files


def apply_migrations(conn: psycopg.Connection, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply pending ``sql/NNN_*.sql`` files in order, each in its own transaction.

    Returns the names applied (empty when already up to date: idempotent).
    """
    applied: list[str] = []
    # The lock first: two servers starting together would otherwise race on creating the table
    # itself (concurrent CREATE TABLE IF NOT EXISTS can fail on pg_type's unique index).
    conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations").fetchall()}
        for version, path in migration_files(sql_dir):
            if version in done:
                continue
            with conn.transaction():
                conn.execute(path.read_text())  # type: ignore[call-overload]
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, path.name)
                )
            log.info("applied migration %s", path.name)
            applied.append(path.name)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied
