"""How alike two moments are in one respect: pure functions over chroma, tempo, onsets and mood.

Each returns a value in [0, 1] (or None when a descriptor is unknown); :mod:`retrieval.rerank`
weighs them into one score. Harmony is key-invariant: the best of 12 circular shifts.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from retrieval.descriptors import loudness_unit


def unit_clip(x: float) -> float:
    """``x`` clipped to [0, 1] as a Python float: ``float(np.clip(x, 0, 1))`` without numpy's per-call
    overhead (~5 µs), which several terms of ~200 candidates per search paid (NaN stays NaN)."""
    return min(max(float(x), 0.0), 1.0)


def centered_unit(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=axis, keepdims=True)
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 1e-9)


def rolls(q: np.ndarray) -> np.ndarray:
    """``[12]`` → ``[12, 12]`` whose row ``s`` is ``np.roll(q, s)``."""
    idx = (np.arange(12)[None, :] - np.arange(12)[:, None]) % 12
    return q[idx]


def harmonic_similarity(*, query: np.ndarray, candidate: np.ndarray) -> tuple[float, int]:
    """Key-invariant similarity of two ``[12]`` mean chromas → (similarity in [0, 1], shift).

    ``shift`` (−5..6) is how many semitones the query must be transposed up to match the
    candidate: ``candidate ≈ roll(query, shift)``. Similarity is the Pearson correlation at
    the best shift, clipped at 0.
    """
    q = centered_unit(query)
    c = centered_unit(candidate)
    corr = rolls(q) @ c  # [12]: corr[s] = <roll(q, s), c>
    s = int(np.argmax(corr))
    return unit_clip(corr[s]), (s if s <= 6 else s - 12)


def progression_similarity(
    *, query: np.ndarray, candidate: np.ndarray, shift: int = 0, max_lag: int = 2
) -> float:
    """Chord-progression likeness of two chroma sequences ``[n, 12]``, ``[m, 12]`` → [0, 1].

    The query is transposed by ``shift``; rows are centred and normalized; the score is the
    best, over lags of ±``max_lag`` rows, mean row cosine of the overlap (clipped at 0).
    """
    q = centered_unit(np.roll(np.asarray(query, dtype=np.float64), shift, axis=1))
    return best_lag(q, centered_unit(np.asarray(candidate, dtype=np.float64)), max_lag)


def best_lag(q: np.ndarray, c: np.ndarray, max_lag: int = 2) -> float:
    """Best mean row cosine over lags of already centred, unit rows ``q [n, 12]``, ``c [m, 12]``."""
    best = 0.0
    for lag in range(-max_lag, max_lag + 1):
        qa = q[max(0, -lag) :]
        ca = c[max(0, lag) :]
        n = min(len(qa), len(ca))
        if n < max(2, min(len(q), len(c)) // 2):
            continue
        best = max(best, float(np.einsum("ij,ij->", qa[:n], ca[:n]) / n))
    return unit_clip(best)


def mood_similarity(*, target: tuple[float, float], valence: float, arousal: float) -> float:
    """1 at the target (valence, arousal), 0 at the opposite corner of the [−1, 1]² square."""
    d = np.hypot(valence - target[0], arousal - target[1])
    return unit_clip(1.0 - d / (2.0 * np.sqrt(2.0)))


def time_of_day_fit(
    *, target: tuple[float, float, float], valence: float, arousal: float, loudness_db: float | None
) -> float:
    """1 at the (valence, arousal, loudness unit) target, 0 at the opposite corner of the [−1, 1]³ cube.

    Loudness is on the mood scale (:func:`retrieval.descriptors.loudness_unit`); unknown loudness
    counts as the scale's middle.
    """
    loud = loudness_unit(loudness_db) if loudness_db is not None else 0.0
    d = np.sqrt((valence - target[0]) ** 2 + (arousal - target[1]) ** 2 + (loud - target[2]) ** 2)
    return unit_clip(1.0 - d / (2.0 * np.sqrt(3.0)))


def tempo_preference(*, query_bpm: float | None, factor: float, candidate_bpm: float | None) -> float:
    """1 when the candidate's tempo is the query's × ``factor``, falling to 0 an octave away."""
    if not query_bpm or not candidate_bpm:
        return 0.5
    return unit_clip(1.0 - abs(np.log2(candidate_bpm / (query_bpm * factor))))


def brightness_similarity(*, query_hz: float | None, candidate_hz: float | None) -> float | None:
    """1 at the same spectral centroid, 0 a factor of 2 (an octave of brightness) apart; None if unknown."""
    if not query_hz or not candidate_hz or query_hz <= 0 or candidate_hz <= 0:
        return None
    return unit_clip(1.0 - abs(np.log2(candidate_hz / query_hz)))


def timbre_similarity(query: np.ndarray, candidate: np.ndarray) -> float:
    """Two unit timbre vectors (encoder/timbre.py) → (1 + cosine) / 2 in [0, 1]: linear in the cosine,
    so the fitted weight of the timbre term (encoder/timbre_fit.py) means the same in the rerank."""
    return unit_clip(0.5 + 0.5 * float(np.dot(query, candidate)))


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
        parts.append(unit_clip(1.0 - abs(r) / 2.0))
    return float(sum(parts) / len(parts)) if parts else None  # np.mean's arithmetic without its ~5 µs a call


def melody_similarity(*, query: np.ndarray, candidate: np.ndarray, shift: int = 0, max_lag: int = 2) -> float:
    """The line of the strongest pitch class per row of two chroma sequences ``[n, 12]``, ``[m, 12]`` → [0, 1].

    Share of rows (best lag of ±``max_lag``) whose strongest pitch class agrees once the query
    is moved by ``shift``, rescaled so chance (1/12) reads 0. A coarse proxy for the tune: the
    strongest pitch class is often the melody, sometimes the bass.
    """
    return line_agreement(melody_line(query, shift), melody_line(candidate), max_lag)


def melody_line(seq: np.ndarray, shift: int = 0) -> np.ndarray:
    """The strongest pitch class per row of ``seq [n, 12]`` moved by ``shift`` semitones → ``[n]``.

    A reranker computes the query's once per shift, not once per candidate.
    """
    return np.argmax(np.roll(np.asarray(seq), shift, axis=1), axis=1)


def line_agreement(q: np.ndarray, c: np.ndarray, max_lag: int = 2) -> float:
    """:func:`melody_similarity` of two lines (:func:`melody_line`)."""
    best = 0.0
    for lag in range(-max_lag, max_lag + 1):
        qa, ca = q[max(0, -lag) :], c[max(0, lag) :]
        n = min(len(qa), len(ca))
        if n < max(2, min(len(q), len(c)) // 2):
            continue
        best = max(best, float(np.count_nonzero(qa[:n] == ca[:n])) / n)
    return unit_clip((best - 1.0 / 12.0) / (11.0 / 12.0))


# -- the same terms for many candidates at once (a search reranks 100-200 of them) --------------------


def harmonic_many(q_rolls: np.ndarray, means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`harmonic_similarity` of one query against ``means [N, 12]``, given the query's
    ``rolls(centered_unit(query)) [12, 12]`` → (similarity ``[N]`` in [0, 1], shift ``[N]`` in −5..6)."""
    corr = centered_unit(means) @ q_rolls.T  # [N, 12]: corr[k, s] = <roll(q, s), c_k>
    best = np.argmax(corr, axis=1)
    sim = np.clip(corr[np.arange(len(best)), best], 0.0, 1.0)
    return sim, np.where(best <= 6, best, best - 12)


