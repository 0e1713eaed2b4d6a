"""Turning a search request into a query profile: embedding, harmony, 10-fps chroma.

A clip is leveled like library tracks, featurized, and (with no start given) reduced to its
most representative 10 s: the window whose embedding is closest to the clip's mean
embedding. A library moment (track id + start) is re-embedded exactly: the track's file is
decoded from the start for 10 s and goes through the same path as an uploaded clip. Only
when the file is gone, changed or unreadable does the moment fall back to the stored
segment nearest the start (``moment_source: "stored-segment"`` in the query info, with the
reason). Blends add unit vectors of the moments and subtract half of the "minus" ones.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from cadenza.audio import content_hash, load_audio
from cadenza.db import f16_array
from cadenza.errors import InputError, NotFound
from cadenza.settings import LimitSettings
from encoder.features import CHROMA, SAMPLE_RATE
from encoder.windowing import DEFAULT_WINDOWING, Windowing
from retrieval.analysis import prepare
from retrieval.descriptors import KEY_NAMES, chroma_sequence, describe, frame_weights
from retrieval.rerank import QueryProfile
from retrieval.store import model_mismatch, other_models, track_chroma

log = logging.getLogger(__name__)

#: Quieter than this (RMS dBFS of the raw clip) is silence: nothing can be similar to it.
SILENCE_DBFS = -60.0
#: Below this tonalness a clip is noise-like: rendered and recorded music measured 0.63–0.95
#: (1st percentile 0.70 on the demo library); white/pink/brown noise 0.17–0.33.
MIN_TONALNESS = 0.4
#: Transposition probes are at most this many semitones away (the feature-domain shift
#: resamples the mel axis; past a few semitones the timbre moves with it).
MAX_PROBE_SEMITONES = 3


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
    duration_s: float | None = None,
    min_clip_s: float = LimitSettings.min_clip_seconds,
    max_clip_s: float = LimitSettings.max_clip_seconds,
    transpose_probes: tuple[int, ...] = (),
) -> BuiltQuery:
    """A decoded clip ``[n]`` (mono 16 kHz) → :class:`BuiltQuery`.

    ``duration_s`` (with ``start_s``) None = one moment (``embedder.windowing``, 10 s).
    ``transpose_probes`` (semitones, e.g. ``(-1, 1)``): the chosen window is also embedded moved
    by each, in the feature domain (:func:`encoder.feataug.pitch_shift`), into
    ``profile.transposed``.
    """
    from encoder.features import acoustic_features

    w: Windowing = embedder.windowing
    duration_s = w.window_s if duration_s is None else duration_s
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
        dur = min(max(duration_s, min_clip_s), w.max_s)
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
        min(w.window_frames, len(frames))
        if start_s is None
        else min(len(frames), w.frames(duration_s), w.max_frames)
    )
    if start_s is None and len(frames) > w.window_frames:
        # 1-s steps for clips up to 1 min; coarser for long ones (10 min at 1 s = 600 windows).
        per_s = len(frames) / w.fps
        hop_s = 1.0 if per_s <= 60 else (2.0 if per_s <= 300 else 5.0)
        starts, embs = embedder.embed_track(
            frames=frames, win_frames=w.window_frames, hop_frames=w.frames(hop_s), min_frames=w.window_frames
        )
        mean = _unit(embs.mean(axis=0))
        best = int(np.argmax(embs @ mean))
        i0, emb = w.frames(starts[best]), embs[best]
    else:
        i0 = 0
        emb = embedder.embed_windows(windows=frames[None, :win])[0]
    window = frames[i0 : i0 + win]
    transposed = transposed_embeddings(embedder=embedder, window=window, semitones=transpose_probes)
    timings["embed"] = (time.perf_counter() - t0) * 1000
    d = describe(frames=window)
    info = {
        "source": "audio",
        "start": round(offset + i0 / w.fps, 2),
        "end": round(offset + (i0 + len(window)) / w.fps, 2),
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
        brightness_hz=d.brightness_hz,
        onset_density=d.onset_density,
        transposed=transposed,
    )
    return BuiltQuery(
        profile, window[:, CHROMA].astype(np.float32), info, nothing_reason=nothing, timings_ms=timings
    )


def transposed_embeddings(
    *, embedder: Any, window: np.ndarray, semitones: tuple[int, ...]
) -> tuple[tuple[int, np.ndarray], ...]:
    """``window [T, 143]`` raw frames moved by each of ``semitones`` → ``((s, unit emb [d]), …)``.

    One batched encoder call. 0 and repeats are dropped; beyond ±MAX_PROBE_SEMITONES is an error.
    """
    from encoder.feataug import pitch_shift

    shifts = tuple(dict.fromkeys(int(s) for s in semitones if int(s) != 0))
    if any(abs(s) > MAX_PROBE_SEMITONES for s in shifts):
        raise InputError(
            f"transposition probes must be within ±{MAX_PROBE_SEMITONES} semitones, got {semitones}"
        )
    if not shifts:
        return ()
    moved = np.stack([pitch_shift(frames=window, semitones=float(s)) for s in shifts])  # [S, T, 143]
    embs = embedder.embed_windows(windows=moved)  # [S, d]
    return tuple((s, _unit(e)) for s, e in zip(shifts, embs, strict=True))


_MOMENT_SQL = (
    "SELECT s.id, s.track_id, s.start_s, s.end_s, s.embedding, s.chroma_mean, s.chroma_seq, s.key_index, s.mode,"
    " s.key_confidence, s.tempo_bpm, s.valence, s.arousal, t.title, t.composer, t.duration_s, t.path,"
    " t.content_hash, s.brightness_hz, s.onset_density"
    " FROM segments s JOIN tracks t ON t.id = s.track_id"
    " WHERE s.track_id = %s AND s.model_version = %s ORDER BY abs(s.start_s - %s), s.start_s LIMIT 1"
)


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
        return load_audio(path=p, offset_s=start_s, duration_s=duration_s), ""
    except (InputError, OSError) as exc:
        return None, f"the track's audio file is unreadable ({str(exc)[:100]})"


def moment(
    conn: psycopg.Connection, *, track_id: int, start_s: float, model_version: str, embedder: Any = None
) -> dict[str, Any]:
    """One moment (a stored segment's length, ``embedder.windowing``: 10 s) of ``track_id`` from ``start_s``: re-embedded from the file when ``embedder`` is given and
    the file is readable (``moment_source`` "audio"), else the stored segment nearest ``start_s``
    (current model) with the track's stored exact-start chroma (``moment_source`` "stored-segment").
    """
    row = conn.execute(_MOMENT_SQL, (track_id, model_version, start_s)).fetchone()
    if row is None:
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
    # Without an encoder the stored segments say how long a moment is; they were cut with this windowing.
    w: Windowing = embedder.windowing if embedder is not None else DEFAULT_WINDOWING
    duration = float(row[15])
    if not 0.0 <= start_s < max(duration - w.min_s, 0.1):
        raise InputError(
            f"track {track_id} is {duration:.1f} s long; pick a moment start between 0 and {max(duration - w.min_s, 0.0):.1f} s"
        )
    out: dict[str, Any] = {
        "segment_id": row[0], "track_id": row[1], "start_s": float(start_s), "segment_start": float(row[2]),
        "title": row[13], "composer": row[14], "end_s": min(float(start_s) + w.window_s, duration),
        "timings_ms": {}, "nothing_reason": None,
    }  # fmt: skip
    if embedder is not None:
        t0 = time.perf_counter()
        y, why = moment_audio(
            path=str(row[16]), digest=str(row[17]), start_s=float(start_s), duration_s=w.window_s
        )
        decode_ms = (time.perf_counter() - t0) * 1000
        if y is not None and y.size >= w.min_s * SAMPLE_RATE:
            built = from_audio(audio=y, embedder=embedder, start_s=0.0, duration_s=w.window_s)
            d, prof = built.info, built.profile
            out.update(
                moment_source="audio", embedding=prof.embedding, chroma_mean=np.asarray(d["chroma_mean"]),
                chroma_seq=prof.chroma_seq, key_index=d["key_index"], mode=d["mode"],
                key_confidence=d["key_confidence"], tempo_bpm=d["tempo_bpm"], valence=d["valence"],
                arousal=d["arousal"], tonalness=d["tonalness"], chroma10=built.chroma10,
                brightness_hz=d["brightness_hz"], onset_density=d["onset_density"],
                end_s=float(start_s) + d["end"], nothing_reason=built.nothing_reason,
                timings_ms={"decode": decode_ms, **built.timings_ms},
            )  # fmt: skip
            return out
        why = why or "too little audio left after the start in the track's file"
        log.warning("moment of track %s at %.1f s from its stored segment: %s", track_id, start_s, why)
        out["fallback_reason"] = why
    else:
        out["fallback_reason"] = "no encoder to re-embed with"
    chroma = track_chroma(conn, track_id)
    i0 = w.frames(max(0.0, start_s))
    out.update(
        moment_source="stored-segment", embedding=_unit(row[4].to_numpy()),
        chroma_mean=np.asarray(row[5], dtype=np.float64), chroma_seq=f16_array(row[6]), key_index=row[7],
        mode=row[8], key_confidence=row[9], tempo_bpm=row[10], valence=row[11], arousal=row[12],
        tonalness=1.0, chroma10=chroma[i0 : i0 + w.window_frames], brightness_hz=row[18], onset_density=row[19],
    )  # fmt: skip
    return out


def build(
    conn: psycopg.Connection,
    *,
    request: Any,
    embedder: Any,
    min_clip_s: float = LimitSettings.min_clip_seconds,
    max_clip_s: float = LimitSettings.max_clip_seconds,
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
            transpose_probes=tuple(request.transpose_probes),
        )  # fmt: skip
        parts.append(built.profile.embedding)
    moments = [
        moment(
            conn,
            track_id=m.track_id,
            start_s=m.start_s,
            model_version=embedder.model_version,
            embedder=embedder,
        )
        for m in request.moments
    ]
    minus = [
        moment(
            conn,
            track_id=m.track_id,
            start_s=m.start_s,
            model_version=embedder.model_version,
            embedder=embedder,
        )
        for m in request.minus
    ]
    sources = [m["moment_source"] for m in (*moments, *minus)]
    fallbacks = sorted({m["fallback_reason"] for m in (*moments, *minus) if m.get("fallback_reason")})
    timings: dict[str, float] = {}
    for m in (*moments, *minus):
        for k, v in m["timings_ms"].items():
            timings[k] = timings.get(k, 0.0) + v
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
            "moment_source": first["moment_source"], "moment_sources": sources,
        }  # fmt: skip
        if fallbacks:
            info["fallback_reason"] = "; ".join(fallbacks)
        profile = QueryProfile(
            embedding=_unit(q),
            chroma_mean=chroma,
            chroma_seq=first["chroma_seq"],
            tempo_bpm=first["tempo_bpm"],
            valence=float(first["valence"] or 0.0),
            arousal=float(first["arousal"] or 0.0),
            tonalness=float(first["tonalness"]),
            brightness_hz=first.get("brightness_hz"),
            onset_density=first.get("onset_density"),
        )
        # Only a single moment can be "nothing": a blend still has the other moments' direction.
        nothing = first["nothing_reason"] if len(moments) == 1 and not minus else None
        return BuiltQuery(
            profile,
            first["chroma10"],
            info,
            exclude_tracks=exclude,
            nothing_reason=nothing,
            timings_ms=timings,
        )
    if moments or minus:
        built.profile.embedding = _unit(q)
        built.profile.transposed = ()  # a blend has no one key to move
        built.info["source"] = "blend"
        built.info["moment_sources"] = sources
        if fallbacks:
            built.info["fallback_reason"] = "; ".join(fallbacks)
        built.exclude_tracks = exclude
        for k, v in timings.items():
            built.timings_ms[k] = built.timings_ms.get(k, 0.0) + v
    return built
