"""A library moment (track id + start) as a query.

The moment is re-embedded exactly: the track's file is decoded from the start for one window
and goes through the same path as an uploaded clip (:func:`retrieval.clip_query.from_audio`).
Only when the file is gone, changed or unreadable does the moment fall back to the stored
segment nearest the start (``moment_source`` "stored-segment", with the reason).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import psycopg
from pgvector import Vector

from cadenza.audio import DecodeOptions, content_hash, load_audio
from cadenza.db import f16_array
from cadenza.errors import InputError, NotFound
from encoder.features import SAMPLE_RATE
from encoder.protocols import MomentEmbedder
from encoder.timbre import shipped_timbre
from encoder.windowing import DEFAULT_WINDOWING, Windowing
from retrieval.clip_query import NOISE_LIKE_REASON, BuiltQuery, from_audio, unit
from retrieval.rerank import QueryProfile
from retrieval.store import model_mismatch, other_models, track_chroma

log = logging.getLogger(__name__)


_MOMENT_SQL = (
    "SELECT s.id, s.track_id, s.start_s, s.end_s, s.embedding, s.chroma_mean, s.chroma_seq, s.key_index, s.mode,"
    " s.key_confidence, s.tempo_bpm, s.valence, s.arousal, t.title, t.composer, t.duration_s, t.path,"
    " t.content_hash, s.brightness_hz, s.onset_density, s.timbre, t.timbre_version"
    " FROM segments s JOIN tracks t ON t.id = s.track_id"
    " WHERE s.track_id = %s AND s.model_version = %s ORDER BY abs(s.start_s - %s), s.start_s LIMIT 1"
)


class _MomentRow(NamedTuple):
    """A row of :data:`_MOMENT_SQL`: the stored segment nearest a moment's start, and its track."""

    id: int
    track_id: int
    start_s: float
    end_s: float
    embedding: Vector
    chroma_mean: list[float]
    chroma_seq: bytes | None
    key_index: int | None
    mode: str | None
    key_confidence: float | None
    tempo_bpm: float | None
    valence: float | None
    arousal: float | None
    title: str
    composer: str
    duration_s: float
    path: str
    content_hash: str
    brightness_hz: float | None
    onset_density: float | None
    timbre: Vector | None
    timbre_version: str | None


@dataclass
class Moment:
    """A library moment as a query: what the reranker compares, and where it came from."""

    segment_id: int
    track_id: int
    start_s: float
    segment_start: float  # start of the stored segment nearest start_s
    title: str
    composer: str
    end_s: float
    profile: QueryProfile  # embedding [d] unit, chroma, tempo, mood, brightness, onsets
    chroma10: np.ndarray  # [T, 12] 10-fps chroma from start_s, for localization
    key_index: int | None
    mode: str | None
    key_confidence: float | None
    moment_source: str  # "audio" (re-embedded from the file) | "stored-segment"
    timings_ms: dict[str, float] = field(default_factory=dict)
    nothing_reason: str | None = None
    fallback_reason: str | None = None  # why the stored segment stood in for the file


def moment_audio(
    *, path: str, digest: str, start_s: float, duration_s: float
) -> tuple[np.ndarray | None, str]:
    """The ``[n]`` 16-kHz samples of ``path`` from ``start_s`` for ``duration_s``, or (None, why not).

    None when the file is gone, no longer the ingested content (sha256 differs) or cannot be
    decoded: the caller then uses the stored segment.
    """
    p = Path(path)
    if not p.is_file():
        return None, "the track's audio file is gone"
    try:
        if content_hash(p) != digest:
            return None, "the track's audio file changed since it was ingested"
        return load_audio(path=p, options=DecodeOptions(offset_s=start_s, duration_s=duration_s)), ""
    except (InputError, OSError) as exc:
        return None, f"the track's audio file is unreadable ({str(exc)[:100]})"


