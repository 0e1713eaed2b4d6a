"""The query state: pure round trips and chips, then over real HTTP against real PostgreSQL and the real
search — /api/chat returns the state and accepts it back edited, follow-ups replace rather than pile up
(and say so), a message that is not understood runs no search, and every entry point takes era and key."""

from __future__ import annotations

import dataclasses

import pytest

from assistant.followups import PreviousSearch, apply_followup, parse_rules
from assistant.querystate import (
    QueryState,
    apply_state,
    changes,
    chips,
    contradiction,
    state_from_json,
    state_of,
    without_chip,
)
from cadenza.errors import InputError
from retrieval.types import Filters, MomentRef, SearchRequest
from tests.helpers_app import Library, chat, clip_of_track

BASE = SearchRequest(moments=(MomentRef(3, 12.0),), k=5)


def test_state_round_trips_through_json():
    req = dataclasses.replace(
        BASE,
        filters=Filters(
            composers=("Johann Sebastian Bach",), key="D", mode="major", min_bpm=60.0, max_bpm=90.0
        ),
        minus=(MomentRef(4, 1.0),),
        diversity=0.6,
    )
    state = state_of(req)
    again = state_from_json(
        state.to_json()
        | {
            "seeds": [{"track_id": 3, "start": 12.0}],
            "away": [{"track_id": 4, "start": 1.0}],
            "mood_target": None,
        }
    )
    assert again == state
    assert apply_state(again, BASE) == req


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ({"k": True}, "state.k"),
        ({"key": "H"}, "state.key"),
        ({"min_bpm": "fast"}, "state.min_bpm"),
        ({"seeds": [{"track_id": 1.5}]}, "track_id"),
        ({"colour": 1}, "unknown state field"),
        ([], "must be an object"),
    ],
)
def test_a_bad_state_is_refused_naming_the_field(bad, fragment):
    with pytest.raises(InputError, match=fragment):
        state_from_json(bad)


def test_only_then_no_replaces_and_says_so():
    composers = ["Johann Sebastian Bach", "Wolfgang Amadeus Mozart"]
    prev = PreviousSearch(request=BASE, results=({"rank": 1, "track_id": 3, "start": 0.0},))
    only = apply_followup(parse_rules("only Bach", composers=composers), prev)
    no = apply_followup(
        parse_rules("no Bach", composers=composers), PreviousSearch(request=only, results=prev.results)
    )
    assert only.filters.composers == ("Johann Sebastian Bach",)
    assert no.filters.composers == () and no.filters.exclude_composers == ("Johann Sebastian Bach",)
    assert contradiction(no.filters) is None
    assert changes(only, no) == [
        "Replaced the composer filter (only Johann Sebastian Bach) with not Johann Sebastian Bach."
    ]


def test_contradictions_have_a_reason():
    f = Filters(composers=("Bach",), exclude_composers=("Bach",))
    assert contradiction(f) == "no track is by Bach and not by Bach"
    assert "no tempo" in (contradiction(Filters(min_bpm=120, max_bpm=90)) or "")


def test_every_chip_can_be_removed():
    req = dataclasses.replace(
        BASE,
        filters=Filters(
            eras=("Baroque",), exclude_composers=("Mozart",), key="D", mode="major", max_bpm=100.0
        ),
        minus=(MomentRef(4, 1.0),),
        k=3,
        diversity=0.7,  # not the default (retrieval.types.DEFAULT_DIVERSITY)
    )
    state = state_of(req)
    ids = [c.id for c in chips(state)]
    assert ids == [
        "seed:0",
        "away:0",
        "exclude_composer:Mozart",
        "era:Baroque",
        "key",
        "tempo",
        "diversity",
        "k",
    ]
    for chip in ids:
        smaller = without_chip(state, chip)
        assert chip not in [c.id for c in chips(smaller)]
        assert len(chips(smaller)) == len(ids) - 1
    with pytest.raises(InputError):
        without_chip(state, "era:Romantic" if False else "nonsense")
    assert QueryState().k == 10


# --- over HTTP ------------------------------------------------------------------------------------------


