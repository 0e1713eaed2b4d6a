"""The sound of a neighbourhood: diffusion over the candidate pool's track graph. Pure.

Same-source likeness is a question about neighbourhoods of tracks, not about one 10-s window:
the tracks of one production sound alike *among themselves*, so a track that resembles the
tracks nearest the query is likely alike too, even when its own distance to the query window is
middling. This follows diffusion re-ranking in image retrieval: the pool's tracks are joined to
their nearest few by the sound of the whole track (``tracks.timbre``, sql/012), a walk starts at
the best-scored track (the query's own recording when the library has it) and spreads along the
graph, and where it settles is one more term of the sound aspect (``timbre_graph``).

Only the pool is walked (a few hundred candidates, ~100 tracks), so nothing is stored and a
library needs no reindex; the term costs well under a millisecond a query.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from retrieval.rerank import Candidate, QueryProfile, combined_score
from retrieval.types import Aspects

#: Each pool track is joined to this many nearest pool tracks by sound (the graph is symmetrised).
GRAPH_NEIGHBOURS = 5
#: How far the walk spreads (0 = stays on the seed, → 1 = the whole connected pool): diffusion's alpha.
GRAPH_ALPHA = 0.8
#: Steps of the walk (enough for GRAPH_ALPHA: see :func:`diffuse`).
GRAPH_STEPS = 40
#: Edge weights are the tracks' cosine to this power (only clearly alike tracks carry the walk).
GRAPH_GAMMA = 3
#: Weight of the ``timbre_graph`` term next to the embedding's 1 (0 = off). Chosen with the
#: two settings above through the product on the TRAINING sources (encoder/MODEL_CARD.md).
GRAPH_WEIGHT = 3.0


def diffuse(tracks: np.ndarray, *, seeds: int = 1, neighbours: int = GRAPH_NEIGHBOURS,
            alpha: float = GRAPH_ALPHA, gamma: float = GRAPH_GAMMA) -> np.ndarray:  # fmt: skip
    """Where a walk from the first ``seeds`` rows of ``tracks [n, d]`` (track sound vectors, best-scored
    first) settles on the symmetrised ``neighbours``-nearest graph: ``[n]`` in [0, 1], 1 = the most."""
    n = len(tracks)
    unit = tracks / np.maximum(np.linalg.norm(tracks, axis=1, keepdims=True), 1e-9)
    sim = np.clip(unit @ unit.T, 0.0, None) ** gamma
    np.fill_diagonal(sim, 0.0)
    keep = np.argsort(-sim, axis=1)[:, : max(min(neighbours, n - 1), 0)]
    w = np.zeros_like(sim)
    rows = np.arange(n)[:, None]
    w[rows, keep] = sim[rows, keep]
    w = np.maximum(w, w.T)
    deg = w.sum(axis=1)
    deg[deg == 0] = 1.0
    norm = w / np.sqrt(deg[:, None] * deg[None, :])
    y = np.zeros(n)
    y[:seeds] = 1.0
    # (I − alpha·S)⁻¹ y by its series: GRAPH_STEPS matrix-vector products leave alpha^GRAPH_STEPS of it
    # out (under 2e-4 at 0.8) and, unlike a solver, never start BLAS threads on a busy web process.
    f = y.copy()
    for _ in range(GRAPH_STEPS):
        f = alpha * (norm @ f) + y
    return np.clip(f / max(float(f.max()), 1e-12), 0.0, 1.0)


def add_graph_term(
    cands: list[Candidate],
    query: QueryProfile,
    *,
    aspects: Aspects | None = None,
    weight: float = GRAPH_WEIGHT,
    seed_without: Collection[str] = (),
) -> list[Candidate]:
    """Add the ``timbre_graph`` term (:func:`diffuse` over the tracks of ``cands``, scored best first) and re-sort.

    The term belongs to the sound aspect: its weight is ``weight × aspects.sound``, so sound 0 turns it
    off and "same sound, any harmony" keeps it. Only tracks whose sound vector comes from the query's
    timbre model are walked; a candidate whose track has none gets the pool's median (neither helped
    nor held back). ``score`` stays the weighted mean of ``terms``: the order, the shown likeness and a
    ranking without the term agree. Fewer than three walkable tracks, or no timbre vector for the
    query: nothing changes. The walk's seed is the best track by the score without the terms named in
    ``seed_without`` (the listener's context terms): a context switch then moves results only through
    its own term, so the answer's report of what it changed (retrieval.context.rank_without) stays exact.
    """
    w = float(weight) * (1.0 if aspects is None else float(aspects.sound))
    if w <= 0 or query.timbre is None:
        return cands
    order: dict[int, np.ndarray] = {}
    by_seed = (
        sorted(cands, key=lambda c: -combined_score(c.terms, without=seed_without)) if seed_without else cands
    )
    for c in by_seed:
        if (
            c.track_id not in order
            and c.track_timbre is not None
            and c.timbre_version == query.timbre_version
        ):
            order[c.track_id] = c.track_timbre
    if len(order) < 3:
        return cands
    settled = dict(zip(order, diffuse(np.stack(list(order.values()))).tolist(), strict=True))
    typical = float(np.median(list(settled.values())))
    for c in cands:
        v = settled.get(c.track_id)
        if v is not None:
            c.components["timbre_graph"] = round(v, 4)
        c.terms["timbre_graph"] = (w, typical if v is None else v)
        c.score = combined_score(c.terms)
    return sorted(cands, key=lambda c: -c.score)
