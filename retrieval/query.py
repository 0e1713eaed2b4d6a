"""Turning a search request into a query profile: embedding, harmony, 10-fps chroma.

A clip is leveled like library tracks, featurized, and (with no start given) reduced to its
most representative 10 s: the window whose embedding is closest to the clip's mean
embedding. A library moment uses its stored segment (nearest to the asked start) and the
track's stored chroma. Blends add unit vectors of the moments and subtract half of the
"minus" ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg

from cadenza.errors import InputError, NotFound
from encoder.features import CHROMA, FPS, SAMPLE_RATE
from retrieval.analysis import prepare
from retrieval.descriptors import KEY_NAMES, chroma_sequence, describe, frame_weights
from retrieval.rerank import QueryProfile
from retrieval.store import f16_array, track_chroma

WINDOW_FRAMES = 100
#: Quieter than this (RMS dBFS of the raw clip) is silence: nothing can be similar to it.
SILENCE_DBFS = -60.0
#: Below this tonalness a clip is noise-like: rendered and recorded music measured 0.63–0.95
#: (1st percentile 0.70 on the demo library); white/pink/brown noise 0.17–0.33.
MIN_TONALNESS = 0.4


@dataclass
class BuiltQuery:
    profile: QueryProfile
    chroma10: np.ndarray  # [T, 12] 10-fps chroma of the query moment, for localization
    info: dict[str, Any]
    exclude_tracks: tuple[int, ...] = ()
    nothing_reason: str | None = None  # set when the query itself cannot match anything
    timings_ms: dict[str, float] = field(default_factory=dict)


def mel_flatness(*, frames: np.ndarray) -> float:
    """Mean spectral flatness of the voiced frames' mel spectrum in [0, 1] (1 = white noise)."""
    w = frame_weights(frames=frames)
    voiced = w > 0
    if not voiced.any():
        return 0.0
    p = 10.0 ** (frames[voiced, :128].astype(np.float64) / 10.0)
    geo = np.exp(np.log(np.maximum(p, 1e-20)).mean(axis=1))
    return float(np.mean(geo / np.maximum(p.mean(axis=1), 1e-20)))


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def from_audio(
    *,
    audio: np.ndarray,
    embedder: Any,
    start_s: float | None,
    duration_s: float = 10.0,
    min_clip_s: float = 3.0,
    max_clip_s: float = 600.0,
) -> BuiltQuery:
    """A decoded clip ``[n]`` (mono 16 kHz) → :class:`BuiltQuery`."""
    from encoder.features import acoustic_features

    y = np.asarray(audio, dtype=np.float32).reshape(-1)
    seconds = y.size / SAMPLE_RATE
    if not np.all(np.isfinite(y)):
        raise InputError("the clip contains NaN or infinite samples; decode it again")
    if seconds < min_clip_s:
        raise InputError(f"the clip is {seconds:.1f} s long; give at least {min_clip_s:.0f} s")
    if seconds > max_clip_s + 0.5:
        raise InputError(f"the clip is {seconds / 60:.1f} min long; the limit is {max_clip_s / 60:.0f} min")
    offset = 0.0
    if start_s is not None:
        if start_s < 0 or start_s >= seconds - 0.5:
            raise InputError(
                f"start {start_s:.1f} s is outside the {seconds:.1f}-s clip; pick a start inside it"
            )
        dur = min(max(duration_s, min_clip_s), 30.0)
        i0 = int(round(start_s * SAMPLE_RATE))
        y = y[i0 : i0 + int(round(dur * SAMPLE_RATE))]
        offset = start_s
        if y.size < min_clip_s * SAMPLE_RATE:
            raise InputError(
                f"only {y.size / SAMPLE_RATE:.1f} s of audio after {start_s:.1f} s; start earlier"
            )
    timings: dict[str, float] = {}
    raw_dbfs = 20.0 * np.log10(max(float(np.sqrt(np.mean(y.astype(np.float64) ** 2))), 1e-10))
    t0 = time.perf_counter()
    y = prepare(y=y)
    frames = acoustic_features(y=y, sr=SAMPLE_RATE)
    timings["features"] = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    win = (
        min(WINDOW_FRAMES, len(frames))
        if start_s is None
        else min(len(frames), int(round(duration_s * FPS)), 300)
    )
    if start_s is None and len(frames) > WINDOW_FRAMES:
        starts, embs = embedder.embed_track(
            frames=frames,
            win_frames=WINDOW_FRAMES,
            # 1-s steps for short clips; coarser for long ones (10 min at 1 s = 600 windows).
            hop_frames=10 if len(frames) <= 600 else (20 if len(frames) <= 3000 else 50),
            min_frames=WINDOW_FRAMES,
        )
        mean = _unit(embs.mean(axis=0))
        best = int(np.argmax(embs @ mean))
        i0, emb = int(round(starts[best] * FPS)), embs[best]
    else:
        i0 = 0
        emb = embedder.embed_windows(windows=frames[None, :win])[0]
    timings["embed"] = (time.perf_counter() - t0) * 1000
    window = frames[i0 : i0 + win]
    d = describe(frames=window)
    info = {
        "source": "audio",
        "start": round(offset + i0 / FPS, 2),
        "end": round(offset + (i0 + len(window)) / FPS, 2),
        "clip_seconds": round(seconds, 2),
        **d.to_dict(),
        "input_dbfs": round(raw_dbfs, 1),
        "flatness": round(mel_flatness(frames=window), 3),
    }
    nothing = None
    if raw_dbfs < SILENCE_DBFS:
        nothing = "the clip is silent"
    elif d.tonalness < MIN_TONALNESS:
        nothing = "the clip has no clear pitch content (noise or unpitched sound)"
    profile = QueryProfile(
        embedding=_unit(emb),
        chroma_mean=np.asarray(d.chroma_mean),
        chroma_seq=chroma_sequence(frames=window),
        tempo_bpm=d.tempo_bpm,
        valence=d.valence,
        arousal=d.arousal,
        tonalness=d.tonalness,
    )
    return BuiltQuery(
        profile, window[:, CHROMA].astype(np.float32), info, nothing_reason=nothing, timings_ms=timings
    )


