"""Moment maps: how alike every 10-s window of a few tracks is to one query passage.

A pure middle (:func:`window_likeness`, :func:`strips`) between two thin database reads: the
query's nearest tracks (:func:`nearest_tracks`, an HNSW scan) and every stored window of the
tracks to draw (:func:`track_windows`). Likeness is the cosine similarity of the encoder's
embeddings, clipped to [0, 1]: the same quantity the search ranks by before reranking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import psycopg
from pgvector import Vector

from cadenza.db import Database, autocommit
from cadenza.errors import InputError
from encoder.features import SAMPLE_RATE, acoustic_features
from encoder.protocols import MomentEmbedder
from retrieval.analysis import prepare
from retrieval.query import build as build_query
from retrieval.types import SearchRequest

#: An uploaded clip's own strip covers at most this much of it (centred on the searched passage).
MAX_CLIP_STRIP_S = 120.0
#: Tracks drawn besides the query's own: enough to see where else the passage lives.
DEFAULT_MAP_TRACKS = 5
MAX_MAP_TRACKS = 12


@dataclass(frozen=True)
class Strip:
    """One track's timeline: the start of each stored window and its likeness to the query."""

    track_id: int | None  # None: the query clip itself (an upload, not a library track)
    title: str
    duration_s: float
    starts: tuple[float, ...]
    likeness: tuple[float, ...]
    own: bool = False  # the track the query passage comes from

    def to_json(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "title": self.title,
            "duration_s": round(self.duration_s, 2),
            "own": self.own,
            "windows": [{"start": s, "likeness": v} for s, v in zip(self.starts, self.likeness, strict=True)],
        }


