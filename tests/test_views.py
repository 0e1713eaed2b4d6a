"""Turn contexts rendered by the real templates: a removed track says so instead of a dead player."""

from __future__ import annotations

import jinja2

from assistant import conversations, views
from cadenza.settings import PROJECT_ROOT


def _add_track(db, title: str) -> int:
    with db.connection() as conn:
        tid = conn.execute(
            "INSERT INTO tracks (content_hash, path, title, composer, era, duration_s)"
            " VALUES (%s, '/x.wav', %s, 'Bach', 'Baroque', 60) RETURNING id",
            (title, title),
        ).fetchone()[0]
        conn.commit()
    return int(tid)


def _result(rank: int, track_id: int) -> dict:
    return {
        "rank": rank, "segment_id": rank, "track_id": track_id, "title": f"Piece {rank}", "composer": "Bach",
        "work": "", "era": "Baroque", "path": "/x", "start": 10.0, "end": 20.0, "score": 0.5, "confidence": 0.2,
        "components": {"embedding": 0.7}, "descriptors": {}, "key_shift": 0, "reason": "",
    }  # fmt: skip


def render_turn(ctx: dict) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(PROJECT_ROOT / "templates"), autoescape=True)
    return env.get_template("_turn.html").render(t=ctx, csrf_input="")


def test_a_removed_track_says_removed_from_the_library_and_offers_no_player(db):
    kept, gone = _add_track(db, "kept"), _add_track(db, "gone")
    cid = conversations.create(db)
    response = {"query": {"start": 0.0, "end": 10.0}, "results": [_result(1, kept), _result(2, gone)]}
    turn = conversations.add_search_turn(db, cid, request={}, response=response, followup=None, meta={})
    with db.connection() as conn:
        conn.execute("DELETE FROM tracks WHERE id = %s", (gone,))
        conn.commit()
    ctx = views.turn_context(db, cid, conversations.turn(db, cid, turn.id))
    assert [c["removed"] for c in ctx["cards"]] == [False, True]
    html = render_turn(ctx)
    kept_html, gone_html = html.split('data-rank="2"')
    assert (
        "removed from the library" in gone_html and "<audio" not in gone_html and "/audio/" not in gone_html
    )
    assert "removed from the library" not in kept_html and f'src="/audio/{kept}"' in kept_html
    assert "cadenza " not in html  # no command-line advice inside the web chat


def test_the_melody_route_says_it_searched_by_melody_and_in_which_key():
    q = {"route": "melody", "melody_key_shift": 3, "sung_key": "B", "matched_key": "D"}
    note = views.melody_note(q)
    assert note.startswith("Searched by melody")
    assert "3 semitones lower than the recording: you sang in B, the passage is in D" in note
    assert "recording's key (D)" in views.melody_note({**q, "melody_key_shift": 0})
    assert "1 semitone higher" in views.melody_note({**q, "melody_key_shift": -1})
    assert views.melody_note({"route": "audio"}) == ""
