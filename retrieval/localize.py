"""Localization: cite a match's start to a tenth of a second, not the 2-s segment grid.

The ANN hit is a segment starting on a 2-s grid. The query's 10-fps chroma is slid over
the track's stored 10-fps chroma within ±``search_s`` of that start (under a key shift)
and the lag with the highest mean frame cosine wins. :mod:`retrieval.passage` builds the
search's same-passage check and its cited starts on these.
"""

from __future__ import annotations

import numpy as np

from encoder.features import FPS


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows centred and L2-normalized (a silent row stays 0), as the localizer compares them."""
    x = x - x.mean(axis=1, keepdims=True)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 1e-6)


def lag_scores(q: np.ndarray, t: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Mean row cosine of unit rows ``q [Tq, 12]`` against ``t [Tt, 12]`` starting at each lag ``lo..hi``
    (rows past the track's end count 0) → ``[hi - lo + 1]``. One matrix product and a diagonal sum."""
    tq = len(q)
    span = np.zeros((hi - lo + tq, t.shape[1]))
    got = t[lo : hi + tq]
    span[: len(got)] = got
    sim = np.ascontiguousarray(q @ span.T)  # [Tq, W]
    n_lags = hi - lo + 1
    rs, cs = sim.strides
    diag = np.lib.stride_tricks.as_strided(sim, shape=(tq, n_lags), strides=(rs + cs, cs), writeable=False)
    return diag.sum(axis=0) / tq


def localize(
    *,
    query_chroma: np.ndarray,
    track_chroma: np.ndarray,
    approx_start_s: float,
    shift: int = 0,
    fps: float = FPS,
    search_s: float = 5.0,
) -> tuple[float, float]:
    """Best start of ``query_chroma [Tq, 12]`` inside ``track_chroma [Tt, 12]`` near ``approx_start_s``.

    Returns ``(start_s, score)``, score = mean frame cosine in [−1, 1] at that start (rows
    of the query that would fall past the track's end count as 0). When nothing can be
    compared the approximate start comes back with score 0.
    """
    q = unit_rows(np.roll(np.asarray(query_chroma, dtype=np.float64), shift, axis=1))
    t = unit_rows(np.asarray(track_chroma, dtype=np.float64))
    tq, tt = len(q), len(t)
    if tq == 0 or tt == 0:
        return float(approx_start_s), 0.0
    center = int(round(approx_start_s * fps))
    reach = int(round(search_s * fps))
    lo, hi = max(0, center - reach), min(tt - 1, center + reach)
    if hi < lo:
        return float(approx_start_s), 0.0
    scores = lag_scores(q, t, lo, hi)
    best = int(np.argmax(scores))  # the earliest of equal scores
    return (lo + best) / fps, float(scores[best])
