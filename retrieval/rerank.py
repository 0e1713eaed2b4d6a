"""Reranking: one score per candidate from the learned embedding and the measured aspects. Pure.

The ANN search ranks by embedding similarity only. Here each candidate also gets a
key-invariant harmonic similarity (best of 12 circular shifts of the mean chroma, shift
recorded), a chord-progression likeness (the compact chroma sequences compared under that
shift, best lag), and optional mood / tempo / discovery terms. The final score is their
weighted mean; ``components`` keeps every term so the explanation can say why.

The listener's aspect weights (:class:`retrieval.types.Aspects`: sound, harmony, rhythm,
melody) scale those terms, so "same sound, any harmony" ranks by the sound terms alone.

Each aspect's similarity is in :mod:`retrieval.similarity`; spreading the ranked list across
tracks, composers and eras is :mod:`retrieval.diversity`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrieval.descriptors import KEY_NAMES
from retrieval.similarity import (
    best_lag_many,
    brightness_similarity,
    centered_unit,
    harmonic_many,
    line_agreement_many,
    melody_line,
    mood_similarity,
    rhythm_similarity,
    rolls,
    tempo_preference,
    timbre_similarity,
    time_of_day_fit,
)
from retrieval.types import Aspects, Weights

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

#: Base weights of the measured aspect terms next to ``Weights`` (embedding 1, harmony 0.35,
#: progression 0.15): small, so the learned embedding leads unless the listener weighs an
#: aspect up ("only the rhythm"). The timbre term's weight is fitted (encoder/timbre_fit.py,
#: on training sources only) and saved with the timbre model; this one applies when a
#: candidate has no timbre vector yet (brightness stands in) or the model carries no weight.
TIMBRE_WEIGHT = 0.1
RHYTHM_WEIGHT = 0.15
MELODY_WEIGHT = 0.1


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
    brightness_hz: float | None = None  # spectral centroid
    onset_density: float | None = None  # onsets per second
    #: Unit timbre/production vector [d] (encoder/timbre.py) and the model version it comes from.
    timbre: np.ndarray | None = None
    timbre_version: str = ""
    #: Weight of the timbre term next to the embedding's 1 (fitted with the timbre model).
    timbre_weight: float = TIMBRE_WEIGHT
    #: Weight of the track-sound term (the query window against the candidate's whole track),
    #: fitted with the timbre model; 0 = not used.
    track_timbre_weight: float = 0.0
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
    timbre: np.ndarray | None = None  # [d_t] unit timbre vector (None before migration 008's reindex)
    timbre_version: str | None = None
    #: Mean timbre vector of the candidate's whole track [d_t] (sql/012; not unit length).
    track_timbre: np.ndarray | None = None
    descriptors: dict[str, Any] = field(default_factory=dict)
    score: float = 0.0
    key_shift: int = 0
    components: dict[str, float] = field(default_factory=dict)
    #: term → (weight, value) as scored: ``score`` is their weighted mean (:func:`combined_score`),
    #: so a ranking without one term (a context switch turned off) is recomputed exactly.
    terms: dict[str, tuple[float, float]] = field(default_factory=dict)


def combined_score(terms: Mapping[str, tuple[float, float]], *, without: Collection[str] = ()) -> float:
    """The weighted mean of ``terms`` (name → (weight, value)), leaving out the names in ``without``.

    One summation order for every caller: the score with a term left out is bit for bit the score
    of a run that never had that term.
    """
    s, total = 0.0, 0.0
    for name, (w, v) in terms.items():
        if name not in without:
            s += w * v
            total += w
    return s / max(total, 1e-9)


def aspect_scores(components: dict[str, float]) -> dict[str, float]:
    """The four aspects of likeness of one result from its rerank ``components``, each in [0, 1]."""
    sound = [components.get("embedding", 0.0)] + [
        components[k] for k in ("timbre", "timbre_track") if k in components
    ]
    return {
        "sound": round(float(np.mean(sound)), 3),
        "harmony": round(0.7 * components.get("harmony", 0.0) + 0.3 * components.get("progression", 0.0), 3),
        "rhythm": round(float(components.get("rhythm", 0.0)), 3),
        "melody": round(float(components.get("melody", 0.0)), 3),
    }


def chroma_terms(
    candidates: list[Candidate], *, query: QueryProfile
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float | None]]:
    """Harmony ``[N]``, key shift ``[N]``, progression ``[N]`` and melody (None where unmeasurable) of
    each candidate against the query: :func:`~retrieval.similarity.harmonic_similarity`, then
    ``progression_similarity`` and ``melody_similarity`` at that shift, for all candidates at once.

    A search reranks 100-200 candidates; one by one, numpy's per-call overhead made these terms about
    half of a search (~0.3 ms a candidate). Batched, candidates share a key shift and a sequence length
    per group. The values are the one-by-one functions' up to float rounding (tests/test_rerank.py).
    """
    n = len(candidates)
    hs, shifts, ps = np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n)
    mels: list[float | None] = [None] * n
    have = [i for i, c in enumerate(candidates) if c.chroma_mean is not None]
    if have:
        means = np.stack([np.asarray(candidates[i].chroma_mean, dtype=np.float64) for i in have])
        hs[have], shifts[have] = harmonic_many(rolls(centered_unit(query.chroma_mean)), means)
    q_raw = query.chroma_seq
    if q_raw is None or not len(q_raw):
        return hs, shifts, ps, mels
    # Centring and normalizing rows commute with rotating them: the query's sequence once, rolled per shift.
    q_seq = centered_unit(q_raw)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, c in enumerate(candidates):
        if c.chroma_seq is not None and len(c.chroma_seq):
            groups.setdefault((len(c.chroma_seq), int(shifts[i])), []).append(i)
    for (_, shift), idx in groups.items():
        raw = np.stack([np.asarray(candidates[i].chroma_seq, dtype=np.float64) for i in idx])  # [G, m, 12]
        ps[idx] = best_lag_many(np.roll(q_seq, shift, axis=1), centered_unit(raw))
        agree = line_agreement_many(melody_line(q_raw, shift), np.argmax(raw, axis=2))
        for i, a in zip(idx, agree, strict=True):
            mels[i] = float(a)
    return hs, shifts, ps, mels


def score_candidates(
    *,
    candidates: list[Candidate],
    query: QueryProfile,
    weights: Weights,
    aspects: Aspects | None = None,
    target_mood: tuple[float, float] | None = None,
    tempo_factor: float | None = None,
    unheard_composers: set[str] | None = None,
    heard_composers: set[str] | None = None,
    time_target: tuple[float, float, float] | None = None,
    time_weight: float = 0.0,
) -> list[Candidate]:
    """Fill ``score``, ``key_shift``, ``components`` and ``terms`` of each candidate; return them best first.

    ``weights`` is a :class:`retrieval.types.Weights`, ``aspects`` a :class:`retrieval.types.Aspects`
    (None = all 1): sound scales the embedding, timbre and track-sound terms, harmony the harmony and
    progression terms, rhythm and melody their own. Harmony terms are scaled by the query's
    tonalness (a drum loop has no key to match). ``heard_composers`` (lower-case) enables the
    discovery term: 1 for a composer the listener has not played yet. ``time_target`` (valence,
    arousal, loudness unit) with ``time_weight`` > 0 adds the time-of-day term
    (:func:`time_of_day_fit`; see :mod:`retrieval.context`).
    """
    tonal = float(np.clip(query.tonalness * 1.5, 0.0, 1.0))
    a_sound, a_harm, a_rhythm, a_mel = (
        (1.0, 1.0, 1.0, 1.0)
        if aspects is None
        else (float(aspects.sound), float(aspects.harmony), float(aspects.rhythm), float(aspects.melody))
    )
    w_emb = float(weights.embedding) * a_sound
    w_tim = float(query.timbre_weight) * a_sound
    w_trk = float(query.track_timbre_weight) * a_sound
    w_h = float(weights.harmony) * tonal * a_harm
    w_p = float(weights.progression) * tonal * a_harm
    w_r = RHYTHM_WEIGHT * a_rhythm
    w_mel = MELODY_WEIGHT * tonal * a_mel
    w_m = float(weights.mood) if target_mood is not None else 0.0
    if target_mood is not None and w_m == 0.0:
        w_m = 0.3
    w_d = float(weights.discovery) if heard_composers is not None else 0.0
    w_t = 0.3 if tempo_factor is not None else 0.0
    w_tod = float(time_weight) if time_target is not None else 0.0
    hs, shifts, ps, mels = chroma_terms(candidates, query=query)
    for k, c in enumerate(candidates):
        comp: dict[str, float] = {"embedding": round(float(c.emb_sim), 4)}
        h, shift, p, mel = float(hs[k]), int(shifts[k]), float(ps[k]), mels[k]
        comp["harmony"] = round(h, 4)
        comp["progression"] = round(p, 4)
        # An aspect that cannot be measured for this pair counts as neutral (0.5), not as a miss.
        # Timbre: the timbre vectors when both come from the same model; a segment not yet
        # reindexed (no vector) falls back to brightness alone.
        tim = (
            timbre_similarity(query.timbre, c.timbre)
            if query.timbre is not None and c.timbre is not None and c.timbre_version == query.timbre_version
            else brightness_similarity(
                query_hz=query.brightness_hz, candidate_hz=c.descriptors.get("brightness_hz")
            )
        )
        if tim is not None:
            comp["timbre"] = round(tim, 4)
        # The query window against the candidate's whole track: production, more than one moment.
        trk = (
            timbre_similarity(query.timbre, c.track_timbre / max(float(np.linalg.norm(c.track_timbre)), 1e-9))
            if w_trk and query.timbre is not None and c.track_timbre is not None
            and c.timbre_version == query.timbre_version
            else None
        )  # fmt: skip
        if trk is not None:
            comp["timbre_track"] = round(trk, 4)
        rhy = rhythm_similarity(
            query_bpm=query.tempo_bpm, candidate_bpm=c.descriptors.get("tempo_bpm"),
            query_onsets=query.onset_density, candidate_onsets=c.descriptors.get("onset_density"),
        )  # fmt: skip
        if rhy is not None:
            comp["rhythm"] = round(rhy, 4)
        if mel is not None:
            comp["melody"] = round(mel, 4)
        terms: dict[str, tuple[float, float]] = {
            "embedding": (w_emb, float(c.emb_sim)),
            "harmony": (w_h, h),
            "progression": (w_p, p),
            "timbre": (w_tim, 0.5 if tim is None else tim),
            "timbre_track": (w_trk, 0.5 if trk is None else trk),
            "rhythm": (w_r, 0.5 if rhy is None else rhy),
            "melody": (w_mel, 0.5 if mel is None else mel),
        }
        valence = float(c.descriptors.get("valence") or 0.0)
        arousal = float(c.descriptors.get("arousal") or 0.0)
        if w_m:
            m = mood_similarity(target=target_mood, valence=valence, arousal=arousal)  # type: ignore[arg-type]
            comp["mood"] = round(m, 4)
            terms["mood"] = (w_m, m)
        if w_t:
            t = tempo_preference(
                query_bpm=query.tempo_bpm,
                factor=float(tempo_factor or 1.0),
                candidate_bpm=c.descriptors.get("tempo_bpm"),
            )
            comp["tempo"] = round(t, 4)
            terms["tempo"] = (w_t, t)
        if heard_composers is not None:
            d = 0.0 if c.composer.lower() in heard_composers else 1.0
            comp["discovery"] = d
            terms["discovery"] = (w_d, d)
        if w_tod:
            tod = time_of_day_fit(
                target=time_target,  # type: ignore[arg-type]
                valence=valence,
                arousal=arousal,
                loudness_db=c.descriptors.get("loudness_db"),
            )
            comp["time_of_day"] = round(tod, 4)
            terms["time_of_day"] = (w_tod, tod)
        c.score = combined_score(terms)
        c.key_shift = shift
        c.components = comp
        c.terms = terms
    return sorted(candidates, key=lambda c: -c.score)


def reason(c: Candidate) -> str:
    """One line saying why ``c`` ranked, from its measured components."""
    comp = c.components
    parts = [f"sound/texture similarity {comp.get('embedding', 0):.2f}"]
    if comp.get("timbre", 0.0) >= 0.75:
        parts.append(f"similar timbre and production ({comp['timbre']:.2f})")
    if comp.get("timbre_graph", 0.0) >= 0.5:  # retrieval.track_graph: near the best tracks' sound
        parts.append("sounds like the tracks nearest your clip")
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
    if "time_of_day" in comp:
        parts.append(f"fits the time of day {comp['time_of_day']:.2f}")
    moved = int(comp.get("query_transposed", 0))
    if moved:
        parts.append(f"found with your clip moved {_INTERVALS.get(moved, f'{moved:+d} semitones')}")
    if comp.get("discovery") == 1.0:
        parts.append("a composer you have not heard yet")
    key = c.descriptors.get("key_index")
    if key is not None and c.descriptors.get("mode"):
        parts.append(f"in {KEY_NAMES[int(key)]} {c.descriptors['mode']}")
    return "; ".join(parts)
