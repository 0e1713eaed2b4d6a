"""The claim checker: each claim of a model's explanation against the facts of the answer, marked at the
claim; bad citations removed without leaving a fragment; the system prompt disguised is still caught."""

from __future__ import annotations

import copy

import pytest

from assistant.claims import CONTRADICTED, SUPPORTED, UNVERIFIED, drop_bad_citations, find_claims, to_markdown
from assistant.explain import (
    SYSTEM_PROMPT,
    check_explanation,
    echoes_instructions,
    offline_explanation,
    render_markdown,
)
from tests.helpers_explain import RESPONSE

FACTS = copy.deepcopy(RESPONSE)
FACTS["results"][0].update(composer="Wolfgang Amadeus Mozart", era="Classical", title="Serenade in G")
FACTS["results"][1].update(composer="Scott Joplin", era="Romantic", title="Maple Leaf Rag")


def verdicts(text: str) -> dict[str, str]:
    return {c.text: c.verdict for c in find_claims(text, FACTS)}


def test_the_issue_examples_are_caught():
    # Result 1 is Mozart's "Serenade in G", Classical, valence +0.40: sad/funeral contradict it, it is
    # titled a serenade, not a march, 1902 is no Classical year; its meter is not measured.
    v = verdicts("[1] is a sad funeral march in 3/4, composed in 1902.")
    assert v["sad"] == v["funeral"] == v["march"] == v["in 1902"] == CONTRADICTED
    assert v["in 3/4"] == UNVERIFIED
    v = verdicts("Beethoven wrote this rag in Vienna [2].")
    assert v["Beethoven"] == CONTRADICTED and v["rag"] == SUPPORTED and v["Vienna"] == UNVERIFIED
    # Issue 20: an invented year is flagged even when the composer is right.
    v = verdicts("[1] was composed by Mozart in 1788.")
    assert v["Mozart"] == SUPPORTED and v["in 1788"] == UNVERIFIED


def test_marks_sit_at_the_claim_with_the_measured_value():
    marked, _, flags = check_explanation("[1] is a sad serenade in D minor.", FACTS)
    md = to_markdown(marked)
    assert (
        "~~sad~~ (measured mood: [1]: valence +0.40)" in md
        and "~~D minor~~ (measured key: [1]: G major)" in md
    )
    html = render_markdown(marked)
    assert '<s class="claim contradicted">D minor</s>' in html and "does not match the measured key" in html
    assert len(flags) == 2


def test_supported_claims_are_left_alone():
    text = "The first match [1] is in G major at 72 BPM, a serene Classical serenade by W. A. Mozart."
    assert set(verdicts(text).values()) == {SUPPORTED}
    marked, notes, flags = check_explanation(text, FACTS)
    assert marked == text and notes == flags == []
    offline = offline_explanation(FACTS)
    assert check_explanation(offline, FACTS)[0] == offline


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[1] and [9] share a calm mood; and [7] is also relevant.", "[1] share a calm mood."),
        ("It is in G major [1]. [8] is also relevant.", "It is in G major [1]."),
        ("The first match [1] is close, and [7] is also nice.", "The first match [1] is close."),
    ],
)
def test_a_removed_citation_leaves_no_fragment(text, expected):
    cleaned, removed = drop_bad_citations(text, {1, 2, 3})
    assert cleaned == expected and removed


def test_the_system_prompt_disguised_is_still_an_echo():
    pieces = [SYSTEM_PROMPT[i : i + 25] for i in range(0, len(SYSTEM_PROMPT), 25)]
    assert echoes_instructions(SYSTEM_PROMPT.upper())
    assert echoes_instructions("\n".join(pieces))
    assert echoes_instructions(" ... ".join(f"part {i}: «{p}»" for i, p in enumerate(pieces)))
    assert not echoes_instructions(offline_explanation(FACTS))
