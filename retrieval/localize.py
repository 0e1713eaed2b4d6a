"""Localization: cite a match's start to a tenth of a second, not the 2-s segment grid.

The ANN hit is a segment starting on a 2-s grid. The query's 10-fps chroma is slid over
the track's stored 10-fps chroma within ±``search_s`` of that start (under the key shift
found by the reranker) and the lag with the highest mean frame cosine wins.
"""

from __future__ import annotations

import numpy as np

from encoder.features import FPS


def _rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 1e-6)


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
    q = _rows(np.roll(np.asarray(query_chroma), shift, axis=1))
    t = _rows(track_chroma)
    tq, tt = len(q), len(t)
    if tq == 0 or tt == 0:
        return float(approx_start_s), 0.0
    center = int(round(approx_start_s * fps))
    reach = int(round(search_s * fps))
    lo, hi = max(0, center - reach), min(tt - 1, center + reach)
    if hi < lo:
        return float(approx_start_s), 0.0
    window = t[lo : min(tt, hi + tq)]  # [W, 12]
    sim = q @ window.T  # [Tq, W]
    best_lag, best = lo, -np.inf
    for lag in range(lo, hi + 1):
        d = np.trace(sim, offset=lag - lo)  # rows i vs window rows i + (lag - lo)
        score = d / tq
        if score > best + 1e-9:
            best_lag, best = lag, score
    return best_lag / fps, float(best)
