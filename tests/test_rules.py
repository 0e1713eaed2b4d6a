"""The rule parser on the phrasings of issue 16 that were misread without saying so."""

from __future__ import annotations

import pytest

from assistant.followup_schema import DIVERSITY_LESS, DIVERSITY_MORE, FollowUp
from assistant.rules import not_understood, parse_rules

CASES = {
    "between 60 and 90 bpm": {"min_bpm": 60.0, "max_bpm": 90.0},
    "under 100": {"max_bpm": 100.0},
    "over 120 bpm please": {"min_bpm": 120.0},
    "faster than this": {"tempo": "faster"},
    "show 3": {"k": 3},
    "top 10": {"k": 10},
    "focus on timbre": {"emphasis": "timbre"},
    "emphasize timbre over harmony": {"emphasis": "timbre"},
    "harmony matters more than the sound": {"emphasis": "harmony"},
    "only in D major": {"key": "D", "mode": "major"},
    "minor keys only": {"mode": "minor"},
    "in F# minor": {"key": "F#", "mode": "minor"},
    "in B flat major": {"key": "Bb", "mode": "major"},
    "same composer is fine": {"diversity": DIVERSITY_LESS},
    "more variety": {"diversity": DIVERSITY_MORE},
    "any composer": {"clear": ["composers"]},
    "clear the filters": {"clear": ["all"]},
    "drop the first one": {"unlike": [1]},
}


@pytest.mark.parametrize("text", list(CASES))
def test_understood(text):
    assert parse_rules(text) == FollowUp.from_json(CASES[text])
    assert not not_understood(text, parse_rules(text))


@pytest.mark.parametrize("text", ["asdf qwerty", "hello?", "what is the weather"])
def test_not_understood_is_said(text):
    assert not_understood(text, parse_rules(text))


def test_more_like_this_is_an_intended_repeat():
    assert not not_understood("more like this", parse_rules("more like this"))
