"""``cadenza db upgrade`` and ``cadenza db status``."""

from __future__ import annotations

import argparse
import json

from cadenza.db import _connect, redact, resolve_url, vector_extension_version
from cadenza.migrations import apply_migrations
from cadenza.settings import Settings


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["upgrade", "status"], help="upgrade: apply pending migrations")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(name: str, args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    url, server = resolve_url(settings)
    try:
        with _connect(url, settings.database.connect_timeout_s) as conn:
            version = vector_extension_version(conn)
            applied = apply_migrations(conn) if args.action == "upgrade" else []
            rows = (
                conn.execute(
                    "SELECT version, name, applied_at::text FROM schema_migrations ORDER BY version"
                ).fetchall()
                if _has_table(conn)
                else []
            )
    finally:
        if server is not None:
            server.cleanup()
    migrations = [{"version": v, "name": n, "applied_at": a} for v, n, a in rows]
    info: dict[str, object] = {
        "database": redact(url),
        "embedded": server is not None,
        "pgvector": ".".join(map(str, version)),
        "applied_now": applied,
        "migrations": migrations,
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"database  {info['database']}{' (embedded)' if server is not None else ''}")
        print(f"pgvector  {info['pgvector']}")
        if args.action == "upgrade":
            print("applied   " + (", ".join(applied) if applied else "nothing (up to date)"))
        for m in migrations:
            print(f"  {m['version']:03d} {m['name']}  {m['applied_at']}")
    return 0


def _has_table(conn) -> bool:
    return conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
