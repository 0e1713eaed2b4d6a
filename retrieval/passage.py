"""Same-passage check: does the query's chord sequence line up with a candidate track somewhere?

The encoder ranks a clip's own recording first for most clean clips, but under reverb, noise or a
phone line, and for clips shorter than its 10-s window, another track's window can score a little
higher, and inside the right track a window far from the passage can win (game music repeats its
textures). The stored 10-fps chroma of each track settles both: slid over the whole track, and
at the sub-frame phase that matches the stored frames (:data:`CHROMA_PHASES`), the query's chroma
lines up almost exactly at the true passage (median mean-frame cosine 0.97 on clean clips of real
recordings) and rarely elsewhere (median 0.21 on the other top-10 tracks; measured on training
sources, bench/results/likeness.md).

:func:`check_passages` aligns the top tracks at once (:func:`align_many`; :func:`align` for one
track near a start) and gives each its best start and alignment score; :func:`passage_bonus` turns the
score into the rerank's ``passage`` term, which is zero below :data:`PASSAGE_FLOOR` so tracks that
merely share a key are not moved. Pure functions; :mod:`retrieval.search` reads the chroma.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from encoder.features import FPS
from retrieval.localize import unit_rows
from retrieval.rerank import Candidate, combined_score

#: Tracks (best first by rerank score) whose alignment is checked: the right track of a distorted
#: clip was in the encoder's top 10 for 0.98 of training-source queries where it was not first.
PASSAGE_TRACKS = 10
#: ... and for a clip that has lost its bass (a phone line), whose embedding ranks its own track lower: on
#: training sources (product, 60 phone clips) the right track sat at pool ranks 37-92 in 3 of 5 misses.
#: With 20 from the harmony source (retrieval.search), phone top-1 0.92 (10 tracks) -> 0.98 (20) -> 1.00
#: (40); 20 cost a phone clip +21 ms of CPU (p50, paired), 40 +59 ms. Clips with their bass keep 10.
PASSAGE_TRACKS_BAND_LIMITED = 20
#: How far from a track's best segments the query is slid: over the whole track. Around the 5 best
#: segments (+-5 s) the true passage was out of reach for a few clips, and a weaker line-up elsewhere in
#: the track was cited; the whole track re-found more on every distortion (training sources, product
#: top-1 over 60 clips: reverb 0.92 -> 0.97, noise 0.92 -> 0.95, 3-s clips 0.87 -> 0.92).
PASSAGE_SEARCH_S = np.inf
#: Alignment scores at or below this add nothing (the 90th percentile over wrong tracks was 0.40;
#: 0.5 kept a few more wrong tracks at 0 than 0.4 and re-found as many on training sources).
PASSAGE_FLOOR = 0.5
#: Weight of the ``passage`` term in the rerank's weighted mean (the default aspects' terms weighed
#: 2.75 together when this was tuned; 3.75 with the track-timbre term). At 0.2 the right track at its passage (alignment 0.9-1.0) still lost to another
#: track's slightly closer embedding under noise and a phone line: on training sources (a replay of the
#: product's candidates, 60 clips per cell) 2.0 lifted top-1 from 0.78 to 0.95 (noise) and 0.70 to 0.75
#: (phone), equal elsewhere.
PASSAGE_WEIGHT = 2.0
#: Frames of the moving average over the chroma: a clip cut between two 100-ms frames is off by up
#: to half a frame, which a 3-frame average partly absorbs (clean 56 -> 57 of 60 localized; the
#: sub-frame phases below do the rest).
SMOOTH_FRAMES = 3
#: Seconds either side of a segment's (centred) start where the query may line up.
SEARCH_S = 5.0
#: Sub-frame phases of the query's chroma tried (encoder.features.chroma_phases): a clip's frames sit
#: anywhere between the stored 10-fps frames, and at half a frame off its own passage lined up at 0.79
#: instead of 0.99 (training sources), below a literal repeat elsewhere that happens to sit on the grid.
CHROMA_PHASES = 4
#: Tracks whose on-grid alignment reaches this are also tried at the other phases (few wrong tracks do:
#: their 90th percentile was 0.40; the right track's 10th percentile at its passage under a phone line 0.59).
PHASE_MIN_SCORE = 0.35
#: ... at most this many of them, the best-aligned (a track's phone-band chroma is a span of its own): under
#: a phone line most of the 40 tracks checked line up at 0.35 or better, and their phases tripled the check's cost.
PHASE_MAX_SPANS = 10


@dataclass(frozen=True)
class Alignment:
    start_s: float  # where the query's first frame lines up in the track
    score: float  # mean frame cosine there, in [-1, 1]
    shift: int  # semitones the query was rolled by


def smooth(chroma: np.ndarray, frames: int = SMOOTH_FRAMES) -> np.ndarray:
    """Moving average of ``chroma [T, 12]`` over ``frames`` rows (edges repeated) → ``[T, 12]`` float64."""
    x = np.asarray(chroma, dtype=np.float64)
    if frames <= 1 or len(x) == 0:
        return x
    padded = np.concatenate(
        [np.repeat(x[:1], frames // 2, axis=0), x, np.repeat(x[-1:], frames - 1 - frames // 2, axis=0)]
    )
    out = padded[: len(x)].copy()
    for i in range(1, frames):  # a sum of shifted copies: cheaper than a cumulative sum for a few frames
        out += padded[i : i + len(x)]
    return out / frames


def centred_start(segment_start_s: float, query_frames: int, window_frames: int) -> float:
    """Where to centre the search for a clip of ``query_frames`` found by a segment at
    ``segment_start_s``: a clip shorter than the window most likely sits in its middle."""
    return segment_start_s + max(0.0, (window_frames - query_frames) / FPS / 2)


@dataclass(frozen=True)
class _Span:
    """One track's stretch to compare: the lags within reach of its approximate starts."""

    lags: np.ndarray  # [hi - lo + 1] bool: which lags from ``lo`` are within reach of a start
    lo: int  # first lag (frame)
    track: np.ndarray  # [hi - lo + Tq, 12] unit rows of the smoothed track from ``lo`` (0 past its end)


