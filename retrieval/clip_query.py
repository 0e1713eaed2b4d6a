"""An audio clip as a query: leveled like library tracks, featurized, embedded, described.

With no start given a clip is reduced to its most representative moment (``embedder.windowing``:
10 s): the window whose embedding is closest to the clip's mean embedding. Silence and noise are
said to be "nothing" here, before any search.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cadenza.errors import InputError
from cadenza.settings import LimitSettings
from encoder.feataug import pitch_shift
from encoder.features import CHROMA, HOP, SAMPLE_RATE, acoustic_features, chroma_phases, mel_band_edges
from encoder.protocols import MomentEmbedder
from encoder.timbre import shipped_timbre, window_statistics
from encoder.windowing import Windowing
from retrieval.analysis import prepare
from retrieval.descriptors import chroma_sequence, describe, frame_weights
from retrieval.passage import CHROMA_PHASES
from retrieval.rerank import QueryProfile

#: Quieter than this (RMS dBFS of the raw clip) is silence: nothing can be similar to it.
SILENCE_DBFS = -60.0
#: Below this tonalness a clip is noise-like: rendered and recorded music measured 0.63–0.95
#: (1st percentile 0.70 on the demo library); white/pink/brown noise 0.17–0.33. Real recordings reach
#: below it too (a window of the training sources at 0.37; loud rock with distorted guitars), so a
#: noise-like clip is still searched and answered only by its own passage (retrieval.search).
MIN_TONALNESS = 0.4
#: Said when a noise-like clip finds no passage of its own.
NOISE_LIKE_REASON = "the clip has no clear pitch content (noise or unpitched sound)"
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
    # Below MIN_TONALNESS: answered only when its own passage is found (retrieval.search).
    noise_like: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    # The leveled samples of the query window (None for a library moment, which is on the grid).
    window_audio: np.ndarray | None = None
    # The clip has lost its bass (BAND_LIMITED_BELOW_DB): align it with the phone band's chroma too.
    band_limited: bool = False

    def chroma_phases(self) -> np.ndarray:
        """``[P - 1, T, 12]``: chroma10 taken 1..P-1 P-ths of a frame later (encoder.features.chroma_phases),
        so the same-passage check can line a clip cut off the 10-fps grid up with stored chroma. Computed
        when asked (~1.6 ms): a clip that goes the melody route never needs them."""
        if self.window_audio is None:
            return np.zeros((0, 0, 12), np.float32)
        return chroma_phases(y=self.window_audio, phases=CHROMA_PHASES, frames=len(self.chroma10))


#: A clip whose mel energy below 200 Hz sits this far (dB) or more under its 400–3000 Hz energy has lost its
#: bass (a phone line, a small speaker): the same-passage check then also aligns it with the tracks' phone-band
#: chroma. Training sources, 60 clips each: phone clips −26.5 to −10.1 dB (median −21.9), clean −9.2 to
#: +23.3 (median +14.2), noise −6.0 and up, reverb 1.8 and up; a clip wrongly taken as band-limited costs
#: only the second alignment (~8 ms), a missed one the band's line-up.
BAND_LIMITED_BELOW_DB = -5.0


def bass_level_db(*, frames: np.ndarray) -> float:
    """Mean mel power below 200 Hz relative to 400–3000 Hz, in dB, of ``frames [T, 143]``."""
    centres = mel_band_edges()[1:-1]
    power = 10.0 ** (frames[:, :128].astype(np.float64) / 10.0)
    low = power[:, centres < 200.0].mean()
    mid = power[:, (centres > 400.0) & (centres < 3000.0)].mean()
    return float(10.0 * np.log10(max(low, 1e-20) / max(mid, 1e-20)))


def mel_flatness(*, frames: np.ndarray) -> float:
    """Mean spectral flatness of the voiced frames' mel spectrum in [0, 1] (1 = white noise)."""
    w = frame_weights(frames=frames)
    voiced = w > 0
    if not voiced.any():
        return 0.0
    p = 10.0 ** (frames[voiced, :128].astype(np.float64) / 10.0)
    geo = np.exp(np.log(np.maximum(p, 1e-20)).mean(axis=1))
    return float(np.mean(geo / np.maximum(p.mean(axis=1), 1e-20)))


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def from_audio(
    *,
    audio: np.ndarray,
    embedder: MomentEmbedder,
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
        cuts = w.track_starts(len(frames), hop=w.frames(hop_s), tail=w.window_frames)
        starts, embs = embedder.embed_track(frames=frames, cuts=cuts)
        mean = unit(embs.mean(axis=0))
        best = int(np.argmax(embs @ mean))
        i0, emb = w.frames(starts[best]), embs[best]
        window = frames[i0 : i0 + win]
        transposed = transposed_embeddings(embedder=embedder, window=window, semitones=transpose_probes)
    else:  # the usual upload, one window: it and its key probes in ONE encoder call
        i0, window = 0, frames[:win]
        shifts, moved = _probe_windows(window=window, semitones=transpose_probes)
        embs = embedder.embed_windows(windows=np.concatenate([window[None], moved]))  # [1 + S, d]
        emb = embs[0]
        transposed = tuple((s, unit(e)) for s, e in zip(shifts, embs[1:], strict=True))
    timings["embed"] = (time.perf_counter() - t0) * 1000
    timbre = shipped_timbre()
    tvec = timbre.project(window_statistics(frames=window, starts=np.zeros(1, np.int64), win=len(window)))[0]
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
    nothing = "the clip is silent" if raw_dbfs < SILENCE_DBFS else None
    profile = QueryProfile(
        embedding=unit(emb),
        chroma_mean=np.asarray(d.chroma_mean),
        chroma_seq=chroma_sequence(frames=window),
        tempo_bpm=d.tempo_bpm,
        valence=d.valence,
        arousal=d.arousal,
        tonalness=d.tonalness,
        brightness_hz=d.brightness_hz,
        onset_density=d.onset_density,
        timbre=tvec,
        timbre_version=timbre.version,
        timbre_weight=timbre.weight,
        track_timbre_weight=timbre.track_weight,
        transposed=transposed,
    )
    return BuiltQuery(
        profile, window[:, CHROMA].astype(np.float32), info, nothing_reason=nothing, timings_ms=timings,
        window_audio=y[i0 * HOP : (i0 + len(window)) * HOP],
        band_limited=bass_level_db(frames=window) <= BAND_LIMITED_BELOW_DB,
        noise_like=d.tonalness < MIN_TONALNESS,
    )  # fmt: skip


def transposed_embeddings(
    *, embedder: MomentEmbedder, window: np.ndarray, semitones: tuple[int, ...]
) -> tuple[tuple[int, np.ndarray], ...]:
    """``window [T, 143]`` raw frames moved by each of ``semitones`` → ``((s, unit emb [d]), …)``.

    One batched encoder call. 0 and repeats are dropped; beyond ±MAX_PROBE_SEMITONES is an error.
    """
    shifts, moved = _probe_windows(window=window, semitones=semitones)
    if not shifts:
        return ()
    embs = embedder.embed_windows(windows=moved)  # [S, d]
    return tuple((s, unit(e)) for s, e in zip(shifts, embs, strict=True))


def _probe_windows(*, window: np.ndarray, semitones: tuple[int, ...]) -> tuple[tuple[int, ...], np.ndarray]:
    """The probes' semitones (0 and repeats dropped) and ``window [T, 143]`` moved by each: ``[S, T, 143]``."""
    shifts = tuple(dict.fromkeys(int(s) for s in semitones if int(s) != 0))
    if any(abs(s) > MAX_PROBE_SEMITONES for s in shifts):
        raise InputError(
            f"transposition probes must be within ±{MAX_PROBE_SEMITONES} semitones, got {semitones}"
        )
    moved = [pitch_shift(frames=window, semitones=float(s)) for s in shifts]
    return shifts, (np.stack(moved) if moved else np.zeros((0, *window.shape), dtype=window.dtype))
