"""Diversity over a best-first candidate list: non-maximum suppression, composer/era MMR, and
what the diversity step moved. Pure functions."""

from __future__ import annotations

import numpy as np

from encoder.windowing import DEFAULT_WINDOWING
from retrieval.rerank import Candidate


def nms(
    *, candidates: list[Candidate], one_per_track: bool = True, min_gap_s: float = DEFAULT_WINDOWING.window_s
) -> list[Candidate]:
    """Non-maximum suppression over a best-first list.

    One window per track when ``one_per_track``; otherwise windows of one track whose starts
    are closer than ``min_gap_s`` (i.e. overlapping moments) are dropped.
    """
    kept: list[Candidate] = []
    starts: dict[int, list[float]] = {}
    for c in candidates:
        prev = starts.get(c.track_id, [])
        if prev and (one_per_track or any(abs(c.start_s - s) < min_gap_s for s in prev)):
            continue
        starts.setdefault(c.track_id, []).append(c.start_s)
        kept.append(c)
    return kept


#: Redundancy of a repeat composer (:func:`redundancy`), and what it costs at diversity 1 in
#: units of the top 3k's score range (:func:`mmr`).
COMPOSER_REDUNDANCY = 0.7
MAX_REPEAT_PENALTY = 1.05


def redundancy(a: Candidate, b: Candidate) -> float:
    """How much ``b`` repeats ``a`` for a listener, in [0, 1]: same composer, same era, same track."""
    r = 0.0
    if a.composer and a.composer.lower() == b.composer.lower():
        r += COMPOSER_REDUNDANCY
    if a.era and a.era == b.era:
        r += 0.2
    if a.track_id == b.track_id:
        r += 0.1
    return min(r, 1.0)


def mmr(
    *, candidates: list[Candidate], k: int, diversity: float = 0.3, same_passage: frozenset[int] = frozenset()
) -> list[Candidate]:
    """Maximal marginal relevance: pick ``k`` maximizing ``score − diversity · spread · max redundancy``.

    ``spread`` is the score range of the plain top ``3k`` (first minus 3k-th: the candidates
    diversity may reach), so ``diversity`` means the same on any score scale: at 1 a repeat
    composer pays :data:`MAX_REPEAT_PENALTY` times that range (composers never repeat while a
    new one is within reach), at 0 the plain top ``k`` comes back unchanged. Candidates whose
    segment id is in ``same_passage`` (the query itself found again) do not count as "already
    shown": the query composer's *other* works are not held back because its own recording
    came first.
    """
    if not candidates:
        return []
    rel = np.array([c.score for c in candidates], dtype=np.float64)
    # The query found again scores far above the rest: it would inflate the spread.
    top = np.sort([c.score for c in candidates if c.segment_id not in same_passage] or list(rel))[::-1]
    spread = max(float(top[0] - top[min(3 * k, len(top)) - 1]), 1e-3)
    penalty = float(diversity) * spread * MAX_REPEAT_PENALTY / COMPOSER_REDUNDANCY
    chosen: list[int] = []
    left = list(range(len(candidates)))
    while left and len(chosen) < k:
        counted = [j for j in chosen if candidates[j].segment_id not in same_passage]
        best_i, best_v = left[0], -np.inf
        for i in left:
            red = max((redundancy(candidates[j], candidates[i]) for j in counted), default=0.0)
            v = rel[i] - penalty * red
            if v > best_v + 1e-12:
                best_i, best_v = i, v
        chosen.append(best_i)
        left.remove(best_i)
    return [candidates[i] for i in chosen]


def moves(*, ranked: list[Candidate], chosen: list[Candidate]) -> list[tuple[int, str]]:
    """Per chosen result: (places moved by the diversity step, + = up; why) against the plain score order.

    ``ranked`` is the list :func:`mmr` chose from (best score first).
    """
    plain = {c.segment_id: i for i, c in enumerate(ranked)}
    out: list[tuple[int, str]] = []
    for pos, c in enumerate(chosen):
        moved = plain.get(c.segment_id, pos) - pos
        if moved > 0:
            above = {x.composer.lower() for x in chosen[:pos] if x.composer}
            who = c.composer or "this composer"
            why = (
                f"moved up {moved}: {who} is not yet among the results above"
                if c.composer.lower() not in above
                else f"moved up {moved}: results scored higher were by composers already shown"
            )
        elif moved < 0:
            why = f"moved down {-moved}: lower-scored results by composers not yet shown went first"
        else:
            why = ""
        out.append((moved, why))
    return out
