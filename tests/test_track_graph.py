"""The walk over the pool's track graph (retrieval.track_graph) on constructed tracks."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.rerank import Candidate, QueryProfile, aspect_scores, combined_score, reason, score_candidates
from retrieval.track_graph import add_graph_term, diffuse
from retrieval.types import Aspects, Weights


def _clusters() -> np.ndarray:
    """Six track sound vectors, best-scored first: 0–2 one production (a chain 0 → 1 → 2), 3–5 another."""
    return np.array([
        [1.0, 0.0, 0.0, 0.0],
        [0.9, 0.44, 0.0, 0.0],
        [0.6, 0.8, 0.0, 0.0],  # far from the seed (cosine 0.6), close to track 1
        [0.6, 0.0, 0.8, 0.0],  # as far from the seed as track 2, in the other production
        [0.5, 0.0, 0.86, 0.1],
        [0.45, 0.0, 0.85, 0.28],
    ])  # fmt: skip


def test_the_walk_settles_on_the_seeds_production_and_follows_its_chains():
    f = diffuse(_clusters(), neighbours=2)
    assert f[0] == pytest.approx(1.0) and f.min() >= 0.0
    # Tracks 2 and 3 are equally far from the seed; only 2 is reached through a track like the seed.
    assert f[2] > f[3] + 0.05
    assert min(f[:3]) > max(f[3:])
    # Seeded on the other production, the walk settles there instead.
    g = diffuse(_clusters()[[3, 4, 5, 0, 1, 2]], neighbours=2)
    assert min(g[:3]) > max(g[3:])


def _cands() -> tuple[QueryProfile, list[Candidate]]:
    flat = np.full(12, 1 / 12)
    q = QueryProfile(embedding=np.ones(4) / 2, chroma_mean=flat, chroma_seq=None,
                     timbre=np.array([1.0, 0.0, 0.0, 0.0]), timbre_version="timbre-a")  # fmt: skip
    out = []
    for i, v in enumerate(_clusters()):
        # The seed scores highest; the rest tie on every other term.
        c = Candidate(
            segment_id=10 + i, track_id=i + 1, start_s=0.0, end_s=10.0, emb_sim=0.9 if i == 0 else 0.5
        )
        c.track_timbre, c.timbre_version = 0.5 * v, "timbre-a"  # means of unit vectors: not unit length
        out.append(c)
    # The tied tracks come in reverse order: a stable sort alone would not put the seed's production first.
    return q, [out[0], *out[:0:-1]]


def test_the_graph_term_ranks_the_seeds_neighbourhood_first_and_keeps_scores_and_order_agreeing():
    q, cands = _cands()
    first = score_candidates(candidates=cands, query=q, weights=Weights(), aspects=Aspects())
    before = {c.segment_id: c.score for c in first}
    assert len({round(s, 9) for s in list(before.values())[1:]}) == 1  # a tie without the graph
    ranked = add_graph_term(first, q, aspects=Aspects(), weight=2.0)
    assert [c.track_id for c in ranked[:3]] == [1, 2, 3]  # the seed's production first
    assert all(c.terms["timbre_graph"][0] == pytest.approx(2.0) for c in ranked)
    for c in ranked:
        assert c.score == combined_score(c.terms)
        assert combined_score(c.terms, without=("timbre_graph",)) == before[c.segment_id]
    assert [c.score for c in ranked] == sorted((c.score for c in ranked), reverse=True)
    assert "sounds like the tracks nearest your clip" in reason(ranked[1])
    # Shown as a component, but not averaged into the sound aspect (a walk's mass is not a similarity).
    assert "timbre_graph" in ranked[1].components
    assert aspect_scores(ranked[1].components) == aspect_scores(
        {k: v for k, v in ranked[1].components.items() if k != "timbre_graph"}
    )


def test_the_graph_term_follows_the_sound_weight_and_needs_track_vectors_of_the_querys_model():
    q, cands = _cands()
    muted = score_candidates(candidates=cands, query=q, weights=Weights(), aspects=Aspects(sound=0))
    assert all("timbre_graph" not in c.terms for c in add_graph_term(muted, q, aspects=Aspects(sound=0)))
    q, cands = _cands()
    plain = score_candidates(candidates=cands, query=q, weights=Weights(), aspects=Aspects())
    assert all("timbre_graph" not in c.terms for c in add_graph_term(plain, q, weight=0.0))
    q.timbre = None
    assert all("timbre_graph" not in c.terms for c in add_graph_term(plain, q))
    # Sound 2 doubles the weight; a track vector of another model is not walked: the pool's median stands in.
    q, cands = _cands()
    next(c for c in cands if c.track_id == 3).timbre_version = "timbre-old"
    loud = add_graph_term(
        score_candidates(candidates=cands, query=q, weights=Weights(), aspects=Aspects(sound=2)),
        q, aspects=Aspects(sound=2), weight=1.5,
    )  # fmt: skip
    assert all(c.terms["timbre_graph"][0] == pytest.approx(3.0) for c in loud)
    old = next(c for c in loud if c.track_id == 3)
    walked = [c.terms["timbre_graph"][1] for c in loud if c.track_id != 3]
    assert "timbre_graph" not in old.components
    assert old.terms["timbre_graph"][1] == pytest.approx(float(np.median(walked)))


def test_a_context_term_does_not_move_the_walks_seed():
    """The seed is chosen without the listener's context terms, so a context switch moves results only
    through its own term and the answer's report of what it changed (context.rank_without) is exact."""
    q, cands = _cands()
    scored = score_candidates(candidates=cands, query=q, weights=Weights(), aspects=Aspects())
    for c in scored:  # a mood term that favours the other production strongly enough to lead the pool
        c.terms["mood"] = (5.0, 1.0 if c.track_id == 6 else 0.0)
        c.score = combined_score(c.terms)
    scored.sort(key=lambda c: -c.score)
    assert scored[0].track_id == 6
    free = add_graph_term([*scored], q, aspects=Aspects(), weight=2.0, seed_without=("mood",))
    graph = {c.track_id: c.terms["timbre_graph"][1] for c in free}
    assert max(graph, key=lambda t: graph[t]) == 1  # seeded on the best track without the mood
    led = add_graph_term([*scored], q, aspects=Aspects(), weight=2.0)
    led_graph = {c.track_id: c.terms["timbre_graph"][1] for c in led}
    assert max(led_graph, key=lambda t: led_graph[t]) == 6  # without seed_without the mood leads the walk