def _overlaps_many(
    q: np.ndarray, c: np.ndarray, max_lag: int
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """``q [n, ...]`` and every ``c [N, m, ...]`` overlapped at each lag of ±``max_lag`` rows that leaves at
    least 2 rows and half the shorter one (the rule of :func:`best_lag`): (q's rows, c's rows, their count)."""
    for lag in range(-max_lag, max_lag + 1):
        qa, ca = q[max(0, -lag) :], c[:, max(0, lag) :]
        n = min(len(qa), ca.shape[1])
        if n >= max(2, min(len(q), c.shape[1]) // 2):
            yield qa[:n], ca[:, :n], n


def best_lag_many(q: np.ndarray, c: np.ndarray, max_lag: int = 2) -> np.ndarray:
    """:func:`best_lag` of ``q [n, 12]`` against each of ``c [N, m, 12]`` (centred, unit rows) → ``[N]``."""
    best = np.zeros(len(c))
    for qa, ca, n in _overlaps_many(q, c, max_lag):
        best = np.fmax(best, np.einsum("ij,kij->k", qa, ca) / n)  # fmax: as max() skips a NaN
    return np.clip(best, 0.0, 1.0)


def line_agreement_many(q: np.ndarray, c: np.ndarray, max_lag: int = 2) -> np.ndarray:
    """:func:`line_agreement` of the line ``q [n]`` against each of the lines ``c [N, m]`` → ``[N]``."""
    best = np.zeros(len(c))
    for qa, ca, n in _overlaps_many(q, c, max_lag):
        best = np.maximum(best, np.count_nonzero(qa == ca, axis=1) / n)
    return np.clip((best - 1.0 / 12.0) / (11.0 / 12.0), 0.0, 1.0)