def unit(x: np.ndarray) -> np.ndarray:
    """Rows (or one vector) scaled to unit length."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)


def window_likeness(*, query: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """``[d]`` × ``[n, d]`` → ``[n]`` cosine similarity clipped to [0, 1]."""
    if len(windows) == 0:
        return np.zeros(0, dtype=np.float32)
    return np.clip(unit(windows) @ unit(query), 0.0, 1.0).astype(np.float32)


def strips(
    *,
    query: np.ndarray,
    windows: dict[int, tuple[str, float, np.ndarray, np.ndarray]],
    order: list[int],
    own: int | None,
) -> list[Strip]:
    """The strips of ``order`` (track ids, those missing from ``windows`` skipped), own track first."""
    out = []
    for tid in order:
        if tid not in windows:
            continue
        title, duration, starts, emb = windows[tid]
        sims = window_likeness(query=query, windows=emb)
        out.append(
            Strip(
                track_id=tid, title=title, duration_s=duration,
                starts=tuple(round(float(s), 2) for s in starts),
                likeness=tuple(round(float(v), 3) for v in sims), own=tid == own,
            )
        )  # fmt: skip
    return out


def track_windows(
    conn: psycopg.Connection, track_ids: list[int], *, model_version: str
) -> dict[int, tuple[str, float, np.ndarray, np.ndarray]]:
    """track id → (title, duration, window starts ``[n]``, embeddings ``[n, d]``) for the current model."""
    if not track_ids:
        return {}
    rows = conn.execute(
        "SELECT s.track_id, t.title, t.duration_s, s.start_s, s.embedding FROM segments s"
        " JOIN tracks t ON t.id = s.track_id WHERE s.track_id = ANY(%s) AND s.model_version = %s"
        " ORDER BY s.track_id, s.start_s",
        (track_ids, model_version),
    ).fetchall()
    grouped: dict[int, list[_WindowRow]] = {}
    for r in map(_WindowRow._make, rows):
        grouped.setdefault(int(r.track_id), []).append(r)
    return {
        tid: (
            str(rs[0].title or f"Track {tid}"),
            float(rs[0].duration_s),
            np.array([float(r.start_s) for r in rs], dtype=np.float32),
            np.stack([as_vector(r.embedding) for r in rs]),
        )
        for tid, rs in grouped.items()
    }


class _WindowRow(NamedTuple):
    track_id: int
    title: str | None
    duration_s: float
    start_s: float
    embedding: Vector


def as_vector(v: Vector | np.ndarray | Sequence[float]) -> np.ndarray:
    """A pgvector value (or a plain sequence) as a float32 array."""
    return np.asarray(v.to_numpy() if hasattr(v, "to_numpy") else v, dtype=np.float32)


def nearest_tracks(
    conn: psycopg.Connection, *, query: np.ndarray, n: int, model_version: str, exclude: tuple[int, ...] = ()
) -> list[int]:
    """The ``n`` tracks holding the windows nearest the query (best first), through the HNSW index."""
    rows = conn.execute(
        "SELECT track_id FROM segments WHERE model_version = %s ORDER BY embedding <=> %s LIMIT %s",
        (model_version, unit(query), max(50, 20 * n)),
    ).fetchall()
    out: list[int] = []
    for (tid,) in rows:
        if int(tid) not in out and int(tid) not in exclude:
            out.append(int(tid))
        if len(out) == n:
            break
    return out


def clip_strip(
    *, audio: np.ndarray, embedder: MomentEmbedder, query: np.ndarray, title: str = "your clip"
) -> Strip:
    """The query clip's own strip: its 10-s windows every 2 s (as ingest cuts a library track) and
    their likeness to the query passage. ``audio``: mono at 16 kHz."""
    y = np.asarray(audio, dtype=np.float32).reshape(-1)
    frames = acoustic_features(y=prepare(y=y), sr=SAMPLE_RATE)
    win = min(embedder.windowing.window_frames, len(frames))
    cuts = embedder.windowing.track_starts(len(frames), window=win, tail=win)
    starts, embs = embedder.embed_track(frames=frames, cuts=cuts)
    sims = window_likeness(query=query, windows=np.asarray(embs))
    return Strip(
        track_id=None, title=title, duration_s=y.size / SAMPLE_RATE,
        starts=tuple(round(float(x), 2) for x in starts), likeness=tuple(round(float(v), 3) for v in sims), own=True,
    )  # fmt: skip


def clip_span(
    *, seconds: float, start_s: float, end_s: float, max_s: float = MAX_CLIP_STRIP_S
) -> tuple[float, float]:
    """The part of a clip its strip covers: all of it, or ``max_s`` centred on the passage."""
    if seconds <= max_s:
        return 0.0, seconds
    lo = min(max(0.0, (start_s + end_s) / 2 - max_s / 2), seconds - max_s)
    return lo, lo + max_s


def moment_map(
    *,
    db: Database,
    embedder: MomentEmbedder,
    request: SearchRequest,
    tracks: list[int] | None = None,
    n_tracks: int = DEFAULT_MAP_TRACKS,
    own_audio: np.ndarray | None = None,
) -> list[Strip]:
    """Strips for the query of ``request`` (a clip or a library moment): its own first (a moment's
    track, or for a clip the clip itself: ``own_audio``, else the request's audio), where the passage
    recurs; then ``tracks`` or else the ``n_tracks`` nearest other tracks."""
    if not 1 <= n_tracks <= MAX_MAP_TRACKS:
        raise InputError(f"a moment map draws between 1 and {MAX_MAP_TRACKS} tracks besides the query's own")
    with autocommit(db) as conn:
        built = build_query(conn, request=request, embedder=embedder)
        q = built.profile.embedding
        own = int(request.moments[0].track_id) if request.moments else None
        others = (
            [t for t in tracks if t != own]
            if tracks is not None
            else nearest_tracks(
                conn, query=q, n=n_tracks, model_version=embedder.model_version, exclude=(own,) if own else ()
            )
        )
        order = ([own] if own is not None else []) + others
        windows = track_windows(conn, order, model_version=embedder.model_version)
    out = strips(query=q, windows=windows, order=order, own=own)
    clip = own_audio if own_audio is not None else request.audio
    if own is None and clip is not None:
        out.insert(0, clip_strip(audio=clip, embedder=embedder, query=q))
    return out