def _span(track_chroma: np.ndarray, starts: list[float], tq: int, search_s: float) -> _Span | None:
    """The frames of ``track_chroma`` that the lags within ±``search_s`` of ``starts`` reach, smoothed and
    as float32 unit rows (None when no lag is in the track)."""
    n = len(track_chroma)
    if not n or not starts:
        return None
    reach = n if search_s >= n / FPS else int(round(search_s * FPS))
    lags = np.zeros(n, dtype=bool)
    for a in starts:
        c = int(round(a * FPS))
        lags[max(0, c - reach) : max(0, min(n, c + reach + 1))] = True
    idx = np.flatnonzero(lags)
    if not len(idx):
        return None
    lo, hi = int(idx[0]), int(idx[-1])
    # Only the stretch the lags reach is smoothed and compared (plus the smoothing's margin).
    m = SMOOTH_FRAMES // 2
    a0, a1 = max(0, lo - m), min(n, hi + tq + m)
    got = unit_rows(smooth(track_chroma[a0:a1]))[lo - a0 :]
    t = np.zeros((hi - lo + tq, got.shape[1]), np.float32)
    t[: len(got)] = got[: len(t)]
    return _Span(lags[lo : hi + 1], lo, t)


def _diagonal_means(q: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Mean row cosine of unit rows ``q [Tq, 12]`` against ``t [L, 12]`` starting at each offset
    ``0..L - Tq`` → ``[L - Tq + 1]``: one float32 matrix product and a strided diagonal sum (over
    ten whole tracks 0.9 ms; float64 took 1.6, an FFT per chroma bin 2.5)."""
    tq = len(q)
    sim = np.ascontiguousarray(q.astype(np.float32) @ t.T)  # [Tq, L]
    rs, cs = sim.strides
    diag = np.lib.stride_tricks.as_strided(
        sim, shape=(tq, len(t) - tq + 1), strides=(rs + cs, cs), writeable=False
    )
    return diag.sum(axis=0) / tq


def _align_spans(
    *,
    query_chroma: np.ndarray,
    spans: list[_Span | None],
    shifts: list[list[int]],
    best: list[Alignment],
    later_s: float = 0.0,
) -> list[Alignment]:
    """``best`` improved by the line-ups of ``query_chroma`` over each of ``spans`` under each of its ``shifts``.
    The spans are laid end to end so that a shift costs one matrix product for all of them (per
    track, numpy's call overhead was most of the check's cost); ``later_s``: how much later than the
    query's start its frames sit (a sub-frame phase), taken off the start found."""
    out = list(best)
    q0 = smooth(query_chroma)
    for shift in dict.fromkeys(s for sh, sp in zip(shifts, spans, strict=True) if sp for s in sh):
        jobs = [i for i, (sh, sp) in enumerate(zip(shifts, spans, strict=True)) if sp and shift in sh]
        # Each span holds its lags plus Tq - 1 rows, so no line-up runs from one track into the next.
        scores = _diagonal_means(
            unit_rows(np.roll(q0, shift, axis=1)),
            np.concatenate([spans[i].track for i in jobs]),  # type: ignore[union-attr]
        )
        offset = 0
        for i in jobs:
            sp = spans[i]
            assert sp is not None
            got = scores[offset : offset + len(sp.lags)].copy()
            offset += len(sp.track)
            got[~sp.lags] = -np.inf
            j = int(np.argmax(got))
            if got[j] > out[i].score + 1e-6:
                out[i] = Alignment(round((sp.lo + j) / FPS - later_s, 3), float(got[j]), shift)
    return out


def align_many(
    *,
    query_chroma: np.ndarray,
    tracks: list[tuple[np.ndarray, Iterable[float], Iterable[int]]],
    search_s: float = SEARCH_S,
) -> list[Alignment]:
    """:func:`align` for several ``(track_chroma, approx_starts, shifts)`` at once, with the same results."""
    starts = [[float(a) for a in st] for _, st, _ in tracks]
    out = [Alignment(st[0] if st else 0.0, -1.0, 0) for st in starts]
    if not len(query_chroma):
        return out
    spans = [_span(t[0], st, len(query_chroma), search_s) for t, st in zip(tracks, starts, strict=True)]
    shifts = [[int(s) for s in dict.fromkeys(t[2])] for t in tracks]
    return _align_spans(query_chroma=query_chroma, spans=spans, shifts=shifts, best=out)


def align(
    *,
    query_chroma: np.ndarray,
    track_chroma: np.ndarray,
    approx_starts: Iterable[float],
    shifts: Iterable[int] = (0,),
    search_s: float = SEARCH_S,
) -> Alignment:
    """The best start of ``query_chroma [Tq, 12]`` in ``track_chroma [Tt, 12]`` within ±``search_s`` of any of
    ``approx_starts``, under any of ``shifts`` (the query rolled up by that many semitones); both
    chromas are smoothed (:func:`smooth`). Nothing to compare → the first start with score -1."""
    return align_many(
        query_chroma=query_chroma, tracks=[(track_chroma, approx_starts, shifts)], search_s=search_s
    )[0]


def passage_bonus(score: float, floor: float = PASSAGE_FLOOR) -> float:
    """Alignment ``score`` → the ``passage`` term in [0, 1]: 0 up to ``floor``, 1 at a perfect line-up."""
    return float(np.clip((score - floor) / (1.0 - floor), 0.0, 1.0))


def top_tracks(cands: list[Candidate], n: int = PASSAGE_TRACKS, also: Iterable[int] = ()) -> list[int]:
    """The first ``n`` distinct tracks of ``cands`` (scored, best first), then those of ``also`` (the
    tracks a second candidate source found, e.g. by harmony, whose embedding may rank them low)."""
    return list(dict.fromkeys([*list(dict.fromkeys(c.track_id for c in cands))[:n], *also]))


def check_passages(
    *,
    cands: list[Candidate],
    query_chroma: np.ndarray,
    chromas: dict[int, np.ndarray],
    window_frames: int,
    query_phases: np.ndarray | None = None,
    also: Iterable[int] = (),
    band_chromas: dict[int, np.ndarray] | None = None,
    n_tracks: int = PASSAGE_TRACKS,
) -> dict[int, Alignment]:
    """Per track of :func:`top_tracks` (the first ``n_tracks``, ``also`` included) with stored chroma: where the query lines up best in it
    (:data:`PASSAGE_SEARCH_S`). In the query's own key (or that of the
    transposition probe that found the track): the same passage is the same notes, and a chord
    pattern that lines up only once rolled to the candidate's key is likeness, not identity.
    ``query_phases [P - 1, Tq, 12]`` (the query's chroma 1..P-1 P-ths of a frame later): tried on
    the tracks that line up at :data:`PHASE_MIN_SCORE` or better, the best phase wins and the
    start moves back by its fraction of a frame. ``band_chromas``: the tracks' phone-band chroma
    (sql/009_harmony.sql), aligned too, the better line-up of the two kept: a clip through a phone
    line lines up with its passage there (training sources, passage alone over 66 tracks: phone
    top-1 0.82 -> 0.93, clean, noise and reverb unchanged)."""
    if not len(query_chroma):
        return {}
    tids: list[int] = []
    spans: list[_Span | None] = []
    shifts: list[list[int]] = []
    best: list[Alignment] = []
    bands = band_chromas or {}
    for tid in top_tracks(cands, n_tracks, also=also):
        chroma = chromas.get(tid)
        if chroma is None or not len(chroma):
            continue
        seg = max((c for c in cands if c.track_id == tid), key=lambda c: c.emb_sim)
        start = centred_start(seg.start_s, len(query_chroma), window_frames)
        for version in (chroma, bands.get(tid)):  # one span each, in the same matrix products
            if version is not None and len(version):
                tids.append(tid)
                spans.append(_span(version, [start], len(query_chroma), PASSAGE_SEARCH_S))
                shifts.append(list(dict.fromkeys((0, int(seg.components.get("query_transposed", 0))))))
                best.append(Alignment(start, -1.0, 0))
    best = _align_spans(query_chroma=query_chroma, spans=spans, shifts=shifts, best=best)
    # The other phases, on the tracks that line up at all and in the key they lined up in.
    phases = np.zeros((0, 0, 12)) if query_phases is None else query_phases
    near = [i for i, a in enumerate(best) if a.score >= PHASE_MIN_SCORE]
    near = sorted(near, key=lambda i: -best[i].score)[:PHASE_MAX_SPANS]
    for k, chroma_k in enumerate(phases if near else (), start=1):
        best = _align_spans(
            query_chroma=chroma_k[: len(query_chroma)],
            spans=[sp if i in near else None for i, sp in enumerate(spans)],
            shifts=[[a.shift] for a in best],
            best=best,
            later_s=k / (len(phases) + 1) / FPS,
        )
    out: dict[int, Alignment] = {}
    for tid, a in zip(tids, best, strict=True):
        if tid not in out or a.score > out[tid].score:
            out[tid] = a
    return out


def add_passage_term(cands: list[Candidate], aligned: dict[int, Alignment]) -> list[Candidate]:
    """Add the ``passage`` term (:func:`passage_bonus`, weight :data:`PASSAGE_WEIGHT`) to every candidate
    (0 for tracks not checked, so every score is scaled alike) and re-sort them, best first."""
    for c in cands:
        a = aligned.get(c.track_id)
        v = passage_bonus(a.score) if a is not None else 0.0
        c.terms["passage"] = (PASSAGE_WEIGHT, v)
        if a is not None:
            c.components["passage"] = round(a.score, 4)
        c.score = combined_score(c.terms)
    return sorted(cands, key=lambda c: -c.score)
