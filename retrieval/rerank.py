"""Reranking and diversity: pure functions over candidate lists.

The ANN search ranks by embedding similarity only. Here each candidate also gets a
key-invariant harmonic similarity (best of 12 circular shifts of the mean chroma, shift
recorded), a chord-progression likeness (the compact chroma sequences compared under that
shift, best lag), and optional mood / tempo / discovery terms. The final score is their
weighted mean; ``components`` keeps every term so the explanation can say why.

The listener's aspect weights (:class:`retrieval.types.Aspects`: sound, harmony, rhythm,
melody) scale those terms, so "same sound, any harmony" ranks by the sound terms alone.

Diversity: :func:`nms` keeps one window per track (or at least non-overlapping windows),
:func:`mmr` trades relevance against composer/era redundancy, by the request's ``diversity``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from encoder.windowing import DEFAULT_WINDOWING
from retrieval.descriptors import KEY_NAMES, loudness_unit

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
#: aspect up ("only the rhythm").
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
    #: term → (weight, value) as scored: ``score`` is their weighted mean (:func:`combined_score`),
    #: so a ranking without one term (a context switch turned off) is recomputed exactly.
    terms: dict[str, tuple[float, float]] = field(default_factory=dict)


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


def time_of_day_fit(
    *, target: tuple[float, float, float], valence: float, arousal: float, loudness_db: float | None
) -> float:
    """1 at the (valence, arousal, loudness unit) target, 0 at the opposite corner of the [−1, 1]³ cube.

    Loudness is on the mood scale (:func:`retrieval.descriptors.loudness_unit`); unknown loudness
    counts as the scale's middle.
    """
    loud = loudness_unit(loudness_db) if loudness_db is not None else 0.0
    d = np.sqrt((valence - target[0]) ** 2 + (arousal - target[1]) ** 2 + (loud - target[2]) ** 2)
    return float(np.clip(1.0 - d / (2.0 * np.sqrt(3.0)), 0.0, 1.0))


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


def tempo_preference(*, query_bpm: float | None, factor: float, candidate_bpm: float | None) -> float:
    """1 when the candidate's tempo is the query's × ``factor``, falling to 0 an octave away."""
    if not query_bpm or not candidate_bpm:
        return 0.5
    return float(np.clip(1.0 - abs(np.log2(candidate_bpm / (query_bpm * factor))), 0.0, 1.0))


def brightness_similarity(*, query_hz: float | None, candidate_hz: float | None) -> float | None:
    """1 at the same spectral centroid, 0 a factor of 2 (an octave of brightness) apart; None if unknown."""
    if not query_hz or not candidate_hz or query_hz <= 0 or candidate_hz <= 0:
        return None
    return float(np.clip(1.0 - abs(np.log2(candidate_hz / query_hz)), 0.0, 1.0))


def rhythm_similarity(
    *,
    query_bpm: float | None,
    candidate_bpm: float | None,
    query_onsets: float | None,
    candidate_onsets: float | None,
) -> float | None:
    """Tempo (octave-tolerant: half or double time counts as the same pulse) and onset density → [0, 1].

    The mean of the two parts that are known; None when neither is.
    """  # fmt: skip
    parts = []
    if query_bpm and candidate_bpm and query_bpm > 0 and candidate_bpm > 0:
        frac = abs(np.log2(candidate_bpm / query_bpm)) % 1.0
        parts.append(1.0 - 2.0 * min(frac, 1.0 - frac))  # 1 at ×1 or ×2, 0 at ×1.41
    if query_onsets is not None and candidate_onsets is not None:
        r = np.log2((float(candidate_onsets) + 0.25) / (float(query_onsets) + 0.25))
        parts.append(float(np.clip(1.0 - abs(r) / 2.0, 0.0, 1.0)))
    return float(np.mean(parts)) if parts else None


def melody_similarity(*, query: np.ndarray, candidate: np.ndarray, shift: int = 0, max_lag: int = 2) -> float:
    """The line of the strongest pitch class per row of two chroma sequences ``[n, 12]``, ``[m, 12]`` → [0, 1].

    Share of rows (best lag of ±``max_lag``) whose strongest pitch class agrees once the query
    is moved by ``shift``, rescaled so chance (1/12) reads 0. A coarse proxy for the tune: the
    strongest pitch class is often the melody, sometimes the bass.
    """
    q = np.argmax(np.roll(np.asarray(query), shift, axis=1), axis=1)
    c = np.argmax(np.asarray(candidate), axis=1)
    best = 0.0
    for lag in range(-max_lag, max_lag + 1):
        qa, ca = q[max(0, -lag) :], c[max(0, lag) :]
        n = min(len(qa), len(ca))
        if n < max(2, min(len(q), len(c)) // 2):
            continue
        best = max(best, float(np.mean(qa[:n] == ca[:n])))
    return float(np.clip((best - 1.0 / 12.0) / (11.0 / 12.0), 0.0, 1.0))


def aspect_scores(components: dict[str, float]) -> dict[str, float]:
    """The four aspects of likeness of one result from its rerank ``components``, each in [0, 1]."""
    sound = [components.get("embedding", 0.0)] + ([components["timbre"]] if "timbre" in components else [])
    return {
        "sound": round(float(np.mean(sound)), 3),
        "harmony": round(0.7 * components.get("harmony", 0.0) + 0.3 * components.get("progression", 0.0), 3),
        "rhythm": round(float(components.get("rhythm", 0.0)), 3),
        "melody": round(float(components.get("melody", 0.0)), 3),
    }


def score_candidates(
    *,
    candidates: list[Candidate],
    query: QueryProfile,
    weights: Any,
    aspects: Any = None,
    target_mood: tuple[float, float] | None = None,
    tempo_factor: float | None = None,
    unheard_composers: set[str] | None = None,
    heard_composers: set[str] | None = None,
    time_target: tuple[float, float, float] | None = None,
    time_weight: float = 0.0,
) -> list[Candidate]:
    """Fill ``score``, ``key_shift``, ``components`` and ``terms`` of each candidate; return them best first.

    ``weights`` is a :class:`retrieval.types.Weights`, ``aspects`` a :class:`retrieval.types.Aspects`
    (None = all 1): sound scales the embedding and timbre terms, harmony the harmony and
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
    w_tim = TIMBRE_WEIGHT * a_sound
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
        # An aspect that cannot be measured for this pair counts as neutral (0.5), not as a miss.
        tim = brightness_similarity(
            query_hz=query.brightness_hz, candidate_hz=c.descriptors.get("brightness_hz")
        )
        if tim is not None:
            comp["timbre"] = round(tim, 4)
        rhy = rhythm_similarity(
            query_bpm=query.tempo_bpm, candidate_bpm=c.descriptors.get("tempo_bpm"),
            query_onsets=query.onset_density, candidate_onsets=c.descriptors.get("onset_density"),
        )  # fmt: skip
        if rhy is not None:
            comp["rhythm"] = round(rhy, 4)
        mel = None
        if (
            c.chroma_seq is not None
            and query.chroma_seq is not None
            and len(c.chroma_seq)
            and len(query.chroma_seq)
        ):
            mel = melody_similarity(query=query.chroma_seq, candidate=c.chroma_seq, shift=shift)
            comp["melody"] = round(mel, 4)
        terms: dict[str, tuple[float, float]] = {
            "embedding": (w_emb, float(c.emb_sim)),
            "harmony": (w_h, h),
            "progression": (w_p, p),
            "timbre": (w_tim, 0.5 if tim is None else tim),
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
