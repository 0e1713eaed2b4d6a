"""Literal repeats: where else in a result's track the query's passage plays again.

Game and film music loops: the passage a listener clipped often plays again later in its track, note
for note, and the clip alone cannot tell the two places apart. On held-out real recordings nearly every
re-finding miss left was such a repeat, cited at the other occurrence (bench/results/likeness_refind.md).
The same-passage check (:mod:`retrieval.passage`) keeps one line-up per track; here the query's chroma
is slid over the whole of the result's track once more, in the key it lined up in, at every sub-frame
phase and over every stored version (full band and phone band), and each other peak that lines up
nearly as well as the best one (:data:`REPEAT_MARGIN`) is another place the passage plays
(:func:`also_at`). Pure functions (:func:`add_also_at` fills results in place); :mod:`retrieval.search` calls them for
results that are the query's own passage.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from encoder.features import FPS
from retrieval.localize import unit_rows
from retrieval.passage import Alignment, smooth
from retrieval.types import Result

#: Only a result whose passage lines up this well is the query's own passage (retrieval.search's
#: OWN_PASSAGE_ALIGNMENT; likeness results have no "same passage" to repeat).
REPEAT_MIN_LINEUP = 0.8
#: Another place is the passage again when it lines up within this much of the best place. Chosen on
#: TRAINING sources (scripts/repeat_tune.py, bench/results/repeats.md; 420 clips, 7 distortions) against
#: the benchmark's independent definition of a literal repeat (clean log-mel frames correlating >= 0.97):
#: 0.005 named 18 places, 16 of them repeats; 0.01 named 23, 18 (the other 5 correlate 0.925-0.964: near
#: repeats) and cited the true moment for one more clip; 0.02 named 57, only 25 repeats. Chroma alone
#: cannot do better: a track replays its chords with its own instruments at many places.
REPEAT_MARGIN = 0.01
#: Two starts closer than this are one place (the benchmark's hit tolerance is 2.5 s).
REPEAT_GAP_S = 3.0
#: A peak must be the highest line-up within this many seconds either side (not a plateau's shoulder).
PEAK_HALF_WIDTH_S = 1.0
#: At most this many other places are named (a loop of a few seconds would otherwise list dozens).
MAX_ALSO = 4


def lineup_curve(
    *, query_versions: Sequence[np.ndarray], track_versions: Sequence[np.ndarray], shift: int
) -> tuple[np.ndarray, np.ndarray]:
    """The best mean frame cosine of any of ``query_versions`` ``[Tq, 12]`` (the query's chroma at
    successive sub-frame phases, the first on the grid) rolled by ``shift``, against any of
    ``track_versions`` ``[Tt, 12]``, at each lag ``0..Tt - 1`` (smoothed as :mod:`retrieval.passage`
    does; query rows past the track's end count 0) → ``(scores [Tt], phase [Tt])``: the score and the
    index of the phase that gave it."""
    n = max((len(t) for t in track_versions), default=0)
    best = np.full(n, -np.inf)
    phase = np.zeros(n, dtype=np.int64)
    tq = min((len(q) for q in query_versions), default=0)
    if not n or not tq:
        return best, phase
    qs = [unit_rows(np.roll(smooth(q[:tq]), shift, axis=1)).astype(np.float32) for q in query_versions]
    for t in track_versions:
        if not len(t):
            continue
        padded = np.zeros((len(t) + tq - 1, 12), np.float32)
        padded[: len(t)] = unit_rows(smooth(t))
        for k, q in enumerate(qs):
            s = np.full(n, -np.inf)
            s[: len(t)] = _diagonal_means_chunked(q, padded, len(t))
            better = s > best + 1e-9
            best[better], phase[better] = s[better], k
    return best, phase


#: Lags per matrix product in :func:`_diagonal_means_chunked`: a [Tq, LAG_CHUNK + Tq] float32 product of a
#: 10-s clip stays under 128 KB, which malloc serves from reused memory; one product over a whole track
#: (1 MB and more) was fresh memory each time, and on this VM fresh pages cost several times the arithmetic
#: (paired, a query paid +8.6-10.5 ms of thread CPU with whole-track products, load 4-6).
LAG_CHUNK = 192


def _diagonal_means_chunked(q: np.ndarray, padded: np.ndarray, n_lags: int) -> np.ndarray:
    """Mean row cosine of unit rows ``q [Tq, 12]`` against ``padded [n_lags + Tq - 1, 12]`` starting at each
    lag ``0..n_lags - 1`` → ``[n_lags]`` float64 (products of :data:`LAG_CHUNK` lags at a time)."""
    tq = len(q)
    out = np.empty(n_lags)
    for c0 in range(0, n_lags, LAG_CHUNK):
        c1 = min(n_lags, c0 + LAG_CHUNK)
        sim = np.ascontiguousarray(q @ padded[c0 : c1 + tq - 1].T)  # [Tq, c1 - c0 + Tq - 1]
        rs, cs = sim.strides
        diag = np.lib.stride_tricks.as_strided(
            sim, shape=(tq, c1 - c0), strides=(rs + cs, cs), writeable=False
        )
        out[c0:c1] = diag.sum(axis=0, dtype=np.float64) / tq
    return out


def other_peaks(
    curve: np.ndarray, *, cited_lag: int, floor: float, gap: int, half_width: int, max_n: int
) -> list[int]:
    """Lags of ``curve`` at or above ``floor``, each the highest within ``half_width`` either side and
    at least ``gap`` from ``cited_lag`` and from each other, best first, at most ``max_n``."""
    out: list[int] = []
    for j in np.argsort(-curve, kind="stable"):
        j = int(j)
        if curve[j] < floor or len(out) >= max_n:
            break
        if abs(j - cited_lag) < gap or any(abs(j - o) < gap for o in out):
            continue
        if curve[j] < curve[max(0, j - half_width) : j + half_width + 1].max():
            continue
        out.append(j)
    return out


def repeat_peaks(
    *,
    query_chroma: np.ndarray,
    query_phases: np.ndarray | None,
    track_versions: Sequence[np.ndarray],
    alignment: Alignment,
    floor: float,
    max_n: int = MAX_ALSO,
) -> list[tuple[float, float]]:
    """``(start_s, line-up)`` of the other places in the track where ``query_chroma`` lines up at
    ``floor`` or better (:func:`other_peaks`), away from ``alignment``'s start, best first."""
    phases = [] if query_phases is None else list(query_phases)
    versions = [np.asarray(query_chroma), *(p[: len(query_chroma)] for p in phases)]
    curve, phase = lineup_curve(query_versions=versions, track_versions=track_versions, shift=alignment.shift)
    if not len(curve):
        return []
    lags = other_peaks(
        curve, cited_lag=int(round(alignment.start_s * FPS)), floor=floor, gap=int(round(REPEAT_GAP_S * FPS)),
        half_width=int(round(PEAK_HALF_WIDTH_S * FPS)), max_n=max_n,
    )  # fmt: skip
    # A later phase's frames sit k / P of a frame after the query's start: the start is that much earlier.
    return [
        (round(max(0.0, (j - phase[j] / len(versions)) / FPS), 1), round(float(curve[j]), 4)) for j in lags
    ]


def also_at(
    *,
    query_chroma: np.ndarray,
    query_phases: np.ndarray | None,
    track_versions: Sequence[np.ndarray],
    alignment: Alignment,
    margin: float = REPEAT_MARGIN,
) -> list[float]:
    """Other starts (seconds, in time order) where the query's passage plays again in the track its
    ``alignment`` was found in: [] unless that line-up is the query's own passage
    (:data:`REPEAT_MIN_LINEUP`); otherwise the peaks within ``margin`` of it (:func:`repeat_peaks`)."""
    if alignment.score < REPEAT_MIN_LINEUP:
        return []
    peaks = repeat_peaks(
        query_chroma=query_chroma, query_phases=query_phases, track_versions=track_versions,
        alignment=alignment, floor=max(REPEAT_MIN_LINEUP, alignment.score - margin),
    )  # fmt: skip
    return sorted(s for s, _ in peaks)


def add_also_at(
    results: list[Result],
    *,
    query_chroma: np.ndarray,
    query_phases: np.ndarray | None,
    aligned: dict[int, Alignment],
    chromas: dict[int, np.ndarray],
    band_chromas: dict[int, np.ndarray],
) -> None:
    """Fill ``also_at`` (:func:`also_at`) in place on each result cited where the same-passage check
    (``aligned``, per track) found the query's own passage, over its track's stored ``chromas`` and
    ``band_chromas`` (those loaded for the check)."""
    for r in results:
        a = aligned.get(r.track_id)
        if a is None or a.score < REPEAT_MIN_LINEUP or abs(a.start_s - r.start) > 0.05:
            continue  # not the query's own passage, or another window of its track (all windows shown)
        versions = [v for v in (chromas.get(r.track_id), band_chromas.get(r.track_id)) if v is not None]
        r.also_at = also_at(
            query_chroma=query_chroma, query_phases=query_phases, track_versions=versions, alignment=a
        )
