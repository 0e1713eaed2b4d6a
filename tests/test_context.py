"""retrieval.context: day parts, the switches, and the report of what each signal changed (pure)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from retrieval import context
from retrieval.rerank import Candidate, QueryProfile, score_candidates
from retrieval.types import Context, SearchRequest, Weights

ALL_OFF = Context(time_of_day=False, history=False, mood=False)


@pytest.mark.parametrize(
    ("hour", "name"),
    [(0.0, "night"), (4.99, "night"), (5.0, "morning"), (13.0, "afternoon"), (19.5, "evening"),
     (22.75, "late evening"), (24.0, "night"), (-1.0, "late evening")],
)  # fmt: skip
def test_day_parts_cover_the_clock(hour, name):
    assert context.day_part(hour).name == name


def test_day_part_targets_are_calmer_and_softer_at_night_than_in_the_afternoon():
    night, afternoon, morning = (context.day_part(h).target for h in (2, 14, 8))
    assert night[1] < afternoon[1] and night[2] < afternoon[2]  # arousal, loudness
    assert morning[0] == max(p.target[0] for p in context.DAY_PARTS)  # brightest valence


def test_clock():
    assert context.clock(14.5) == "14:30" and context.clock(23.999) == "00:00" and context.clock(0) == "00:00"


def _pool(n: int = 12, seed: int = 0) -> list[Candidate]:
    """Candidates of 6 composers with equal-ish similarity and spread-out mood and loudness."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        out.append(
            Candidate(
                segment_id=i + 1, track_id=i + 1, start_s=0.0, end_s=10.0,
                emb_sim=float(0.8 + 0.01 * rng.random()), composer=f"Composer {i % 6}",
                chroma_mean=rng.random(12), chroma_seq=rng.random((20, 12)),
                descriptors={"valence": float(rng.uniform(-1, 1)), "arousal": float(rng.uniform(-1, 1)),
                             "loudness_db": float(rng.uniform(-40, -12))},
            )
        )  # fmt: skip
    return out


def _query() -> QueryProfile:
    rng = np.random.default_rng(1)
    return QueryProfile(embedding=np.zeros(4), chroma_mean=rng.random(12), chroma_seq=rng.random((20, 12)))


def _ranked(request: SearchRequest, heard: frozenset[str] | None) -> tuple[list[Candidate], dict]:
    pool = _pool()
    applied = context.apply(request, heard=heard)
    score_candidates(candidates=pool, query=_query(), **applied.rerank_kwargs())
    shown = context.rank(
        pool, k=request.k, one_per_track=True, diversity=request.diversity, same_passage=frozenset()
    )[1]
    return shown, context.report(request=request, applied=applied, pool=pool, shown=shown)


def _ids_scores(cs: list[Candidate]) -> list[tuple[int, float]]:
    return [(c.segment_id, c.score) for c in cs]


FULL = SearchRequest(
    k=6, local_hour=2.0, listener_id="ann", target_mood=(0.8, 0.8), weights=Weights(mood=0.5)
)  # fmt: skip
HEARD = frozenset({"composer 0", "composer 1"})


@pytest.mark.parametrize("signal", ["time_of_day", "history", "mood"])
def test_a_switch_turned_off_gives_exactly_the_ranking_without_that_signal(signal):
    term = context.SIGNAL_TERMS[signal]
    on, rep = _ranked(FULL, HEARD)
    off, rep_off = _ranked(replace(FULL, context=replace(FULL.context, **{signal: False})), HEARD)
    row = next(r for r in rep["signals"] if r["signal"] == signal)
    row_off = next(r for r in rep_off["signals"] if r["signal"] == signal)
    assert row["on"] and row["applied"] and not row_off["on"] and not row_off["applied"]
    assert row_off["text"].endswith(": off")
    # The signal is strong enough here to move something; off, its term is gone from every result.
    assert row["changed_ranks"] > 0 and _ids_scores(on) != _ids_scores(off)
    assert all(term in c.terms for c in on) and not any(term in c.terms for c in off)
    # The report's counterfactual is the real ranking without the signal, bit for bit.
    pool = _pool()
    applied = context.apply(FULL, heard=HEARD)
    score_candidates(candidates=pool, query=_query(), **applied.rerank_kwargs())
    without = context.rank_without(
        pool, term, k=FULL.k, one_per_track=True, diversity=FULL.diversity, same_passage=frozenset()
    )
    assert _ids_scores(without) == _ids_scores(off)


def test_all_switches_off_is_the_context_free_ranking():
    free, rep = _ranked(SearchRequest(k=6), None)
    off, rep_off = _ranked(replace(FULL, context=ALL_OFF), HEARD)
    assert _ids_scores(free) == _ids_scores(off)
    assert [r["applied"] for r in rep_off["signals"]] == [False, False, False]
    assert not set(free[0].terms) & {"time_of_day", "discovery", "mood"}


def test_late_night_favours_calm_soft_moments_and_the_afternoon_lively_ones():
    def mean_arousal(hour: float) -> float:
        shown, _ = _ranked(
            SearchRequest(k=3, local_hour=hour, context=Context(history=False, mood=False)), None
        )
        return float(np.mean([c.descriptors["arousal"] for c in shown]))

    assert mean_arousal(2.0) < mean_arousal(14.0)


def test_history_moves_played_composers_down_and_says_how_many():
    shown, rep = _ranked(replace(FULL, context=Context(time_of_day=False, mood=False)), HEARD)
    free, _ = _ranked(SearchRequest(k=6), None)
    row = rep["signals"][1]
    assert row["signal"] == "history" and row["applied"]
    moved = row["composers_moved_down"]
    assert moved == context.composers_moved_down(shown, free, HEARD) and moved > 0
    assert row["text"].startswith(f"{moved} composer")


def test_signals_that_have_nothing_to_work_with_say_why():
    _, rep = _ranked(SearchRequest(k=6), None)
    texts = {r["signal"]: r["text"] for r in rep["signals"]}
    assert texts == {
        "time_of_day": "time of day: your local time was not sent",
        "history": "listening history: nothing played yet",
        "mood": "mood: none asked for (say 'calmer' or 'same mood')",
    }
    assert rep["switches"] == {"time_of_day": True, "history": True, "mood": True}
    _, rep = _ranked(SearchRequest(k=6, listener_id="new"), frozenset())
    assert (
        rep["signals"][1]["text"] == "listening history: nothing played yet"
        and not rep["signals"][1]["applied"]
    )


def test_context_weights_are_gentle():
    # A nudge between near-equal matches: the time-of-day term alone can move a score by at most
    # its weight's share of the total (embedding 1 + harmony + progression at full tonalness).
    applied = context.apply(SearchRequest(local_hour=2.0), heard=None)
    total = 1.0 + 0.35 + 0.15 + applied.time_weight
    assert applied.time_weight / total < 0.1
    assert (
        context.apply(SearchRequest(listener_id="a"), heard=frozenset({"x"})).weights.discovery
        == context.HISTORY_WEIGHT
    )
    # An explicit "composers I haven't heard" keeps its stronger weight.
    req = SearchRequest(listener_id="a", weights=Weights(discovery=0.5))
    assert context.apply(req, heard=frozenset({"x"})).weights.discovery == 0.5


def test_changes_counts_ranks_and_new_results():
    a = _pool(4)
    assert context.changes(a, a) == (0, 0)
    assert context.changes([a[1], a[0], a[2]], a[:3]) == (2, 0)
    assert context.changes([a[3], a[0]], a[:3]) == (3, 1)