def moment(
    conn: psycopg.Connection,
    *,
    track_id: int,
    start_s: float,
    model_version: str,
    embedder: MomentEmbedder | None = None,
) -> Moment:
    """One moment (a stored segment's length, ``embedder.windowing``: 10 s) of ``track_id`` from ``start_s``.

    Re-embedded from the file when ``embedder`` is given and the file is readable (``moment_source``
    "audio"), else the stored segment nearest ``start_s`` (current model) with the track's stored
    exact-start chroma (``moment_source`` "stored-segment").
    """
    found = conn.execute(_MOMENT_SQL, (track_id, model_version, start_s)).fetchone()
    if found is None:
        exists = conn.execute("SELECT 1 FROM tracks WHERE id = %s", (track_id,)).fetchone()
        if not exists:
            # Said where a person is, web chat or command line: no command to type.
            raise NotFound(
                f"no track {track_id} in the library (it may have been removed); "
                "choose a moment of a track the library lists"
            )
        others = other_models(conn, model_version)
        if others:
            raise model_mismatch(model_version, others)
        raise NotFound(
            f"track {track_id} has no segments for model {model_version}; it is being re-embedded, try again later"
        )
    row = _MomentRow(*found)
    # Without an encoder the stored segments say how long a moment is; they were cut with this windowing.
    w: Windowing = embedder.windowing if embedder is not None else DEFAULT_WINDOWING
    duration = float(row.duration_s)
    if not 0.0 <= start_s < max(duration - w.min_s, 0.1):
        raise InputError(
            f"track {track_id} is {duration:.1f} s long; pick a moment start between 0 and {max(duration - w.min_s, 0.0):.1f} s"
        )
    fallback: str | None = "no encoder to re-embed with"
    built: BuiltQuery | None = None
    timings: dict[str, float] = {}
    if embedder is not None:
        t0 = time.perf_counter()
        y, why = moment_audio(
            path=str(row.path), digest=str(row.content_hash), start_s=float(start_s), duration_s=w.window_s
        )
        timings["decode"] = (time.perf_counter() - t0) * 1000
        if y is not None and y.size >= w.min_s * SAMPLE_RATE:
            built = from_audio(audio=y, embedder=embedder, start_s=0.0, duration_s=w.window_s)
        else:
            fallback = why or "too little audio left after the start in the track's file"
            log.warning(
                "moment of track %s at %.1f s from its stored segment: %s", track_id, start_s, fallback
            )
    if built is not None:
        d = built.info
        profile, chroma10, end_s = built.profile, built.chroma10, float(start_s) + d["end"]
        key = (d["key_index"], d["mode"], d["key_confidence"])
        # A library moment is searched for other music, never its own passage: noise-like stays nothing.
        nothing = built.nothing_reason or (NOISE_LIKE_REASON if built.noise_like else None)
        source, fallback = "audio", None
        timings.update(built.timings_ms)
    else:
        chroma = track_chroma(conn, track_id)
        i0 = w.frames(max(0.0, start_s))
        timbre = shipped_timbre()
        same = row.timbre is not None and row.timbre_version == timbre.version
        profile = QueryProfile(
            embedding=unit(row.embedding.to_numpy()),
            chroma_mean=np.asarray(row.chroma_mean, dtype=np.float64),
            chroma_seq=f16_array(row.chroma_seq),
            tempo_bpm=row.tempo_bpm,
            valence=float(row.valence or 0.0),
            arousal=float(row.arousal or 0.0),
            brightness_hz=row.brightness_hz,
            onset_density=row.onset_density,
            timbre=row.timbre.to_numpy() if same and row.timbre is not None else None,
            timbre_version=timbre.version,
            timbre_weight=timbre.weight,
            track_timbre_weight=timbre.track_weight,
        )
        chroma10, end_s = chroma[i0 : i0 + w.window_frames], min(float(start_s) + w.window_s, duration)
        key = (row.key_index, row.mode, row.key_confidence)
        source, nothing, timings = "stored-segment", None, {}
    return Moment(
        segment_id=row.id, track_id=row.track_id, start_s=float(start_s), segment_start=float(row.start_s),
        title=row.title, composer=row.composer, end_s=end_s, profile=profile, chroma10=chroma10,
        key_index=key[0], mode=key[1], key_confidence=key[2], moment_source=source, timings_ms=timings,
        nothing_reason=nothing, fallback_reason=fallback,
    )  # fmt: skip
