"""The embedded PostgreSQL brought back by itself: is the postmaster alive, and if not, restart it.

A long-running process (the web server) calls ``Database.keep_alive()``, which starts a
:class:`Watchdog`; it restarts the embedded server when its postmaster is gone (killed, crashed,
stopped), with bounded retries and exponential backoff, every step logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from psycopg_pool import ConnectionPool

from cadenza.embedded_pg import EmbeddedServer, pid_alive, postmaster_pid

log = logging.getLogger(__name__)


class Healable(Protocol):
    """What the watchdog needs of :class:`cadenza.db.Database`: how often to try, and where to reconnect."""

    url: str
    pool: ConnectionPool
    restart_tries: int


#: How often the watchdog looks at the postmaster (a pid file read and a signal-0 probe).
WATCH_INTERVAL_S = 1.0
#: Backoff between restart tries of one outage: first wait, doubling up to the cap.
RESTART_FIRST_WAIT_S = 0.5
RESTART_MAX_WAIT_S = 8.0


def postmaster_alive(server: EmbeddedServer) -> bool:
    pid = postmaster_pid(Path(server.pgdata))
    return pid is not None and pid_alive(pid)


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

    def __init__(self, db: Healable, server: EmbeddedServer, interval_s: float = WATCH_INTERVAL_S) -> None:
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
