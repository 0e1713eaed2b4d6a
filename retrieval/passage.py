"""Same-passage check: does the query's chord sequence line up with a candidate track somewhere?

The encoder ranks a clip's own recording first for most clean clips, but under reverb, noise or a
phone line, and for clips shorter than its 10-s window, another track's window can score a little
higher, and inside the right track a window far from the passage can win (game music repeats its
textures). The stored 10-fps chroma of each track settles both: slid over the track around each
of the track's best-scoring segments, the query's chroma lines up almost exactly at the true
passage (median mean-frame cosine 0.97 on clean clips of real recordings) and rarely elsewhere
(median 0.21 on the other top-10 tracks; measured on training sources, bench/results/likeness.md).

:func:`align` finds a track's best start and its alignment score; :func:`passage_bonus` turns the
score into the rerank's ``passage`` term, which is zero below :data:`PASSAGE_FLOOR` so tracks that
merely share a key are not moved. Pure functions; :mod:`retrieval.search` reads the chroma.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from encoder.features import FPS
from retrieval.localize import lag_scores, unit_rows
from retrieval.rerank import Candidate, combined_score

#: Tracks (best first by rerank score) whose alignment is checked: the right track of a distorted
#: clip was in the encoder's top 10 for 0.98 of training-source queries where it was not first.
PASSAGE_TRACKS = 10
#: Segments of one track (best first by embedding) around which the chroma is slid: 5 reached the
#: true passage where the track's single best segment missed it (mp3 51 -> 56 of 60, reverb 39 -> 47).
PASSAGE_SEGMENTS = 5
#: Alignment scores at or below this add nothing (the 90th percentile over wrong tracks was 0.40).
PASSAGE_FLOOR = 0.4
#: Weight of the ``passage`` term next to the embedding's 1.0 (0.1-0.3 measured alike on training
#: sources; 0.2 was best or tied on every distortion).
PASSAGE_WEIGHT = 0.2
#: Frames of the moving average over the chroma: a clip cut between two 100-ms frames is off by up
#: to half a frame, which a 3-frame average absorbs (clean 56 -> 57 of 60 localized).
SMOOTH_FRAMES = 3
#: Seconds either side of a segment's (centred) start where the query may line up.
SEARCH_S = 5.0


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
    starts = [float(a) for a in approx_starts]
    best = Alignment(starts[0] if starts else 0.0, -1.0, 0)
    n, tq = len(track_chroma), len(query_chroma)
    if not tq or not n or not starts:
        return best
    reach = int(round(search_s * FPS))
    lags = np.zeros(n, dtype=bool)  # the lags within reach of any approximate start
    for a in starts:
        c = int(round(a * FPS))
        lags[max(0, c - reach) : max(0, min(n, c + reach + 1))] = True
    idx = np.flatnonzero(lags)
    if not len(idx):
        return best
    lo, hi = int(idx[0]), int(idx[-1])
    # Only the stretch the lags reach is smoothed and compared (plus the smoothing's margin).
    m = SMOOTH_FRAMES // 2
    a0, a1 = max(0, lo - m), min(n, hi + tq + m)
    t = unit_rows(smooth(track_chroma[a0:a1]))[lo - a0 :]
    q0 = smooth(query_chroma)
    for shift in dict.fromkeys(int(s) for s in shifts):
        scores = lag_scores(unit_rows(np.roll(q0, shift, axis=1)), t, 0, hi - lo)
        scores[~lags[lo : hi + 1]] = -np.inf
        i = int(np.argmax(scores))
        if scores[i] > best.score + 1e-9:
            best = Alignment((lo + i) / FPS, float(scores[i]), shift)
    return best


def passage_bonus(score: float, floor: float = PASSAGE_FLOOR) -> float:
    """Alignment ``score`` → the ``passage`` term in [0, 1]: 0 up to ``floor``, 1 at a perfect line-up."""
    return float(np.clip((score - floor) / (1.0 - floor), 0.0, 1.0))


def top_tracks(cands: list[Candidate], n: int = PASSAGE_TRACKS) -> list[int]:
    """The first ``n`` distinct tracks of ``cands`` (scored, best first)."""
    return list(dict.fromkeys(c.track_id for c in cands))[:n]


def check_passages(
    *, cands: list[Candidate], query_chroma: np.ndarray, chromas: dict[int, np.ndarray], window_frames: int
) -> dict[int, Alignment]:
    """Per track of :func:`top_tracks` with stored chroma: where the query lines up best, around its
    :data:`PASSAGE_SEGMENTS` segments nearest by embedding. In the query's own key (or that of the
    transposition probe that found the track): the same passage is the same notes, and a chord
    pattern that lines up only once rolled to the candidate's key is likeness, not identity."""
    out: dict[int, Alignment] = {}
    if not len(query_chroma):
        return out
    for tid in top_tracks(cands):
        chroma = chromas.get(tid)
        if chroma is None or not len(chroma):
            continue
        own = sorted((c for c in cands if c.track_id == tid), key=lambda c: -c.emb_sim)[:PASSAGE_SEGMENTS]
        out[tid] = align(
            query_chroma=query_chroma, track_chroma=chroma,
            approx_starts=[centred_start(c.start_s, len(query_chroma), window_frames) for c in own],
            shifts=(0, int(own[0].components.get("query_transposed", 0))),
        )  # fmt: skip
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
