"""cadenza.db: the embedded PostgreSQL opens data folders made by the older pgserver wheel, and the
server brings it back by itself when it dies.

The old folder is built in the test by pgserver 0.1.4 itself (PostgreSQL 16.2, pgvector 0.6.2;
a test extra), in its own interpreter so its module state never meets the new server's.

The restart test kills the postmaster with SIGKILL under a running web app and waits, without
touching anything, until the app answers 200 again: 503 + Retry-After (JSON) meanwhile, a new
postmaster afterwards, the rows still there, the restart logged.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from cadenza.db import Database, open_database
from cadenza.embedded_pg import EMBEDDED_PG_MAJOR, embedded_major, postmaster_pid
from cadenza.errors import ConfigError
from cadenza.pg_watchdog import postmaster_alive, restart_embedded
from cadenza.settings import Settings
from tests.helpers_app import running_app
from tests.helpers_db import own_embedded_database

# Made by pgserver 0.1.4 with cadenza's migrations before 009, one track and 3 segments, then stopped.
_OLD_FOLDER = textwrap.dedent(
    """
    import shutil
    import sys
    import tempfile
    from pathlib import Path

    import pgserver
    import psycopg

    from cadenza.migrations import SQL_DIR, apply_migrations

    # A folder from before migration 009, whose halfvec column needs pgvector 0.7: the new server applies it.
    before_009 = Path(tempfile.mkdtemp())
    for p in SQL_DIR.glob("*.sql"):
        if int(p.name[:3]) < 9:
            shutil.copy(p, before_009)
    server = pgserver.get_server(Path(sys.argv[1]), cleanup_mode="stop")
    try:
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            apply_migrations(conn, before_009)
            tid = conn.execute(
                "INSERT INTO tracks (content_hash, path, title, composer, duration_s)"
                " VALUES ('h', '/x.wav', 'Old', 'Someone', 14) RETURNING id"
            ).fetchone()[0]
            for i in range(3):
                vec = "[" + ",".join(["0"] * i + ["1"] + ["0"] * (127 - i)) + "]"
                conn.execute(
                    "INSERT INTO segments (track_id, start_s, end_s, embedding, model_version, chroma_mean)"
                    " VALUES (%s, %s, %s, %s::vector, 'm', array_fill(1.0 / 12, ARRAY[12]))",
                    (tid, 2.0 * i, 2.0 * i + 10, vec),
                )
            print(conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0])
            print(conn.execute("SHOW server_version").fetchone()[0])
    finally:
        server.cleanup()
    """
)


def _old_home(tmp_path: Path) -> Path:
    pytest.importorskip("pgserver", reason="pgserver 0.1.4 (the test extra) makes the old folder")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "run-old")}
    Path(env["XDG_RUNTIME_DIR"]).mkdir(mode=0o700)
    out = subprocess.run(
        [sys.executable, "-c", _OLD_FOLDER, str(home / "pgdata")],
        capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["0.6.2", "16.2"], "the old wheel must make an old folder"
    return home


@pytest.mark.slow
def test_folder_from_old_pgserver_opens_updated_with_rows_and_index(tmp_path, caplog):
    home = _old_home(tmp_path)
    settings = Settings.from_env({"CADENZA_HOME": str(home)})
    with caplog.at_level(logging.WARNING, logger="cadenza.db"):
        db = open_database(settings)
    try:
        assert db.vector_version >= (0, 8), "the old extension is updated in place"
        assert db.supports_iterative_scan
        said = [r.getMessage() for r in caplog.records if "updated pgvector" in r.getMessage()]
        assert len(said) == 1 and "0.6.2" in said[0] and str(home / "pgdata") in said[0]
        with db.connection() as conn:
            assert conn.execute("SHOW server_version").fetchone()[0].startswith("16.")
            assert conn.execute("SELECT title FROM tracks").fetchall() == [("Old",)]
            # Migration 009 (halfvec) ran once the extension was updated; reindex fills its column.
            assert conn.execute("SELECT count(*) FROM segments WHERE harmony IS NULL").fetchone()[0] == 3
            # The HNSW index built by pgvector 0.6 serves an iterative, filtered scan under 0.8.
            conn.execute("SET hnsw.iterative_scan = relaxed_order")
            conn.execute("SET enable_seqscan = off")
            q = np.zeros(128, dtype=np.float32)
            q[1] = 1.0
            sql = "SELECT start_s FROM segments WHERE end_s > 11 ORDER BY embedding <=> %s LIMIT 2"
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, (q,)).fetchall())
            assert "segments_embedding_hnsw" in plan
            assert [r[0] for r in conn.execute(sql, (q,)).fetchall()][0] == 2.0
    finally:
        db.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cadenza.db"):
        again = open_database(settings)
    again.close()
    assert not [r for r in caplog.records if "updated pgvector" in r.getMessage()], (
        "said once, not every start"
    )


def test_new_folder_uses_the_default_major_and_an_unknown_one_is_one_clear_line(tmp_path):
    assert embedded_major(tmp_path / "absent") == EMBEDDED_PG_MAJOR
    odd = tmp_path / "pg12"
    odd.mkdir()
    (odd / "PG_VERSION").write_text("12\n")
    with pytest.raises(ConfigError, match="PostgreSQL 12.*CADENZA_DATABASE_URL"):
        embedded_major(odd)


# --- the embedded server brought back by itself --------------------------------------------------


class _FlakyServer:
    """Stands in for pgserver's handle in the backoff arithmetic only: fails ``failures`` times."""

    def __init__(self, failures: int) -> None:
        import threading

        self.pgdata = Path("/nonexistent/pgdata")
        self._lock = threading.Lock()
        self.failures = failures
        self.calls = 0

    def ensure_postgres_running(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("pre-existing shared memory block is still in use")


def _up(server: Any) -> bool:
    return True


def test_restart_retries_with_doubling_waits_and_gives_up_after_the_bound(caplog):
    waits: list[float] = []
    server = _FlakyServer(failures=2)
    with caplog.at_level(logging.WARNING, logger="cadenza.pg_watchdog"):
        assert restart_embedded(
            server, tries=5, first_wait_s=0.5, max_wait_s=8, sleep=waits.append, running=_up
        )
    assert server.calls == 3 and waits == [0.5, 1.0]
    assert "try 1 of 5" in caplog.text and "restarted the embedded PostgreSQL" in caplog.text

    waits.clear()
    caplog.clear()
    server = _FlakyServer(failures=99)
    with caplog.at_level(logging.WARNING, logger="cadenza.pg_watchdog"):
        assert not restart_embedded(
            server, tries=6, first_wait_s=1, max_wait_s=4, sleep=waits.append, running=_up
        )
    assert server.calls == 6 and waits == [1, 2, 4, 4, 4]
    assert "did not restart after 6 tries" in caplog.text


@pytest.fixture
def healing_pg(tmp_path) -> Iterator[tuple[Settings, Database]]:
    """A dedicated embedded PostgreSQL (not the session one) with restarts on."""
    with own_embedded_database(tmp_path / "home", restart_tries=8) as pg:
        yield pg


def _kill_postmaster(db: Database) -> int:
    pid = postmaster_pid(Path(db.server.pgdata))
    assert pid is not None and postmaster_alive(db.server)
    os.kill(pid, signal.SIGKILL)
    return pid


class _Lines(logging.Handler):
    """Collects one logger's messages (uvicorn's logging set-up leaves pytest's caplog blind here)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_killed_postmaster_is_restarted_by_the_server_itself(healing_pg):
    from assistant.app import load_embedder

    settings, db = healing_pg
    with db.connection() as conn:
        conn.execute("INSERT INTO conversations (id) VALUES (gen_random_uuid())")
        conn.commit()
    embedder: Any = load_embedder(settings)
    logged = _Lines()
    logging.getLogger("cadenza.pg_watchdog").addHandler(logged)
    with running_app(settings, db=db, embedder=embedder) as url:
        client = httpx.Client(base_url=url, timeout=20)
        assert client.get("/healthz").status_code == 200
        old = _kill_postmaster(db)
        seen: list[int] = []
        deadline = time.monotonic() + 90
        while True:
            r = client.get("/healthz")
            seen.append(r.status_code)
            if r.status_code == 503:
                assert (
                    r.headers["content-type"].startswith("application/json")
                    and int(r.headers["retry-after"]) > 0
                )
                assert "database" in r.json()["error"]
            elif r.status_code == 200 and 503 in seen:
                break
            assert r.status_code in (200, 503), r.text
            assert time.monotonic() < deadline, f"no recovery within 90 s: {seen[-10:]}"
            time.sleep(0.1)
        assert client.get("/library").status_code == 200
        client.close()
    new = postmaster_pid(Path(db.server.pgdata))
    assert new is not None and new != old and postmaster_alive(db.server)
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM conversations").fetchone()[0] == 1
    # pg_ctl may still be waiting for its own "ready" when the first request gets through.
    _wait = time.monotonic() + 30
    while not any("restarted the embedded" in line for line in logged.lines) and time.monotonic() < _wait:
        time.sleep(0.2)
    logging.getLogger("cadenza.pg_watchdog").removeHandler(logged)
    text = "\n".join(logged.lines)
    assert "is gone; restarting it" in text and "restarted the embedded PostgreSQL" in text, text
