"""Likeness 0–100: how alike a result is, judged against the library's own distribution.

``match`` (retrieval.calibration) answers "is this the same passage?", so a different piece
with the same feel reads near 0 there. Likeness answers "how alike?": the result's place
among the library's tracks, ordered by the same reranked score that orders the results, on
a log scale so that it separates the top of a large library,

    likeness = 100 · (1 − ln(1 + r) / ln(1 + n)),

where ``r`` is the number of *other* tracks whose best moment scored higher for this query
and ``n`` the number of tracks it was measured against. The nearest other track reads 100;
the 10th nearest of 1,000 reads 67; the median track of 1,000 about 10. The query's own
passage found again (``same passage``) is left out of ``r`` and ``n`` and reads 100, so the
neighbours after it are scored as if it were not there. As ``r`` only grows with a lower
score, the shown likeness never disagrees with the score order.
"""

from __future__ import annotations

import numpy as np


def likeness(*, score: float, other_best: np.ndarray, n_tracks: int) -> float:
    """Likeness in [0, 100] of a result with reranked ``score``.

    ``other_best``: the best reranked score of each other track seen for this query (its own
    track and same-passage hits left out); tracks not seen count as scoring lower.
    ``n_tracks``: how many tracks the library holds apart from same-passage hits (≥ 1).
    """
    r = int(np.count_nonzero(np.asarray(other_best, dtype=np.float64) > score + 1e-12))
    n = max(int(n_tracks), r + 1, 1)
    return float(np.clip(100.0 * (1.0 - np.log1p(r) / np.log1p(n)), 0.0, 100.0))