def searches(library: Library, cid: str) -> int:
    with library.db.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM messages m JOIN queries q ON q.message_id = m.id WHERE m.conversation_id = %s",
            (cid,),
        ).fetchone()
    return int(row[0])


def test_not_understood_runs_no_search_and_says_what_can_be_asked(client, library):
    first = chat(client, message="find moments like 0:12 of Study 4", k=3)
    cid = first["conversation_id"]
    assert first["state"]["seeds"] == [{"track_id": library.ids["Study 4"], "start": 12.0}]
    body = chat(client, conversation_id=cid, message="asdf qwerty")
    assert (
        body["refused"] is True
        and "did not understand" in body["reply"]
        and "between 60 and 90 bpm" in body["reply"]
    )
    assert searches(library, cid) == 1
    assert body["state"] == first["state"]


def test_only_then_no_composer_replaces_over_http(client, library):
    cid = chat(client, message="find moments like 0:12 of Study 4", k=3)["conversation_id"]
    only = chat(client, conversation_id=cid, message="only Bach")
    assert {r["composer"] for r in only["response"]["results"]} == {"Johann Sebastian Bach"}
    no = chat(client, conversation_id=cid, message="no Bach")
    assert no["response"]["results"] and "Johann Sebastian Bach" not in {
        r["composer"] for r in no["response"]["results"]
    }
    assert no["state"]["composers"] == [] and no["state"]["exclude_composers"] == ["Johann Sebastian Bach"]
    assert no["state_notes"] and "Replaced the composer filter" in no["state_notes"][0]


def test_state_is_accepted_back_edited(client, library):
    first = chat(client, message="find moments like 0:12 of Study 4", k=3)
    state = dict(first["state"], eras=["Classical"], k=2)
    body = chat(client, conversation_id=first["conversation_id"], state=state)
    assert body["state"]["eras"] == ["Classical"] and body["state"]["k"] == 2
    assert [r["era"] for r in body["response"]["results"]] == ["Classical", "Classical"]
    contradicting = dict(first["state"], composers=["Johannes Brahms"], exclude_composers=["Johannes Brahms"])
    body = chat(client, conversation_id=first["conversation_id"], state=contradicting)
    assert body["response"]["results"] == []
    assert body["filter_reason"] == "no track is by Johannes Brahms and not by Johannes Brahms"
    r = client.post("/api/chat", json={"state": first["state"]})
    assert r.status_code == 400 and "conversation_id" in r.json()["error"]


def test_few_matches_say_all_are_shown(client, library):
    body = chat(client, message="find moments like 0:12 of Study 4", k=5)
    narrowed = chat(client, conversation_id=body["conversation_id"], message="only Romantic")
    # Study 4 (the query's own track, Romantic) is left out: one Romantic track remains.
    assert len(narrowed["response"]["results"]) == 1
    assert narrowed["filter_reason"] == "only 1 track matches the filters (only Romantic); all shown"


def test_several_named_moments_in_one_message(client, library):
    body = chat(client, message="find moments like 0:12 of Study 4 and 0:05 of Study 0", k=3)
    assert [m["track_id"] for m in body["request"]["moments"]] == [
        library.ids["Study 4"],
        library.ids["Study 0"],
    ]
    shown = {r["track_id"] for r in body["response"]["results"]}
    assert not shown & {library.ids["Study 4"], library.ids["Study 0"]}


def test_key_and_era_in_both_forms_of_api_search(client, library):
    ref = {"track_id": library.ids["Study 0"], "start": 5.0}
    r = client.post("/api/search", json={"reference": ref, "k": 5, "filters": {"key": "D", "mode": "major"}})
    assert r.status_code == 200, r.text
    assert all(res["descriptors"]["key"] == "D" for res in r.json()["results"])
    r = client.post("/api/search", json={"reference": ref, "filters": {"key": "H"}})
    assert r.status_code == 400 and "filters.key" in r.json()["error"]
    r = client.post(
        "/api/search",
        files={"file": ("clip.wav", clip_of_track(1), "audio/wav")},
        data={"era": "Classical", "k": "3"},
    )
    assert r.status_code == 200, r.text
    assert {res["era"] for res in r.json()["results"]} == {"Classical"}
