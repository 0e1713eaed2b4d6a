"""Retrieval metrics: pure array → number functions, shapes in the docstrings."""

from __future__ import annotations

import numpy as np

#: A found moment counts when it is the right work and starts within this many seconds.
HIT_TOLERANCE_S = 2.5


def passage_hits(
    *,
    ranked_work: np.ndarray,
    ranked_start: np.ndarray,
    true_work: np.ndarray,
    true_start: np.ndarray,
    tol_s: float = HIT_TOLERANCE_S,
) -> np.ndarray:
    """Which ranked results re-find the query's passage.

    ``ranked_work [Q, K]`` ints (-1 = no result), ``ranked_start [Q, K]`` seconds,
    ``true_work [Q]``, ``true_start [Q]`` → ``[Q, K]`` bool: same work and ``|Δt| <= tol_s``.
    """
    ranked_work = np.asarray(ranked_work)
    ranked_start = np.asarray(ranked_start, dtype=np.float64)
    same = ranked_work == np.asarray(true_work)[:, None]
    near = np.abs(ranked_start - np.asarray(true_start, dtype=np.float64)[:, None]) <= tol_s
    return same & near & (ranked_work >= 0)


#: Median per-frame correlation of the log-mel frames above which two stretches of one
#: rendering are the same notes played again. Measured on the quality library (2026-12-01): of
#: 35 results on the right work but > 2.5 s off (noise, EQ, pitch, cross-instrument, melody
#: queries), 12 scored 0.989-1.0 at their best lag (sections the score repeats), the other 23
#: at most 0.83; of 60 random pairs of one work 4 s or more apart, non-repeats stayed ≤ 0.90.
REPEAT_MIN_CORR = 0.97


def literal_repeat(
    *,
    mel: np.ndarray,
    true_start_s: float,
    found_start_s: float,
    length_s: float,
    fps: int = 10,
    tol_s: float = HIT_TOLERANCE_S,
    min_corr: float = REPEAT_MIN_CORR,
) -> bool:
    """Whether a result away from the true start lands on the same passage played again.

    ``mel [T, M]`` are the log-mel frames of the (clean) library track. True when some start
    within ``tol_s`` of ``found_start_s`` begins a ``length_s`` stretch whose frames match the
    stretch at ``true_start_s`` with a median per-frame Pearson correlation ≥ ``min_corr``:
    a score that repeats a section makes the two moments sound identical, so no system can
    tell them apart from the clip alone.
    """
    n = int(round(length_s * fps))
    i = int(round(true_start_s * fps))
    ref = mel[i : i + n].astype(np.float64)
    if len(ref) < n // 2:
        return False
    ref = ref - ref.mean(axis=1, keepdims=True)
    ref_norm = np.linalg.norm(ref, axis=1)
    tol = int(round(tol_s * fps))
    centre = int(round(found_start_s * fps))
    for j in range(max(0, centre - tol), centre + tol + 1):
        if abs(j - i) <= tol:  # that is the true passage itself, not a repeat
            continue
        cand = mel[j : j + len(ref)].astype(np.float64)
        if len(cand) < len(ref):
            break
        cand = cand - cand.mean(axis=1, keepdims=True)
        corr = (ref * cand).sum(axis=1) / (ref_norm * np.linalg.norm(cand, axis=1) + 1e-9)  # [n]
        if float(np.median(corr)) >= min_corr:
            return True
    return False


def hit_rate_at(hits: np.ndarray, k: int) -> float:
    """``hits [Q, K]`` bool → share of queries with a hit in the first ``k``."""
    if hits.shape[0] == 0:
        return float("nan")
    return float(hits[:, :k].any(axis=1).mean())


def mrr(hits: np.ndarray) -> float:
    """``hits [Q, K]`` bool → mean reciprocal rank of the first hit (0 when none in K)."""
    if hits.shape[0] == 0:
        return float("nan")
    any_hit = hits.any(axis=1)
    first = np.argmax(hits, axis=1)
    return float(np.where(any_hit, 1.0 / (first + 1), 0.0).mean())


def precision_at_k(*, relevant: np.ndarray, k: int = 10) -> float:
    """``relevant [Q, K]`` bool (False where a rank is empty) → mean precision over the first ``k``.

    Empty ranks count as misses, so a system that returns fewer than ``k`` is not rewarded.
    """
    if relevant.shape[0] == 0:
        return float("nan")
    return float(relevant[:, :k].sum(axis=1).mean() / k)


def recall_at_k(*, found: np.ndarray, truth: np.ndarray) -> float:
    """``found [Q, k]`` and ``truth [Q, k]`` ids (-1 = empty) → mean share of the true top-k found."""
    if truth.shape[0] == 0:
        return float("nan")
    scores = []
    for f, t in zip(found, truth, strict=True):
        t_set = {int(x) for x in t if x >= 0}
        if not t_set:
            continue
        scores.append(len(t_set & {int(x) for x in f if x >= 0}) / len(t_set))
    return float(np.mean(scores)) if scores else float("nan")


def exact_top_k(
    *, queries: np.ndarray, library: np.ndarray, k: int, allowed: np.ndarray | None = None
) -> np.ndarray:
    """Exact cosine top-k by brute force.

    ``queries [Q, D]`` and ``library [N, D]`` L2-normalized float32; ``allowed [Q, N]`` bool or
    None → ``[Q, k]`` row indices into ``library`` (-1 where fewer than ``k`` are allowed).
    """
    sims = queries.astype(np.float32) @ library.astype(np.float32).T  # [Q, N]
    if allowed is not None:
        sims = np.where(allowed, sims, -np.inf)
    k_eff = min(k, sims.shape[1])
    idx = np.argpartition(-sims, k_eff - 1, axis=1)[:, :k_eff] if k_eff else np.zeros((len(sims), 0), int)
    order = np.take_along_axis(sims, idx, axis=1).argsort(axis=1)[:, ::-1]
    idx = np.take_along_axis(idx, order, axis=1)
    valid = np.isfinite(np.take_along_axis(sims, idx, axis=1))
    out = np.full((sims.shape[0], k), -1, dtype=np.int64)
    out[:, :k_eff] = np.where(valid, idx, -1)
    return out
