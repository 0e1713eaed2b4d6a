"""A bounded conversation load against the app on loopback (the correctness part of ``bench/load.py``).

Concurrent conversations, each: the chat page, a clip upload, the streamed explanation, two
follow-ups (with their explanations). No request may fail, and the server's memory must not keep
growing from one round to the next. The 50-conversation run with its numbers is ``python -m bench.load``.
"""

from __future__ import annotations

import dataclasses
import os

from bench.load import run_load
from bench.served import process_rss
from cadenza.settings import LimitSettings
from tests.helpers_app import clip_of_track, ingest_library, running_app
from tests.helpers_db import truncate_all

CONVERSATIONS = 6
ROUNDS = 2


def test_concurrent_conversations_all_succeed_with_stable_memory(session_db, settings, tmp_path):
    # One loopback address plays every listener: the per-client POST limit is off for this test.
    s = dataclasses.replace(settings, limits=LimitSettings(requests_per_minute=0))
    lib = ingest_library(session_db, tmp_path / "library", s)
    try:
        with running_app(s, db=lib.db, embedder=lib.embedder) as url:
            clips = [clip_of_track(i) for i in range(6)]
            result = run_load(
                base_url=url, clips=clips, conversations=CONVERSATIONS, rounds=ROUNDS,
                rss=process_rss(os.getpid()), timeout_s=120,
            )  # fmt: skip
        with lib.db.connection() as conn:  # every conversation was stored, each with its three answers
            n_conv, n_answers = conn.execute(
                "SELECT count(DISTINCT conversation_id), count(*) FILTER (WHERE role = 'assistant') FROM messages"
            ).fetchone()
    finally:
        truncate_all(session_db)
    assert result.errors == []
    assert len(result.post_ms) == len(result.stream_ms) == CONVERSATIONS * ROUNDS * 3
    # Memory after each round (decode children gone): a leak grows it round after round.
    first, second = result.round_end_mib
    assert second <= first * 1.25 + 64, (result.round_end_mib, result.round_peak_mib)
    assert (n_conv, n_answers) == (CONVERSATIONS * ROUNDS, CONVERSATIONS * ROUNDS * 3)
