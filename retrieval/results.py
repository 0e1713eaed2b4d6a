"""The last steps of a search: calibrated match, likeness against the library, localized start → Results."""

from __future__ import annotations

import numpy as np
import psycopg

from encoder.features import FPS
from encoder.windowing import DEFAULT_WINDOWING
from retrieval.calibration import Calibration
from retrieval.clip_query import BuiltQuery
from retrieval.likeness import likeness
from retrieval.passage import Alignment, align, centred_start, passage_bonus
from retrieval.rerank import Candidate, aspect_scores, reason
from retrieval.types import Result


def matches_of(cands: list[Candidate], built: BuiltQuery, cal: Calibration | None) -> dict[int, float]:
    """Per candidate segment: the calibrated probability that it is the query's passage."""
    if cal is None:  # fewer than two tracks: no distribution to compare with; be modest
        return {c.segment_id: float(np.clip(c.emb_sim, 0.0, 1.0)) * 0.5 for c in cands}
    mu = cal.query_mean(built.profile.embedding)
    return {c.segment_id: cal.confidence(score=c.emb_sim, query_mean=mu) for c in cands}


def track_count(conn: psycopg.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM tracks").fetchone()[0])  # type: ignore[index]


def likeness_of(
    scored: list[Candidate], chosen: list[Candidate], same: frozenset[int], *, n_tracks: int
) -> dict[int, float]:
    """Per chosen segment: its likeness (retrieval.likeness) among the other tracks scored for this query."""
    best: dict[int, float] = {}
    same_tracks = {c.track_id for c in scored if c.segment_id in same}
    for c in scored:  # best first: the first row of a track is its best
        if c.track_id not in same_tracks:
            best.setdefault(c.track_id, c.score)
    n = max(n_tracks - len(same_tracks) - 1, 1)
    out: dict[int, float] = {}
    for c in chosen:
        if c.segment_id in same or c.track_id in same_tracks:
            out[c.segment_id] = 100.0
            continue
        others = np.array([v for t, v in best.items() if t != c.track_id])
        out[c.segment_id] = likeness(score=c.score, other_best=others, n_tracks=n)
    return out


def results_of(
    chosen: list[Candidate],
    built: BuiltQuery,
    chromas: dict[int, np.ndarray],
    matches: dict[int, float],
    liked: dict[int, float],
    moved: list[tuple[int, str]],
    aligned: dict[int, Alignment] | None = None,
) -> list[Result]:
    """The shown results; each start is where the query lines up in the track: ``aligned`` (the same-passage
    check of the top tracks, :mod:`retrieval.passage`) or else around the chosen segment."""
    q_len = len(built.chroma10) / FPS if len(built.chroma10) else DEFAULT_WINDOWING.window_s
    aligned = aligned or {}
    out = []
    for rank, (c, (n_moved, why)) in enumerate(zip(chosen, moved, strict=True), start=1):
        start, loc_score = c.start_s, 0.0
        chroma = chromas.get(c.track_id)
        a = aligned.get(c.track_id)
        if a is not None and not passage_bonus(a.score):
            a = None  # not the same passage: cite the moment around the segment that earned the score
        if a is None and chroma is not None and len(chroma) and len(built.chroma10):
            a = align(
                query_chroma=built.chroma10, track_chroma=chroma,
                approx_starts=[centred_start(c.start_s, len(built.chroma10), DEFAULT_WINDOWING.window_frames)],
                shifts=(0, c.key_shift),
            )  # fmt: skip
        if a is not None:
            start, loc_score = a.start_s, a.score
        duration = float(c.descriptors.get("duration_s") or c.end_s)
        comps = dict(c.components)
        comps["localization"] = round(loc_score, 4)
        out.append(
            Result(
                rank=rank, segment_id=c.segment_id, track_id=c.track_id, title=c.title, composer=c.composer,
                work=c.work, era=c.era, path=c.path, start=round(float(start), 2),
                end=round(float(min(start + q_len, duration)), 2), score=round(c.score, 4),
                match=round(matches[c.segment_id], 3), likeness=round(liked[c.segment_id], 1),
                components=comps, aspects=aspect_scores(c.components),
                descriptors={k: v for k, v in c.descriptors.items() if k != "duration_s"},
                key_shift=c.key_shift, reason=reason(c), moved=n_moved, moved_reason=why,
            )
        )  # fmt: skip
    return out


def rounded_timings(t: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in t.items()}