_MOMENT_SQL = (
    "SELECT s.id, s.track_id, s.start_s, s.end_s, s.embedding, s.chroma_mean, s.chroma_seq, s.key_index, s.mode,"
    " s.key_confidence, s.tempo_bpm, s.valence, s.arousal, t.title, t.composer, t.duration_s"
    " FROM segments s JOIN tracks t ON t.id = s.track_id"
    " WHERE s.track_id = %s AND s.model_version = %s ORDER BY abs(s.start_s - %s), s.start_s LIMIT 1"
)


def moment(conn: psycopg.Connection, *, track_id: int, start_s: float, model_version: str) -> dict[str, Any]:
    """The stored segment of ``track_id`` nearest ``start_s`` (current model) plus its exact-start chroma."""
    row = conn.execute(_MOMENT_SQL, (track_id, model_version, start_s)).fetchone()
    if row is None:
        exists = conn.execute("SELECT 1 FROM tracks WHERE id = %s", (track_id,)).fetchone()
        if not exists:
            raise NotFound(f"no track with id {track_id}; run `cadenza library` to see the ids")
        raise NotFound(f"track {track_id} has no segments for model {model_version}; run `cadenza reindex`")
    duration = float(row[15])
    if not 0.0 <= start_s < max(duration - 3.0, 0.1):
        raise InputError(
            f"track {track_id} is {duration:.1f} s long; pick a moment start between 0 and {max(duration - 3.0, 0.0):.1f} s"
        )
    chroma = track_chroma(conn, track_id)
    i0 = int(round(max(0.0, start_s) * FPS))
    return {
        "segment_id": row[0], "track_id": row[1], "start_s": float(start_s), "segment_start": float(row[2]),
        "embedding": _unit(row[4].to_numpy()), "chroma_mean": np.asarray(row[5], dtype=np.float64),
        "chroma_seq": f16_array(row[6]), "key_index": row[7], "mode": row[8], "key_confidence": row[9],
        "tempo_bpm": row[10], "valence": row[11], "arousal": row[12], "title": row[13], "composer": row[14],
        "chroma10": chroma[i0 : i0 + WINDOW_FRAMES], "end_s": min(float(start_s) + 10.0, float(row[15])),
    }  # fmt: skip


def build(
    conn: psycopg.Connection,
    *,
    request: Any,
    embedder: Any,
    min_clip_s: float = 3.0,
    max_clip_s: float = 600.0,
) -> BuiltQuery:
    """The query of a :class:`retrieval.types.SearchRequest` (audio, moments, or a blend)."""
    if request.audio is None and not request.moments:
        raise InputError("a search needs an audio clip or a library moment to start from")
    parts: list[np.ndarray] = []
    built: BuiltQuery | None = None
    if request.audio is not None:
        built = from_audio(
            audio=request.audio, embedder=embedder, start_s=request.start_s, duration_s=request.duration_s,
            min_clip_s=min_clip_s, max_clip_s=max_clip_s,
        )  # fmt: skip
        parts.append(built.profile.embedding)
    moments = [
        moment(conn, track_id=m.track_id, start_s=m.start_s, model_version=embedder.model_version)
        for m in request.moments
    ]
    minus = [
        moment(conn, track_id=m.track_id, start_s=m.start_s, model_version=embedder.model_version)
        for m in request.minus
    ]
    parts.extend(m["embedding"] for m in moments)
    q = np.sum(parts, axis=0) - 0.5 * (np.sum([m["embedding"] for m in minus], axis=0) if minus else 0.0)
    exclude = tuple(sorted({int(m["track_id"]) for m in moments}))
    if built is None:
        first = moments[0]
        chroma = np.mean([m["chroma_mean"] for m in moments], axis=0)
        info = {
            "source": "moment" if len(moments) == 1 and not minus else "blend",
            "track_id": first["track_id"], "title": first["title"], "composer": first["composer"],
            "start": round(first["start_s"], 2), "end": round(first["end_s"], 2),
            "key_index": first["key_index"], "mode": first["mode"], "key_confidence": first["key_confidence"],
            "key": KEY_NAMES[first["key_index"]] if first["key_index"] is not None else None,
            "tempo_bpm": first["tempo_bpm"], "valence": first["valence"], "arousal": first["arousal"],
            "chroma_mean": [round(float(v), 4) for v in chroma],
        }  # fmt: skip
        profile = QueryProfile(
            embedding=_unit(q),
            chroma_mean=chroma,
            chroma_seq=first["chroma_seq"],
            tempo_bpm=first["tempo_bpm"],
            valence=float(first["valence"] or 0.0),
            arousal=float(first["arousal"] or 0.0),
            tonalness=1.0,
        )
        return BuiltQuery(profile, first["chroma10"], info, exclude_tracks=exclude)
    if moments or minus:
        built.profile.embedding = _unit(q)
        built.info["source"] = "blend"
        built.exclude_tracks = exclude
    return built
