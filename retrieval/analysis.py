"""The pure per-file map of ingestion: audio → leveled audio → frames → segments.

``analyze_audio`` turns a decoded track into everything the library stores about it
(segment embeddings and descriptors, the full-rate chroma) without touching the database,
so it can run in a worker process. ``level_loudness`` is shared with query preparation:
queries and library tracks are leveled the same way.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from encoder.features import CHROMA, SAMPLE_RATE, acoustic_features_and_band_chroma
from encoder.protocols import MomentEmbedder
from encoder.timbre import shipped_timbre, window_statistics
from retrieval.descriptors import chroma_sequence, describe
from retrieval.melody import melody_contour, window_melodies

log = logging.getLogger(__name__)

TARGET_LUFS = -23.0
#: Never amplify by more than this: a near-silent file must stay near-silent.
MAX_GAIN_DB = 30.0


@dataclass
class SegmentData:
    start_s: float
    end_s: float
    embedding: np.ndarray  # [d] float32
    descriptors: dict[str, Any]  # Descriptors.to_dict() minus nothing
    chroma_seq: np.ndarray  # [n, 12] float16 at 2 fps
    #: The window's melodic line, [window_frames] float16 MIDI at 10 fps, NaN unvoiced (retrieval/melody.py).
    melody: np.ndarray | None = None
    #: The window's sound without its notes: unit timbre/production vector [d] float32 (encoder/timbre.py).
    timbre: np.ndarray | None = None


@dataclass
class TrackAnalysis:
    duration_s: float
    model_version: str
    segments: list[SegmentData]
    chroma: np.ndarray  # [T, 12] float16 at 10 fps
    #: The fitted timbre model the segments' ``timbre`` vectors come from (encoder.timbre.TimbreModel.version).
    timbre_version: str = ""
    seconds_decode: float = 0.0
    seconds_analyze: float = 0.0
    #: CPU seconds of the analysing thread per stage ("decode", "level", "features", "embed", "describe").
    cpu_s: dict[str, float] = field(default_factory=dict)
    #: The chroma of the phone band alone, [T, 12] float16 at 10 fps (encoder.features.acoustic_features_and_band_chroma).
    band_chroma: np.ndarray | None = None


#: ITU-R BS.1770-4 gating: 400-ms blocks every 100 ms, absolute gate −70 LKFS, relative gate −10 LU.
_BLOCK_S, _STEP, _ABS_GATE, _REL_GATE = 0.4, 0.25, -70.0, -10.0
#: The K-weighting stages as pyloudnorm's Meter designs them: (kind, gain dB, Q, centre Hz).
_K_STAGES = (("high_shelf", 4.0, 1 / np.sqrt(2), 1500.0), ("high_pass", 0.0, 0.5, 38.0))


def _biquad(kind: str, *, gain_db: float, q: float, fc: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """(b, a) of one RBJ-cookbook biquad, exactly as ``pyloudnorm.iirfilter.IIRfilter`` designs it."""
    a_lin = 10 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * fc / sr
    alpha = np.sin(w0) / (2.0 * q)
    cw, sa = np.cos(w0), 2 * np.sqrt(a_lin) * alpha
    if kind == "high_shelf":
        b = a_lin * np.array([(a_lin + 1) + (a_lin - 1) * cw + sa, -2 * ((a_lin - 1) + (a_lin + 1) * cw),
                              (a_lin + 1) + (a_lin - 1) * cw - sa])  # fmt: skip
        a = np.array([(a_lin + 1) - (a_lin - 1) * cw + sa, 2 * ((a_lin - 1) - (a_lin + 1) * cw),
                      (a_lin + 1) - (a_lin - 1) * cw - sa])  # fmt: skip
    elif kind == "high_pass":
        b = np.array([(1 + cw) / 2, -(1 + cw), (1 + cw) / 2])
        a = np.array([1 + alpha, -2 * cw, 1 - alpha])
    else:
        raise ValueError(f"unknown biquad {kind!r}")
    return b, a


def _fast_len(n: int) -> int:
    """The smallest 2^i * 3^j * 5^k >= n: an FFT length numpy transforms quickly."""
    best, p5 = 2 * n, 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _k_weighting_sos(sr: int) -> np.ndarray:
    """The K-weighting cascade (high shelf, then high-pass) as second-order sections ``[2, 6]``."""
    rows = []
    for kind, gain_db, q, fc in _K_STAGES:
        b, a = _biquad(kind, gain_db=gain_db, q=q, fc=fc, sr=sr)
        rows.append(np.concatenate([b / a[0], a / a[0]]))
    return np.array(rows)


def k_weighted(y: np.ndarray, *, sr: int, in_time: bool = False) -> np.ndarray:
    """BS.1770 K-weighting of mono ``y`` (pyloudnorm's high shelf, then its RLB high-pass), float64.

    ``in_time=False``: the cascade's exact frequency response on one zero-padded FFT, without
    importing scipy.signal (seconds in a fresh ``cadenza search`` process). The padding of one
    second holds the filters' tails (the 38-Hz high-pass decays by e^-200 within it), so
    nothing wraps around. ``in_time=True``: the two IIR filters run in time
    (``scipy.signal.sosfilt``), 10–60× cheaper on a whole track (13 ms against 160–850 ms of
    CPU for 106 s of audio: the FFT route's ~20 complex temporaries of the track's length
    are memory-bound), for processes that import scipy.signal anyway (ingest workers). Both
    give the same output to ~1e-13.
    """
    x = np.asarray(y, dtype=np.float64).reshape(-1)
    if in_time:
        from scipy.signal import sosfilt  # here: a query process never imports scipy.signal (seconds)

        return np.asarray(sosfilt(_k_weighting_sos(sr), x), dtype=np.float64)
    size = _fast_len(x.size + sr)
    # Only query-sized responses are kept (<= 5 MB each); a track's would hold tens of MB per worker.
    h = _k_response(size, sr) if size <= _K_CACHE_MAX_SECONDS * sr else _k_response.__wrapped__(size, sr)
    return np.fft.irfft(np.fft.rfft(x, size) * h, size)[: x.size]


#: Longest padded signal whose K-weighting response is cached (see :func:`k_weighted`).
_K_CACHE_MAX_SECONDS = 40


@functools.lru_cache(maxsize=8)
def _k_response(size: int, sr: int) -> np.ndarray:
    """The K-weighting cascade's frequency response on the ``size``-point rfft bins (read-only).

    Cached: a query clip's length recurs (the melody route levels the same clip again, and clips
    of one length share it), and this complex arithmetic cost as much as both FFTs (~25 ms a query).
    """
    z = np.exp(-1j * np.pi * np.arange(size // 2 + 1) / (size / 2))  # e^{-jw} per rfft bin
    h = np.ones_like(z)
    for kind, gain_db, q, fc in _K_STAGES:
        b, a = _biquad(kind, gain_db=gain_db, q=q, fc=fc, sr=sr)
        h *= (b[0] + b[1] * z + b[2] * z * z) / (a[0] + a[1] * z + a[2] * z * z)
    h.flags.writeable = False
    return h


def integrated_loudness(*, y: np.ndarray, sr: int = SAMPLE_RATE, in_time: bool = False) -> float:
    """Integrated loudness (LUFS) of mono ``y [n]`` (n ≥ 0.4 s): ``pyloudnorm.Meter(sr).integrated_loudness``.

    Same K-weighting filters (:func:`k_weighted`), same block bounds and gates, but the
    block energies come from one cumulative sum instead of a Python loop over ~10 blocks per
    second. Agrees with pyloudnorm to ~1e-9 LU (tests/test_analysis.py).
    −inf for silence. ``in_time``: see :func:`k_weighted`.
    """
    x = k_weighted(y, sr=sr, in_time=in_time)
    n_blocks = int(np.round((x.size / sr - _BLOCK_S) / (_BLOCK_S * _STEP))) + 1
    j = np.arange(n_blocks, dtype=np.float64)
    # The bounds exactly as pyloudnorm computes them (float products truncated), clipped like a slice.
    lo = np.minimum((_BLOCK_S * (j * _STEP) * sr).astype(np.int64), x.size)
    hi = np.minimum((_BLOCK_S * (j * _STEP + 1) * sr).astype(np.int64), x.size)
    # Energy between consecutive bounds in one pass, then each block as a sum of its pieces.
    edges = np.unique(np.concatenate([lo, hi]))
    # (A trailing 0 keeps every edge, x.size included, a valid index; the last piece is dropped.)
    pieces = np.add.reduceat(np.append(x * x, 0.0), edges)[:-1]
    energy = np.concatenate([[0.0], np.cumsum(pieces)])
    at = np.searchsorted(edges, np.stack([lo, hi]))
    z = np.maximum(energy[at[1]] - energy[at[0]], 0.0) / (_BLOCK_S * sr)  # [n_blocks] mean square
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10.0 * np.log10(z)
        above = block_lufs >= _ABS_GATE
        if not above.any():
            return float("-inf")
        rel = -0.691 + 10.0 * np.log10(z[above].mean()) + _REL_GATE
        gated = (block_lufs > rel) & (block_lufs > _ABS_GATE)
        if not gated.any():
            return float("-inf")
        return float(-0.691 + 10.0 * np.log10(z[gated].mean()))


def level_loudness(
    *, y: np.ndarray, sr: int = SAMPLE_RATE, target_lufs: float = TARGET_LUFS, in_time: bool = False
) -> np.ndarray:
    """Scale ``y [n]`` to ``target_lufs`` (EBU R128 integrated loudness), guarding silence and clipping.

    Clips shorter than one 400-ms gating block, or silent ones, come back unchanged.
    ``in_time``: how to K-weight (:func:`k_weighted`); the same result either way.
    """
    if y.size < int(0.5 * sr) or not np.any(y):
        return y
    loud = integrated_loudness(y=y, sr=sr, in_time=in_time)
    if not np.isfinite(loud):
        return y
    gain_db = float(np.clip(target_lufs - loud, -40.0, MAX_GAIN_DB))
    out = y * np.float32(10.0 ** (gain_db / 20.0))
    peak = float(np.abs(out).max())
    if peak > 1.0:  # keep the waveform valid; loudness ends slightly under the target
        out = out / np.float32(peak)
    return out.astype(np.float32, copy=False)


def quietest_blocks(
    *, y: np.ndarray, sr: int = SAMPLE_RATE, fraction: float = 0.2, block_s: float = 0.1
) -> np.ndarray:
    """The quietest ``fraction`` of ``block_s`` blocks of ``y`` (in time order), concatenated: a noise sample."""
    n = max(1, int(block_s * sr))
    k = len(y) // n
    if k < 2:
        return y
    blocks = y[: k * n].reshape(k, n)
    idx = np.sort(np.argsort((blocks.astype(np.float64) ** 2).mean(axis=1))[: max(1, int(k * fraction))])
    return blocks[idx].reshape(-1)


def denoise(*, y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Spectral-gating noise reduction (noisereduce) for hissy recordings; opt-in, it is lossy on music.

    The noise profile comes from the quietest 20 % of 100-ms blocks (pauses, fades), not from
    the whole track: estimated over everything, sustained notes look "stationary" and are
    gated away. ``prop_decrease`` 0.8 leaves a little hiss rather than eating soft notes.
    """
    import noisereduce  # here: opt-in, and a heavy import (seconds) that plain ingest never pays

    noise = quietest_blocks(y=y, sr=sr)
    out = noisereduce.reduce_noise(y=y, sr=sr, y_noise=noise, stationary=True, prop_decrease=0.8)
    return np.asarray(out, dtype=np.float32)


