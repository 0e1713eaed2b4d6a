"""The phrasing corpus (tests/data/phrasing.json) through the rule parser and the tool-calling path.

The tool path runs over real HTTP against cadenza/fake_llm.py replaying each message's scripted call,
validated against the refine_search schema — the same FollowUp the rules produce. Messages that must
be refused (not understood, an ambiguous composer) must be refused on both paths.
"""

from __future__ import annotations

import pytest

from assistant.llm import LLM
from bench.phrasing import accuracy, load, outcome, rule_outcomes, scripted_call, tool_outcomes
from cadenza.fake_llm import FakeLLM, Step
from cadenza.settings import LLMSettings

DATA = load()


def test_the_corpus_is_big_enough_and_has_refusals():
    assert len(DATA["messages"]) >= 150
    assert sum("refuse" in m for m in DATA["messages"]) >= 15


def test_rule_parser_accuracy_and_every_refusal():
    rows = rule_outcomes(DATA)
    assert accuracy(rows)["all"]["accuracy"] >= 0.95
    # Nothing that must be refused may run a search.
    assert [m["text"] for m, got in rows if "refuse" in m and not outcome(m, got)] == []


@pytest.fixture(scope="module")
def llm():
    with FakeLLM() as fake:
        fake.default = Step.tool(scripted_call(DATA))
        yield LLM(
            LLMSettings(base_url=fake.base_url, api_key="k", model="fake", timeout_s=5.0, max_retries=0)
        )


def test_tool_calling_path_produces_the_same_states(llm):
    rows = tool_outcomes(DATA, llm)
    assert [(m["text"], got[0]) for m, got in rows if not outcome(m, got)] == []


def test_the_second_set_and_opposite_readings():
    from bench.phrasing import HELDOUT

    rows = rule_outcomes(load(HELDOUT))
    assert accuracy(rows)["all"]["accuracy"] >= 0.95
    # Its first run read these as the opposite filter, silently: never again.
    wrong = {m["text"] for m, got in rows if not outcome(m, got)}
    assert not wrong & {"leave out Beethoven", "skip the Baroque stuff", "lose number 4"}
