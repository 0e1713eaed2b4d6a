"""Reranking and diversity: pure functions over candidate lists.

The ANN search ranks by embedding similarity only. Here each candidate also gets a
key-invariant harmonic similarity (best of 12 circular shifts of the mean chroma, shift
recorded), a chord-progression likeness (the compact chroma sequences compared under that
shift, best lag), and optional mood / tempo / discovery terms. The final score is their
weighted mean; ``components`` keeps every term so the explanation can say why.

Diversity: :func:`nms` keeps one window per track (or at least non-overlapping windows),
:func:`mmr` trades relevance against composer/era redundancy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrieval.descriptors import KEY_NAMES

_INTERVALS = {
    0: "in the same key",
    1: "a semitone up",
    2: "a tone up",
    3: "a minor third up",
    4: "a major third up",
    5: "a fourth up",
    6: "a tritone away",
    -1: "a semitone down",
    -2: "a tone down",
    -3: "a minor third down",
    -4: "a major third down",
    -5: "a fourth down",
}


@dataclass
class QueryProfile:
    """What the reranker knows about the query moment."""

    embedding: np.ndarray  # [d] unit norm
    chroma_mean: np.ndarray  # [12] sums to 1
    chroma_seq: np.ndarray | None  # [n, 12] at 2 fps
    tempo_bpm: float | None = None
    valence: float = 0.0
    arousal: float = 0.0
    tonalness: float = 1.0
    # (semitones, unit embedding [d]) of the query moment transposed in the feature domain:
    # extra nearest-neighbour probes, so a passage is found in another key too.
    transposed: tuple[tuple[int, np.ndarray], ...] = ()


@dataclass
class Candidate:
    segment_id: int
    track_id: int
    start_s: float
    end_s: float
    emb_sim: float  # cosine similarity to the query embedding
    title: str = ""
    composer: str = ""
    work: str = ""
    era: str = ""
    path: str = ""
    chroma_mean: np.ndarray | None = None  # [12]
    chroma_seq: np.ndarray | None = None  # [n, 12]
    embedding: np.ndarray | None = None  # [d]
    descriptors: dict[str, Any] = field(default_factory=dict)
    score: float = 0.0
    key_shift: int = 0
    components: dict[str, float] = field(default_factory=dict)


def _centered_unit(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=axis, keepdims=True)
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 1e-9)


def _rolls(q: np.ndarray) -> np.ndarray:
    """``[12]`` → ``[12, 12]`` whose row ``s`` is ``np.roll(q, s)``."""
    idx = (np.arange(12)[None, :] - np.arange(12)[:, None]) % 12
    return q[idx]


def harmonic_similarity(*, query: np.ndarray, candidate: np.ndarray) -> tuple[float, int]:
    """Key-invariant similarity of two ``[12]`` mean chromas → (similarity in [0, 1], shift).

    ``shift`` (−5..6) is how many semitones the query must be transposed up to match the
    candidate: ``candidate ≈ roll(query, shift)``. Similarity is the Pearson correlation at
    the best shift, clipped at 0.
    """
    q = _centered_unit(query)
    c = _centered_unit(candidate)
    corr = _rolls(q) @ c  # [12]: corr[s] = <roll(q, s), c>
    s = int(np.argmax(corr))
    return float(np.clip(corr[s], 0.0, 1.0)), (s if s <= 6 else s - 12)


def progression_similarity(
    *, query: np.ndarray, candidate: np.ndarray, shift: int = 0, max_lag: int = 2
) -> float:
    """Chord-progression likeness of two chroma sequences ``[n, 12]``, ``[m, 12]`` → [0, 1].

    The query is transposed by ``shift``; rows are centred and normalized; the score is the
    best, over lags of ±``max_lag`` rows, mean row cosine of the overlap (clipped at 0).
    """
    q = _centered_unit(np.roll(np.asarray(query, dtype=np.float64), shift, axis=1))
    return _best_lag(q, _centered_unit(np.asarray(candidate, dtype=np.float64)), max_lag)


def _best_lag(q: np.ndarray, c: np.ndarray, max_lag: int = 2) -> float:
    """Best mean row cosine over lags of already centred, unit rows ``q [n, 12]``, ``c [m, 12]``."""
    best = 0.0
    for lag in range(-max_lag, max_lag + 1):
        qa = q[max(0, -lag) :]
        ca = c[max(0, lag) :]
        n = min(len(qa), len(ca))
        if n < max(2, min(len(q), len(c)) // 2):
            continue
        best = max(best, float(np.einsum("ij,ij->", qa[:n], ca[:n]) / n))
    return float(np.clip(best, 0.0, 1.0))


def mood_similarity(*, target: tuple[float, float], valence: float, arousal: float) -> float:
    """1 at the target (valence, arousal), 0 at the opposite corner of the [−1, 1]² square."""
    d = np.hypot(valence - target[0], arousal - target[1])
    return float(np.clip(1.0 - d / (2.0 * np.sqrt(2.0)), 0.0, 1.0))


def tempo_preference(*, query_bpm: float | None, factor: float, candidate_bpm: float | None) -> float:
    """1 when the candidate's tempo is the query's × ``factor``, falling to 0 an octave away."""
    if not query_bpm or not candidate_bpm:
        return 0.5
    return float(np.clip(1.0 - abs(np.log2(candidate_bpm / (query_bpm * factor))), 0.0, 1.0))


def score_candidates(
    *,
    candidates: list[Candidate],
    query: QueryProfile,
    weights: Any,
    target_mood: tuple[float, float] | None = None,
    tempo_factor: float | None = None,
    unheard_composers: set[str] | None = None,
    heard_composers: set[str] | None = None,
) -> list[Candidate]:
    """Fill ``score``, ``key_shift`` and ``components`` of each candidate; return them best first.

    ``weights`` is a :class:`retrieval.types.Weights`. Harmony terms are scaled by the query's
    tonalness (a drum loop has no key to match). ``heard_composers`` (lower-case) enables the
    discovery term: 1 for a composer the listener has not played yet.
    """
    tonal = float(np.clip(query.tonalness * 1.5, 0.0, 1.0))
    w_emb = float(weights.embedding)
    w_h = float(weights.harmony) * tonal
    w_p = float(weights.progression) * tonal
    w_m = float(weights.mood) if target_mood is not None else 0.0
    if target_mood is not None and w_m == 0.0:
        w_m = 0.3
    w_d = float(weights.discovery) if heard_composers is not None else 0.0
    w_t = 0.3 if tempo_factor is not None else 0.0
    total = max(w_emb + w_h + w_p + w_m + w_d + w_t, 1e-9)
    # Query-side work once: the 12 rotations of its mean chroma, its normalized sequence
    # (centring and normalizing rows commute with rotating them).
    q_rolls = _rolls(_centered_unit(query.chroma_mean))  # [12, 12]
    q_seq = (
        _centered_unit(query.chroma_seq) if query.chroma_seq is not None and len(query.chroma_seq) else None
    )
    for c in candidates:
        comp: dict[str, float] = {"embedding": round(float(c.emb_sim), 4)}
        h, shift = (0.0, 0)
        if c.chroma_mean is not None:
            corr = q_rolls @ _centered_unit(c.chroma_mean)
            best = int(np.argmax(corr))
            h, shift = float(np.clip(corr[best], 0.0, 1.0)), (best if best <= 6 else best - 12)
        p = 0.0
        if c.chroma_seq is not None and q_seq is not None and len(c.chroma_seq):
            p = _best_lag(np.roll(q_seq, shift, axis=1), _centered_unit(c.chroma_seq))
        comp["harmony"] = round(h, 4)
        comp["progression"] = round(p, 4)
        s = w_emb * c.emb_sim + w_h * h + w_p * p
        if w_m:
            m = mood_similarity(
                target=target_mood,  # type: ignore[arg-type]
                valence=float(c.descriptors.get("valence") or 0.0),
                arousal=float(c.descriptors.get("arousal") or 0.0),
            )
            comp["mood"] = round(m, 4)
            s += w_m * m
        if w_t:
            t = tempo_preference(
                query_bpm=query.tempo_bpm,
                factor=float(tempo_factor or 1.0),
                candidate_bpm=c.descriptors.get("tempo_bpm"),
            )
            comp["tempo"] = round(t, 4)
            s += w_t * t
        if heard_composers is not None:
            d = 0.0 if c.composer.lower() in heard_composers else 1.0
            comp["discovery"] = d
            s += w_d * d
        c.score = float(s / total)
        c.key_shift = shift
        c.components = comp
    return sorted(candidates, key=lambda c: -c.score)


def nms(
    *, candidates: list[Candidate], one_per_track: bool = True, min_gap_s: float = 10.0
) -> list[Candidate]:
    """Non-maximum suppression over a best-first list.

    One window per track when ``one_per_track``; otherwise windows of one track whose starts
    are closer than ``min_gap_s`` (i.e. overlapping 10-s moments) are dropped.
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


