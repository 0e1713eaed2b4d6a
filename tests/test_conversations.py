"""Conversations in real PostgreSQL: a round trip that survives a new connection pool (a restart)."""

from __future__ import annotations

import dataclasses
import uuid

import numpy as np
import pytest

from assistant import conversations
from assistant.followups import FollowUp, parse_rules, request_from_json, request_to_json
from cadenza.db import open_database
from cadenza.errors import NotFound
from retrieval.types import Filters, MomentRef, SearchRequest


def _tracks(db, n: int) -> list[int]:
    ids = []
    with db.connection() as conn:
        for i in range(n):
            ids.append(
                conn.execute(
                    "INSERT INTO tracks (content_hash, path, title, composer, era, duration_s)"
                    " VALUES (%s, %s, %s, %s, %s, 60) RETURNING id",
                    (f"h{i}", f"/x/{i}.wav", f"Piece {i}", ["Bach", "Mozart", "Brahms"][i % 3], "Baroque"),
                ).fetchone()[0]
            )
        conn.commit()
    return ids


def _response(track_ids: list[int]) -> dict:
    return {
        "query": {"start": 3.0, "end": 13.0, "key_index": 0, "mode": "major", "tempo_bpm": 90.0},
        "nothing_similar": False,
        "results": [
            {"rank": r, "segment_id": r, "track_id": t, "title": f"Piece {r}", "composer": "Bach", "work": "",
             "era": "Baroque", "path": "/x", "start": 10.0 * r, "end": 10.0 * r + 10, "score": 0.5,
             "match": 0.5, "likeness": 80.0, "components": {"embedding": 0.6}, "descriptors": {}, "key_shift": 0, "reason": ""}
            for r, t in enumerate(track_ids, start=1)
        ],
        "timings_ms": {},
    }  # fmt: skip


def test_conversation_round_trip_survives_a_new_pool(db, settings):
    tids = _tracks(db, 3)
    cid = conversations.create(db, listener_id="listener-1")
    uid = conversations.add_user_message(db, cid, "find moments like 0:30 of Piece 0")
    req = SearchRequest(moments=(MomentRef(tids[0], 30.0),), k=3, filters=Filters(exclude_tracks=(tids[0],)))
    fu = parse_rules("only Baroque")
    turn = conversations.add_search_turn(
        db,
        cid,
        request=request_to_json(req),
        response=_response(tids),
        followup=fu.to_json(),
        meta={"parser": "rules"},
    )
    assert not turn.explained and turn.result_set_id is not None
    conversations.save_explanation(
        db,
        turn.id,
        markdown="Close in harmony [1] and [3].",
        meta={"used_llm": False, "flags": []},
        cited=[1, 3],
    )

    # A new pool on the same database: what a restarted server sees.
    fresh_settings = dataclasses.replace(
        settings, database=dataclasses.replace(settings.database, url=db.url)
    )
    db2 = open_database(fresh_settings, migrate=False)
    try:
        turns = conversations.turns(db2, cid)
        assert [t.role for t in turns] == ["user", "assistant"]
        assert turns[0].id == uid and turns[0].content.startswith("find moments")
        answer = turns[1]
        assert answer.explained and answer.content == "Close in harmony [1] and [3]."
        assert answer.meta["parser"] == "rules" and answer.meta["used_llm"] is False
        assert answer.citations == [1, 3]
        assert answer.response == _response(tids)
        assert FollowUp.from_json(answer.followup) == fu
        assert request_from_json(answer.request) == req
        last = conversations.last_search(db2, cid)
        assert last is not None and last.id == answer.id
        assert conversations.title(db2, cid).startswith("find moments")
        with db2.connection() as conn:
            rows = conn.execute(
                "SELECT rank, track_id, start_s, end_s FROM citations WHERE message_id = %s ORDER BY rank",
                (answer.id,),
            ).fetchall()
        assert rows == [(1, tids[0], 10.0, 20.0), (3, tids[2], 30.0, 40.0)]
    finally:
        db2.close()


def test_explanation_can_be_saved_again_without_duplicate_citations(db):
    tids = _tracks(db, 2)
    cid = conversations.create(db)
    turn = conversations.add_search_turn(db, cid, request={"k": 2}, response=_response(tids))
    conversations.save_explanation(db, turn.id, markdown="[1]", meta={}, cited=[1])
    conversations.save_explanation(
        db, turn.id, markdown="[1] [2]", meta={}, cited=[1, 2, 7]
    )  # 7: not a result
    assert conversations.turn(db, cid, turn.id).citations == [1, 2]


def test_deleting_a_track_keeps_the_conversation(db):
    tids = _tracks(db, 2)
    cid = conversations.create(db)
    turn = conversations.add_search_turn(db, cid, request={"k": 2}, response=_response(tids))
    conversations.save_explanation(db, turn.id, markdown="[1] [2]", meta={}, cited=[1, 2])
    with db.connection() as conn:
        conn.execute("DELETE FROM tracks WHERE id = %s", (tids[0],))
        conn.commit()
    assert conversations.turn(db, cid, turn.id).citations == [2]


def test_unknown_conversation_is_not_found(db):
    with pytest.raises(NotFound):
        conversations.turns(db, uuid.uuid4())
    with pytest.raises(NotFound):
        conversations.parse_id("not-a-uuid")


def test_stored_passages_round_trip(settings):
    from assistant.services import load_passage, store_passage

    y = np.linspace(-1, 1, 16_000, dtype=np.float32)
    name = store_passage(settings, y)
    assert store_passage(settings, y) == name  # content-addressed
    assert np.array_equal(load_passage(settings, name), y)
    with pytest.raises(NotFound):
        load_passage(settings, "../../etc/passwd")
