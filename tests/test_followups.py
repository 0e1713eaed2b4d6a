"""Follow-ups: the SAME table of phrasings through the rule-based parser and the LLM tool-calling
parser (against a real OpenAI-compatible HTTP server of our own), then applied to a previous search."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from assistant.followups import (
    FOLLOWUP_SCHEMA,
    FollowUp,
    PreviousSearch,
    apply_followup,
    parse_rules,
    parse_with_llm,
    request_from_json,
    request_to_json,
    validate_followup,
)
from assistant.llm import LLM
from cadenza.fake_llm import Step, scripted_args
from cadenza.settings import LLMSettings
from retrieval.types import Filters, MomentRef, SearchRequest

COMPOSERS = ["Johann Sebastian Bach", "Wolfgang Amadeus Mozart", "Johannes Brahms"]

#: phrasing → the follow-up it means (fields that differ from the defaults).
PHRASINGS: dict[str, dict] = {
    "more like this but a different composer": {"different_composer": True},
    "same mood but slower": {"same_mood": True, "tempo": "slower"},
    "only Baroque": {"only_eras": ["Baroque"]},
    "like #2 but not #3": {"like": [2], "unlike": [3]},
    "something from a composer I haven't heard": {"unheard_composers": True},
    "like this and #4 together": {"like": [4]},
    "faster, and in a minor key": {"tempo": "faster", "mode": "minor"},
    "no Romantic please": {"exclude_eras": ["Romantic"]},
    "only Bach": {"only_composers": ["Johann Sebastian Bach"]},
    "more like #1 but not by Mozart": {"like": [1], "exclude_composers": ["Wolfgang Amadeus Mozart"]},
    "show me 5 more results with more harmony": {"k": 5, "emphasis": "harmony"},
    "like the second one but less like #3": {"like": [2], "unlike": [3]},
    "something calmer": {"mood_shift": "calmer"},
    "same thing but happier and only Classical": {"mood_shift": "happier", "only_eras": ["Classical"]},
    "no more Bach, something sadder": {
        "exclude_composers": ["Johann Sebastian Bach"],
        "mood_shift": "sadder",
    },
    # Exclusions only: these refine the answer in place (assistant/exclusions.py).
    "not #3": {"unlike": [3]},
    "not this one": {"unlike": [1]},
    "drop the second": {"unlike": [2]},
    "remove the 4th result and #2": {"unlike": [4, 2]},
}


def expected(fields: dict) -> FollowUp:
    return FollowUp.from_json(fields)


@pytest.mark.parametrize("phrase", list(PHRASINGS))
def test_rule_parser(phrase):
    assert parse_rules(phrase, composers=COMPOSERS) == expected(PHRASINGS[phrase])


@pytest.fixture
def llm(fake):
    fake.reset()
    return LLM(LLMSettings(base_url=fake.base_url, api_key="k", model="fake", timeout_s=2.0, max_retries=0))


@pytest.mark.parametrize("phrase", list(PHRASINGS))
def test_llm_parser(fake, llm, phrase):
    fake.script(Step.tool(scripted_args(PHRASINGS)))
    followup, parser = parse_with_llm(phrase, llm=llm, composers=COMPOSERS)
    assert parser == "llm"
    assert followup == expected(PHRASINGS[phrase])
    sent = fake.requests[-1]
    assert sent["tools"][0]["function"]["parameters"] == FOLLOWUP_SCHEMA
    assert phrase in sent["messages"][-1]["content"]


@pytest.mark.parametrize(
    "bad",
    [
        {"like": ["two"]},  # wrong type
        {"like": [2], "delete_library": True},  # not in the schema
        {"tempo": "glacial"},  # not in the enum
        {"like": [40]},  # names a result that was not shown
        "{definitely not json",
    ],
    ids=["type", "extra-field", "enum", "unshown-rank", "not-json"],
)
@pytest.mark.parametrize("phrase", ["like #2 but not #3", "same mood but slower"])
def test_invalid_tool_call_falls_back_to_rules(fake, llm, bad, phrase):
    fake.script(Step.tool(bad))
    followup, parser = parse_with_llm(phrase, llm=llm, composers=COMPOSERS, n_results=8)
    assert parser == "rules"
    assert followup == expected(PHRASINGS[phrase])


def test_llm_errors_fall_back_to_rules(fake, llm):
    fake.script(Step.error(500))
    followup, parser = parse_with_llm("only Baroque", llm=llm)
    assert parser == "rules" and followup.only_eras == ("Baroque",)


def test_schema_rejects_unknown_fields():
    with pytest.raises(ValueError, match="schema"):
        validate_followup({"k": 0})


# --- applying a follow-up to the previous search -------------------------------------------------

RESULTS = tuple(
    {"rank": i, "track_id": 10 + i, "start": 30.0 + i, "end": 40.0 + i, "composer": c, "era": e}
    for i, (c, e) in enumerate(
        [("Johann Sebastian Bach", "Baroque"), ("Wolfgang Amadeus Mozart", "Classical"),
         ("Johannes Brahms", "Romantic"), ("Johann Sebastian Bach", "Baroque")],
        start=1,
    )
)  # fmt: skip
AUDIO = np.zeros(16_000 * 10, dtype=np.float32)


def previous() -> PreviousSearch:
    req = SearchRequest(audio=AUDIO, start_s=0.0, k=4, filters=Filters(exclude_composers=("Anon",)))
    return PreviousSearch(request=req, results=RESULTS, query={"valence": 0.3, "arousal": -0.2})


def test_different_composer_excludes_every_composer_shown():
    req = apply_followup(parse_rules("more like this but a different composer"), previous())
    assert set(req.filters.exclude_composers) == {"Anon", *(r["composer"] for r in RESULTS)}
    assert req.audio is AUDIO and req.k == 4


def test_like_and_not_become_reference_moments():
    req = apply_followup(parse_rules("like #2 but not #3"), previous())
    assert req.audio is AUDIO
    assert req.moments == (MomentRef(12, 32.0),)
    assert req.minus == (MomentRef(13, 33.0),)
    assert 13 in req.filters.exclude_tracks


def test_mood_tempo_discovery_and_eras():
    req = apply_followup(parse_rules("same mood but slower"), previous())
    assert req.target_mood == (0.3, -0.2) and req.weights.mood > 0 and req.tempo_factor == pytest.approx(0.8)
    req = apply_followup(parse_rules("something calmer"), previous())
    assert req.target_mood == pytest.approx((0.3, -0.7)) and req.weights.mood > 0
    req = apply_followup(parse_rules("something from a composer I haven't heard"), previous())
    assert req.weights.discovery > 0
    req = apply_followup(parse_rules("only Baroque"), previous())
    assert req.filters.eras == ("Baroque",)


def test_missing_rank_is_an_input_error():
    from cadenza.errors import InputError

    with pytest.raises(InputError, match="#7"):
        apply_followup(parse_rules("like #7"), previous())


def test_request_json_round_trip_without_audio():
    req = apply_followup(parse_rules("like #2 but not #3, only Baroque, slower"), previous())
    data = request_to_json(req)
    assert data["has_audio"] and "audio" not in data
    back = request_from_json(data, audio=AUDIO)
    assert back == replace(req, audio=AUDIO) or (back.moments, back.filters, back.weights) == (
        req.moments, req.filters, req.weights,
    )  # fmt: skip


@pytest.mark.parametrize(
    "phrase, only_excludes",
    [
        ("not #3", True), ("not this one", True), ("drop the second", True), ("skip #2 and #4", True),
        ("like this but not #1", True), ("like #2 but not #3", False), ("not #3, only Baroque", False),
        ("only Baroque", False), ("not that slow", False), ("show me the first 5 results", False),
    ],
)  # fmt: skip
def test_exclusion_only_follow_ups(phrase, only_excludes):
    followup = parse_rules(phrase, composers=COMPOSERS)
    assert followup.only_excludes is only_excludes, followup
    if phrase in ("not that slow", "show me the first 5 results"):
        assert followup.like == () and followup.unlike == ()  # no rank in "that slow" / "the first 5"


def test_the_models_composer_names_are_mapped_to_the_library(fake, llm):
    fake.script(Step.tool({"only_composers": ["J.S. Bach"]}))
    followup, parser = parse_with_llm("just the cantor of Leipzig", llm=llm, composers=COMPOSERS)
    assert parser == "llm" and followup.only_composers == ("Johann Sebastian Bach",)
    # A name the library does not have is no filter that silently matches nothing: the rules answer.
    fake.script(Step.tool({"only_composers": ["Vivaldi"]}))
    followup, parser = parse_with_llm("only Vivaldi", llm=llm, composers=COMPOSERS)
    assert parser == "rules" and followup.only_composers == ()
