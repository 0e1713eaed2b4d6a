"""Pool exhaustion, the failure the load benchmark found, reproduced small: a connection pool of 2
and a burst of concurrent chat turns and page loads against the real server and real PostgreSQL.

A search holds its pooled connection for its whole run (query features and embedding included).
Uncapped, a burst of searches took every connection and the short queries (pages, saving turns, the
searches queued behind them) timed out in the pool: 503s. The cap (``assistant.services.Services``:
pool size less two, at least one) makes searches wait in line instead, so every request is served.
What the product promises, asserted here: under a burst every request gets its answer (no 5xx);
only a wait for a search slot longer than ``SEARCH_WAIT_S`` gets a clear 503 with ``Retry-After``.

The embedder is the real one, slowed by a fixed delay per query embedding: what a loaded CPU does to
a search, made repeatable, so the uncapped server fails every time (checked by removing the cap).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from psycopg_pool import ConnectionPool

from assistant import services
from cadenza.db import Database, _configure
from cadenza.settings import LimitSettings, Settings
from tests.helpers_app import clip_of_track, running_app

POOL_SIZE = 2
POOL_WAIT_S = 2.0  # how long a request waits for a pooled connection before the 503
SEARCH_DELAY_S = 0.6  # extra seconds per query embedding (a busy CPU)
FOLLOW_UPS = (
    "only Baroque", "something calmer", "same mood but slower", "faster", "with more harmony", "something happier",
)  # fmt: skip


class SlowEmbedder:
    """The real embedder; each query embedding first waits ``delay`` seconds."""

    def __init__(self, inner: Any, delay: float = 0.0) -> None:
        self._inner = inner
        self.delay = delay

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def embed_track(self, **kw: Any) -> Any:
        time.sleep(self.delay)
        return self._inner.embed_track(**kw)

    def embed_windows(self, **kw: Any) -> Any:
        time.sleep(self.delay)
        return self._inner.embed_windows(**kw)


def tiny_settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings,
        database=dataclasses.replace(
            settings.database, pool_min=POOL_SIZE, pool_max=POOL_SIZE, connect_timeout_s=POOL_WAIT_S
        ),
        limits=LimitSettings(requests_per_minute=0),
    )


@pytest.fixture(scope="module")
def tiny(library, settings) -> Iterator[tuple[str, Database, SlowEmbedder]]:
    """The app on its own pool of 2 connections over the session database; yields (url, db, embedder)."""
    app_settings = tiny_settings(settings)
    pool = ConnectionPool(
        library.db.url, min_size=POOL_SIZE, max_size=POOL_SIZE, configure=_configure,
        check=ConnectionPool.check_connection, timeout=POOL_WAIT_S, open=True,
    )  # fmt: skip
    db = Database(url=library.db.url, pool=pool, vector_version=library.db.vector_version)
    slow = SlowEmbedder(library.embedder)
    try:
        with running_app(app_settings, db=db, embedder=slow) as url:
            yield url, db, slow
    finally:
        pool.close()


def _conversation(url: str, track: int) -> str:
    r = httpx.post(
        f"{url}/api/chat", files={"file": ("q.wav", clip_of_track(track), "audio/wav")}, data={"k": "3"},
        timeout=120,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    return str(r.json()["conversation_id"])


def _answers(db: Database, cid: str) -> int:
    with db.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM messages m JOIN queries q ON q.message_id = m.id WHERE m.conversation_id = %s",
            (cid,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_cap_leaves_the_pool_to_short_queries(tiny, settings):
    url, db, slow = tiny
    assert services.search_slot_count(tiny_settings(settings)) == 1  # a pool of 2 leaves one search slot
    cid = _conversation(url, 1)
    slow.delay = SEARCH_DELAY_S
    n_chats = 12
    try:
        with httpx.Client(base_url=url, timeout=120) as c, ThreadPoolExecutor(24) as ex:
            chats = [
                ex.submit(c.post, "/api/chat", json={"conversation_id": cid, "message": FOLLOW_UPS[i % 6]})
                for i in range(n_chats)
            ]
            time.sleep(0.2)  # the searches are in flight: now the short queries arrive
            pages = [ex.submit(c.get, f"/c/{cid}") for _ in range(6)]
            pages += [ex.submit(c.get, "/library") for _ in range(3)]
            pages += [ex.submit(c.get, "/healthz") for _ in range(3)]
            chat_answers = [f.result() for f in chats]
            page_answers = [f.result() for f in pages]
    finally:
        slow.delay = 0.0
    failed = [(r.status_code, r.text[:200]) for r in chat_answers + page_answers if r.status_code != 200]
    assert not failed, (
        f"{len(failed)} of {len(chat_answers) + len(page_answers)} requests failed: {failed[:3]}"
    )
    assert all(r.json()["response"]["results"] for r in chat_answers)
    assert _answers(db, cid) == 1 + n_chats  # every turn was saved


def test_a_search_that_waits_too_long_for_a_slot_is_a_clear_503_with_retry_after(tiny, monkeypatch):
    url, db, slow = tiny
    cid = _conversation(url, 4)
    monkeypatch.setattr(services, "SEARCH_WAIT_S", 0.2)
    slow.delay = 1.5  # one search holds the only slot far longer than the others may wait
    try:
        with httpx.Client(base_url=url, timeout=120) as c, ThreadPoolExecutor(4) as ex:
            answers = list(
                ex.map(
                    lambda m: c.post("/api/chat", json={"conversation_id": cid, "message": m}), FOLLOW_UPS[:4]
                )
            )
            page = c.get(f"/c/{cid}")
    finally:
        slow.delay = 0.0
    statuses = sorted(r.status_code for r in answers)
    assert set(statuses) == {200, 503}, [(r.status_code, r.text[:200]) for r in answers]
    for r in answers:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "5"
            assert r.json()["error"].startswith("the server is busy with other searches"), r.text
    assert page.status_code == 200
    # The busy turns left nothing behind: only the first clip's answer and the served follow-ups.
    assert _answers(db, cid) == 1 + statuses.count(200)
