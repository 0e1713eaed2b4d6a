"""Moment paths: N passages stepping from moment A to moment B, each close to the last, moving toward B.

The pure middle is :func:`plan_path` (indices into a candidate pool); :func:`candidate_pool` is the
thin database read (the stored windows nearest each waypoint between A and B, through the HNSW
index); :func:`moment_path` ties them to two library moments. Step likeness is the cosine
similarity of embeddings to the previous step, clipped to [0, 1] (the first step is A itself: 1.0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import psycopg
from pgvector import Vector

from cadenza.db import Database, autocommit
from cadenza.errors import InputError
from encoder.protocols import MomentEmbedder
from encoder.windowing import DEFAULT_WINDOWING
from retrieval.moment_map import as_vector, unit
from retrieval.moment_query import Moment
from retrieval.moment_query import moment as load_moment

MIN_STEPS, MAX_STEPS = 2, 20
#: Windows fetched near each waypoint: the pool the path picks from.
PER_WAYPOINT = 40
#: Weight of "close to the last step" against "at the waypoint toward B".
CONTINUITY = 0.5
#: Penalty for a second window of a track already on the path (variety, unless nothing else fits).
REPEAT_TRACK_PENALTY = 0.3


@dataclass(frozen=True)
class Step:
    track_id: int
    start: float
    end: float
    title: str
    likeness: float  # to the previous step

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def waypoints(*, a: np.ndarray, b: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` unit vectors from ``a`` to ``b`` (both ends included), evenly along the chord."""
    alphas = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    return unit((1 - alphas) * unit(a)[None, :] + alphas * unit(b)[None, :])


def plan_path(
    *,
    a: np.ndarray,
    b: np.ndarray,
    pool: np.ndarray,
    pool_tracks: np.ndarray,
    pool_starts: np.ndarray,
    steps: int,
    ends: tuple[tuple[int, float], tuple[int, float]] | None = None,
) -> list[int]:
    """Indices into ``pool`` ``[n, d]`` for the ``steps - 2`` passages between A and B.

    Greedy along the waypoints: each step is the unused window that best mixes closeness to its
    waypoint with closeness to the previous step, never farther from B than the previous step
    was (while any such window is left), never overlapping a window already on the path (nor A's
    or B's, ``ends`` = ((track, start) of A, (track, start) of B)), preferring tracks not used yet.
    """
    if steps < MIN_STEPS:
        raise InputError(f"a path has at least {MIN_STEPS} steps (the two ends)")
    if steps == 2 or len(pool) == 0:
        return []
    pool_u = unit(pool)
    targets = waypoints(a=a, b=b, steps=steps)[1:-1]
    to_b = pool_u @ unit(b)
    taken: list[tuple[int, float]] = list(ends or ())
    used_tracks = {t for t, _ in taken}
    prev = unit(a)
    chosen: list[int] = []
    for target in targets:
        score = pool_u @ target + CONTINUITY * (pool_u @ prev)
        score = score - REPEAT_TRACK_PENALTY * np.isin(pool_tracks, list(used_tracks))
        blocked = np.zeros(len(pool), dtype=bool)
        for t, s in taken:
            blocked |= (pool_tracks == t) & (np.abs(pool_starts - s) < DEFAULT_WINDOWING.window_s)
        blocked[chosen] = True
        forward = to_b >= float(prev @ unit(b)) - 1e-6
        allowed = ~blocked & forward
        if not allowed.any():
            allowed = ~blocked
        if not allowed.any():
            break  # the pool is used up: a shorter path rather than a repeated passage
        i = int(np.argmax(np.where(allowed, score, -np.inf)))
        chosen.append(i)
        taken.append((int(pool_tracks[i]), float(pool_starts[i])))
        used_tracks.add(int(pool_tracks[i]))
        prev = pool_u[i]
    return chosen


class PoolRow(NamedTuple):
    """A window the path may step on."""

    id: int
    track_id: int
    start_s: float
    end_s: float
    title: str
    embedding: Vector


def candidate_pool(
    conn: psycopg.Connection, *, targets: np.ndarray, model_version: str, per_target: int = PER_WAYPOINT
) -> list[PoolRow]:
    """The windows nearest each waypoint, each once."""
    seen: dict[int, PoolRow] = {}
    for t in targets:
        for r in conn.execute(
            "SELECT s.id, s.track_id, s.start_s, s.end_s, t.title, s.embedding FROM segments s"
            " JOIN tracks t ON t.id = s.track_id WHERE s.model_version = %s ORDER BY s.embedding <=> %s LIMIT %s",
            (model_version, t, per_target),
        ).fetchall():
            seen.setdefault(int(r[0]), PoolRow(*r))
    return list(seen.values())


def moment_path(
    *, db: Database, embedder: MomentEmbedder, start: tuple[int, float], end: tuple[int, float], steps: int
) -> list[Step]:
    """The path from the library moment ``start`` (track id, seconds) to ``end``, ``steps`` passages long
    (fewer only when the library has too few other windows)."""
    if not MIN_STEPS <= steps <= MAX_STEPS:
        raise InputError(f"steps must be between {MIN_STEPS} and {MAX_STEPS}")
    mv = embedder.model_version
    with autocommit(db) as conn:
        ma = load_moment(conn, track_id=start[0], start_s=start[1], model_version=mv, embedder=embedder)
        mb = load_moment(conn, track_id=end[0], start_s=end[1], model_version=mv, embedder=embedder)
        a, b = unit(ma.profile.embedding), unit(mb.profile.embedding)
        rows = (
            candidate_pool(conn, targets=waypoints(a=a, b=b, steps=steps)[1:-1], model_version=mv)
            if steps > 2
            else []
        )
    pool = np.stack([as_vector(r.embedding) for r in rows]) if rows else np.zeros((0, a.size), np.float32)
    picked = plan_path(
        a=a, b=b, pool=pool, pool_tracks=np.array([int(r.track_id) for r in rows], dtype=np.int64),
        pool_starts=np.array([float(r.start_s) for r in rows], dtype=np.float32), steps=steps,
        ends=((start[0], float(start[1])), (end[0], float(end[1]))),
    )  # fmt: skip
    out = [_step(ma, 1.0)]
    prev = a
    for i in picked:
        v = unit(pool[i])
        out.append(_step(rows[i], _like(prev, v)))
        prev = v
    out.append(_step(mb, _like(prev, b)))
    return out


def _step(place: Moment | PoolRow, likeness: float) -> Step:
    return Step(
        int(place.track_id),
        round(float(place.start_s), 2),
        round(float(place.end_s), 2),
        str(place.title),
        likeness,
    )


def _like(x: np.ndarray, y: np.ndarray) -> float:
    return round(float(np.clip(float(unit(x) @ unit(y)), 0.0, 1.0)), 3)