def redundancy(a: Candidate, b: Candidate) -> float:
    """How much ``b`` repeats ``a`` for a listener, in [0, 1]: same composer, same era, same track."""
    r = 0.0
    if a.composer and a.composer.lower() == b.composer.lower():
        r += 0.7
    if a.era and a.era == b.era:
        r += 0.2
    if a.track_id == b.track_id:
        r += 0.1
    return min(r, 1.0)


def mmr(*, candidates: list[Candidate], k: int, lam: float = 0.7) -> list[Candidate]:
    """Maximal marginal relevance: pick ``k`` maximizing ``lam·score − (1−lam)·max redundancy``.

    Scores are the reranked scores (≈ [0, 1]); redundancy is :func:`redundancy` to the
    already chosen. ``lam = 1`` returns the top ``k`` unchanged; the default 0.7 prefers
    another composer unless the same composer's moment scores ≥ 0.27 higher.
    """
    if not candidates:
        return []
    rel = np.array([c.score for c in candidates], dtype=np.float64)
    chosen: list[int] = []
    left = list(range(len(candidates)))
    while left and len(chosen) < k:
        best_i, best_v = left[0], -np.inf
        for i in left:
            red = max((redundancy(candidates[j], candidates[i]) for j in chosen), default=0.0)
            v = lam * rel[i] - (1.0 - lam) * red
            if v > best_v + 1e-12:
                best_i, best_v = i, v
        chosen.append(best_i)
        left.remove(best_i)
    return [candidates[i] for i in chosen]


def reason(c: Candidate) -> str:
    """One line saying why ``c`` ranked, from its measured components."""
    comp = c.components
    parts = [f"sound/texture similarity {comp.get('embedding', 0):.2f}"]
    h = comp.get("harmony", 0.0)
    if h >= 0.5:
        where = _INTERVALS.get(c.key_shift, f"{c.key_shift:+d} semitones")
        parts.insert(0, f"same harmonic colour {where} ({h:.2f})")
    if comp.get("progression", 0.0) >= 0.5:
        parts.append(f"similar chord motion ({comp['progression']:.2f})")
    if "mood" in comp:
        parts.append(f"mood match {comp['mood']:.2f}")
    if "tempo" in comp:
        parts.append(f"tempo fit {comp['tempo']:.2f}")
    moved = int(comp.get("query_transposed", 0))
    if moved:
        parts.append(f"found with your clip moved {_INTERVALS.get(moved, f'{moved:+d} semitones')}")
    if comp.get("discovery") == 1.0:
        parts.append("a composer you have not heard yet")
    key = c.descriptors.get("key_index")
    if key is not None and c.descriptors.get("mode"):
        parts.append(f"in {KEY_NAMES[int(key)]} {c.descriptors['mode']}")
    return "; ".join(parts)