def prepare(
    *, y: np.ndarray, sr: int = SAMPLE_RATE, use_denoise: bool = False, whole_track: bool = False
) -> np.ndarray:
    """What every signal goes through before features: optional denoise, then loudness leveling.

    ``whole_track``: a library track in an ingest worker, which K-weights in time (cheaper on
    long audio; the worker imports scipy.signal anyway); queries keep the import-free FFT route.
    """
    if use_denoise:
        y = denoise(y=y, sr=sr)
    return level_loudness(y=y, sr=sr, in_time=whole_track)


def warm_up() -> None:
    """Import and warm what an ingest lane needs (numpy FFT plans, BLAS, scipy.signal, the melody's matrix) on 1 s
    of tone, so a process pays it once, up front, and per-track stage times are steady-state."""
    t = np.arange(SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
    y = prepare(y=0.1 * np.sin(2 * np.pi * 440.0 * t), whole_track=True)
    acoustic_features_and_band_chroma(y=y, sr=SAMPLE_RATE)
    melody_contour(y=y)  # its salience matrix: ~1 s once per process, else charged to the first track


def analyze_frames(
    *, frames: np.ndarray, embedder: MomentEmbedder, cpu_s: dict[str, float] | None = None
) -> tuple[list[SegmentData], np.ndarray]:
    """``frames [T, 143]`` → (segments, chroma ``[T, 12]`` float16). Pure given the embedder.

    ``cpu_s``, when given, gets this thread's CPU seconds added under "embed", "describe" and "timbre".
    Each segment's timbre vector comes from the shipped timbre model (:func:`encoder.timbre.shipped_timbre`).
    """
    t0 = time.thread_time()
    w = embedder.windowing  # segments: windows every hop, the last shortened one kept if long enough
    starts, emb = embedder.embed_track(frames=frames)
    t1 = time.thread_time()
    n = len(frames)
    timbre = shipped_timbre()
    tim = (
        timbre.project(
            window_statistics(
                frames=frames, starts=np.array([w.frames(s) for s in starts]), win=w.window_frames
            )
        )
        if len(starts)
        else np.zeros((0, timbre.dim), np.float32)
    )
    t2 = time.thread_time()
    segs = []
    for s, e, tv in zip(starts, emb, tim, strict=True):
        i = w.frames(s)
        win = frames[i : i + w.window_frames]
        d = describe(frames=win).to_dict()
        segs.append(
            SegmentData(
                start_s=float(s),
                end_s=float(min(i + w.window_frames, n) / w.fps),
                embedding=np.asarray(e, dtype=np.float32),
                descriptors=d,
                chroma_seq=chroma_sequence(frames=win).astype(np.float16),
                timbre=tv,
            )
        )
    if cpu_s is not None:
        cpu_s["embed"] = cpu_s.get("embed", 0.0) + t1 - t0
        cpu_s["timbre"] = cpu_s.get("timbre", 0.0) + t2 - t1
        cpu_s["describe"] = cpu_s.get("describe", 0.0) + time.thread_time() - t2
    return segs, frames[:, CHROMA].astype(np.float16)


@dataclass
class TrackFeatures:
    """The CPU stage's hand-off to the model stage: a leveled track's frames, computed without the model.

    Anything derived from the audio itself belongs here (``featurize_audio``); anything that
    needs the encoder belongs in ``embed_features``. The in-process pool runs both in one lane;
    the Ray pipeline (retrieval/ray_ingest.py) runs them as separate stages, so both store the same.
    """

    frames: np.ndarray  # [T, 143] float32 at 10 fps
    duration_s: float
    #: The track's melodic line, [T] float32 MIDI at 10 fps (NaN unvoiced): see retrieval/melody.py.
    melody: np.ndarray | None = None
    #: CPU seconds of the featurizing thread per stage ("level", "features", "melody").
    cpu_s: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    #: The chroma of the phone band alone, [T, 12] float32 at 10 fps (from the same STFT as ``frames``).
    band_chroma: np.ndarray | None = None


def featurize_audio(*, y: np.ndarray, use_denoise: bool = False) -> TrackFeatures:
    """Decoded mono 16-kHz ``y [n]`` → leveled acoustic frames (no model involved)."""
    t0, c0 = time.perf_counter(), time.thread_time()
    y = prepare(y=y, use_denoise=use_denoise, whole_track=True)
    c1 = time.thread_time()
    frames, band = acoustic_features_and_band_chroma(y=y, sr=SAMPLE_RATE)
    c2 = time.thread_time()
    melody = melody_contour(y=y)
    c3 = time.thread_time()
    return TrackFeatures(
        frames=frames,
        band_chroma=band,
        duration_s=y.size / SAMPLE_RATE,
        melody=melody,
        cpu_s={"level": c1 - c0, "features": c2 - c1, "melody": c3 - c2},
        seconds=time.perf_counter() - t0,
    )


def embed_features(*, features: TrackFeatures, embedder: MomentEmbedder) -> TrackAnalysis:
    """:class:`TrackFeatures` → :class:`TrackAnalysis` (embedded and described). Pure given the embedder."""
    t0 = time.perf_counter()
    cpu = dict(features.cpu_s)
    segs, chroma = analyze_frames(frames=features.frames, embedder=embedder, cpu_s=cpu)
    if features.melody is not None:
        pieces = window_melodies(
            contour=features.melody,
            starts_s=[s.start_s for s in segs],
            win_frames=embedder.windowing.window_frames,
        )
        for seg, piece in zip(segs, pieces, strict=True):
            seg.melody = piece
    return TrackAnalysis(
        duration_s=features.duration_s,
        model_version=embedder.model_version,
        segments=segs,
        chroma=chroma,
        band_chroma=None if features.band_chroma is None else features.band_chroma.astype(np.float16),
        timbre_version=shipped_timbre().version,
        seconds_analyze=features.seconds + time.perf_counter() - t0,
        cpu_s=cpu,
    )


def analyze_audio(*, y: np.ndarray, embedder: MomentEmbedder, use_denoise: bool = False) -> TrackAnalysis:
    """Decoded mono 16-kHz ``y [n]`` → :class:`TrackAnalysis` (leveled, featurized, embedded).

    ``TrackAnalysis.cpu_s`` says where this thread's CPU time went (level, features, embed,
    describe): one thread per lane, so it is the lane's cost of the track.
    """
    return embed_features(features=featurize_audio(y=y, use_denoise=use_denoise), embedder=embedder)
