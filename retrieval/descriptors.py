"""Measured musical descriptors of a moment, from its acoustic frames.

Pure functions over ``frames [T, 143]`` at 10 fps (see :mod:`encoder.features`): the same
code describes library segments at ingest and query clips at search time, so a listener
is always compared like with like. Nothing here guesses from metadata: key and mode come
from Krumhansl–Kessler profile correlation of the energy-weighted mean chroma, tempo from
the autocorrelation of the detrended onset envelope, valence/arousal from those measurements.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from encoder.features import CENTROID, CHROMA, FPS, ONSET, RMS

KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
#: Krumhansl–Kessler key profiles (C major / C minor), from probe-tone ratings.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
#: Frames quieter than this (RMS dB) carry no harmonic information.
SILENCE_DB = -60.0
#: Rate of the compact chroma sequence stored per segment (progression comparison).
SEQ_FPS = 2


def key_index(name: str) -> int:
    """ "C" → 0, "F#"/"Gb" → 6, "bb" → 10. Raises ValueError for anything else."""
    n = name.strip().replace("♯", "#").replace("♭", "b")
    if not n or n[0].upper() not in "CDEFGAB":
        raise ValueError(f"not a key name: {name!r}")
    semis = [0, 2, 4, 5, 7, 9, 11]["CDEFGAB".index(n[0].upper())]
    rest = n[1:].lower()
    if rest in ("#", "s", "is", "sharp"):
        semis += 1
    elif rest in ("b", "-", "es", "s-", "flat"):
        semis -= 1
    elif rest:
        raise ValueError(f"not a key name: {name!r}")
    return semis % 12


def frame_weights(*, frames: np.ndarray) -> np.ndarray:
    """``[T, 143]`` → ``[T]`` linear amplitude weights, 0 for silent frames."""
    rms_db = frames[:, RMS][:, 0].astype(np.float64)
    w = 10.0 ** (rms_db / 20.0)
    w[rms_db < SILENCE_DB] = 0.0
    return w


def mean_chroma(*, frames: np.ndarray) -> np.ndarray:
    """Energy-weighted mean chroma ``[12]`` summing to 1 (uniform when silent)."""
    w = frame_weights(frames=frames)
    chroma = frames[:, CHROMA].astype(np.float64)
    if w.sum() <= 0:
        return np.full(12, 1 / 12)
    m = (chroma * w[:, None]).sum(axis=0) / w.sum()
    s = m.sum()
    return m / s if s > 0 else np.full(12, 1 / 12)


def chroma_sequence(*, frames: np.ndarray, fps_out: int = SEQ_FPS) -> np.ndarray:
    """``[T, 143]`` → ``[ceil(T * fps_out / 10), 12]`` float32: energy-weighted chroma per block, rows sum to 1."""
    step = max(1, FPS // fps_out)
    chroma = frames[:, CHROMA].astype(np.float64)
    w = frame_weights(frames=frames) + 1e-12
    n = int(np.ceil(len(frames) / step))
    out = np.full((n, 12), 1 / 12)
    for i in range(n):
        c, ww = chroma[i * step : (i + 1) * step], w[i * step : (i + 1) * step]
        m = (c * ww[:, None]).sum(axis=0)
        if m.sum() > 0:
            out[i] = m / m.sum()
    return out.astype(np.float32)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 1e-12 else 0.0


def key_scores(*, chroma: np.ndarray) -> np.ndarray:
    """``[12]`` chroma → ``[2, 12]`` Pearson correlations with (major, minor) profiles on each tonic."""
    idx = (np.arange(12)[None, :] - np.arange(12)[:, None]) % 12  # row t = the profile rolled to tonic t
    profiles = np.stack([KK_MAJOR[idx], KK_MINOR[idx]])  # [2, 12 tonics, 12]
    p = profiles - profiles.mean(axis=2, keepdims=True)
    c = np.asarray(chroma, dtype=np.float64).reshape(12)
    c = c - c.mean()
    d = np.sqrt((p * p).sum(axis=2) * (c * c).sum())  # [2, 12]
    num = p @ c
    return np.where(d > 1e-12, num / np.where(d > 1e-12, d, 1.0), 0.0)


def estimate_key(*, chroma: np.ndarray) -> tuple[int, str, float]:
    """``[12]`` mean chroma → (tonic 0..11, "major"|"minor", confidence in [0, 1]).

    Confidence is the best profile correlation (clipped to [0, 1]): near 0 for flat chroma
    (noise, percussion), ~0.8–0.9 for clearly tonal music.
    """
    scores = key_scores(chroma=chroma)
    m, t = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return int(t), ("major", "minor")[int(m)], float(np.clip(scores[m, t], 0.0, 1.0))


#: Tempo prior: log-normal around 120 BPM, 0.8 octave wide (listeners' preferred pulse; with the
#: 10-fps envelope a wider prior picked half or double the beat on a third of music-like signals).
TEMPO_PRIOR_BPM, TEMPO_PRIOR_OCTAVES = 120.0, 0.8
#: Multiples of the beat period whose autocorrelation is summed (a metrical comb).
TEMPO_HARMONICS = 8


def estimate_tempo(
    *, onset: np.ndarray, fps: float = FPS, lo: float = 50.0, hi: float = 200.0
) -> float | None:
    """Onset envelope ``[T]`` → tempo in BPM, or None when there is no periodic pulse.

    The envelope is detrended (minus its 1-s moving average, half-wave rectified: sustained
    swells are not beats), autocorrelated, read on a 0.25-BPM grid (linear interpolation
    between integer lags gives sub-frame precision from 10 fps) and summed over up to 8
    multiples of each candidate period, weighted by a log-normal prior around 120 BPM.
    On synthetic music-like 10-s signals (eighth-note melodies, block chords, waltzes,
    sixteenth hi-hats; 60–176 BPM) this found the beat within 4 % in 92 of 120 cases, the
    earlier estimator (raw envelope, 4 multiples, prior 110 BPM ± 1 octave) in 54.
    """
    x = np.asarray(onset, dtype=np.float64).reshape(-1)
    if x.size < 4 * fps or x.std() < 1e-6:
        return None
    k = max(1, int(round(fps)))
    x = np.maximum(x - np.convolve(x, np.ones(k) / k, mode="same"), 0.0)
    if x.std() < 1e-9:
        return None
    x = x - x.mean()
    n = x.size
    full = np.correlate(x, x, mode="full")[n - 1 :]
    ac = full / np.arange(n, 0, -1)  # unbiased: each lag divided by its overlap
    ac = ac / max(ac[0], 1e-12)
    bpms = np.arange(lo, hi + 0.25, 0.25)
    lags = 60.0 * fps / bpms
    score = np.zeros_like(bpms)
    limit = n // 2
    for m in range(1, TEMPO_HARMONICS + 1):
        lm = lags * m
        ok = lm < limit
        score[ok] += np.interp(lm[ok], np.arange(n), ac) / m
    prior = np.exp(-0.5 * (np.log2(bpms / TEMPO_PRIOR_BPM) / TEMPO_PRIOR_OCTAVES) ** 2)
    best = int(np.argmax(score * prior))
    if score[best] <= 0.1:
        return None
    return float(bpms[best])


def onset_density(*, onset: np.ndarray, fps: float = FPS) -> float:
    """Onsets per second: local maxima of the envelope above mean + 0.5 std."""
    x = np.asarray(onset, dtype=np.float64).reshape(-1)
    if x.size < 3:
        return 0.0
    thr = x.mean() + 0.5 * x.std()
    peaks = (x[1:-1] > x[:-2]) & (x[1:-1] >= x[2:]) & (x[1:-1] > thr)
    return float(peaks.sum() / (x.size / fps))


def loudness_db(*, frames: np.ndarray) -> float:
    """Energy mean of the frames' RMS dB (silence floors at −100)."""
    rms_db = frames[:, RMS][:, 0].astype(np.float64)
    return float(10.0 * np.log10(np.mean(10.0 ** (rms_db / 10.0)) + 1e-12))


def brightness_hz(*, frames: np.ndarray) -> float:
    """Energy-weighted mean spectral centroid in Hz (column 141 is natural-log Hz)."""
    w = frame_weights(frames=frames)
    hz = np.exp(frames[:, CENTROID][:, 0].astype(np.float64))
    return float((hz * w).sum() / w.sum()) if w.sum() > 0 else float(np.median(hz))


def tonalness(*, frames: np.ndarray) -> float:
    """How pitched the sound is, in [0, 1]: mean over voiced frames of chroma peakiness.

    Chroma is max-normalized per frame, so a flat frame (noise) has mean ≈ 1 and a frame
    with a few strong pitch classes has mean ≈ 0.3; we report ``1 - mean`` rescaled.
    """
    w = frame_weights(frames=frames)
    voiced = w > 0
    if not voiced.any():
        return 0.0
    c = frames[voiced][:, CHROMA].astype(np.float64)
    mx = np.maximum(c.max(axis=1, keepdims=True), 1e-9)
    flat = (c / mx).mean(axis=1)  # 1 = flat, 1/12 = a single pitch class
    return float(np.clip((1.0 - flat) / (1.0 - 1 / 12), 0.0, 1.0).mean())


@dataclass
class Descriptors:
    """What was measured for one moment."""

    chroma_mean: list[float]  # 12, sums to 1
    key_index: int
    key: str  # "C" .. "B"
    mode: str  # "major" | "minor"
    key_confidence: float
    tempo_bpm: float | None
    loudness_db: float
    brightness_hz: float
    onset_density: float
    tonalness: float
    valence: float  # [-1, 1]
    arousal: float  # [-1, 1]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["chroma_mean"] = [round(float(v), 4) for v in self.chroma_mean]
        for k in (
            "key_confidence",
            "loudness_db",
            "brightness_hz",
            "onset_density",
            "tonalness",
            "valence",
            "arousal",
        ):
            d[k] = round(float(d[k]), 3)
        if self.tempo_bpm is not None:
            d["tempo_bpm"] = round(float(self.tempo_bpm), 1)
        return d


def loudness_unit(loudness_db: float) -> float:
    """Loudness on the mood scale, [−1, 1]: −1 at −36 dB, 0 at −26 dB, +1 at −16 dB and above."""
    return float(np.clip((loudness_db + 26.0) / 10.0, -1, 1))


def mood(
    *,
    mode: str,
    key_confidence: float,
    brightness: float,
    tempo_bpm: float | None,
    loudness: float,
    density: float,
) -> tuple[float, float]:
    """(valence, arousal) in [−1, 1] from measured mode, brightness, tempo, loudness and onset density."""
    sign = 1.0 if mode == "major" else -1.0
    bright = float(np.clip(np.log(max(brightness, 1.0) / 1500.0) / np.log(4.0), -1, 1))
    valence = float(np.clip(0.7 * sign * key_confidence + 0.3 * bright, -1, 1))
    tempo_n = 0.0 if tempo_bpm is None else float(np.clip((tempo_bpm - 100.0) / 60.0, -1, 1))
    loud_n = loudness_unit(loudness)
    dens_n = float(np.clip((density - 2.0) / 2.0, -1, 1))
    arousal = float(np.clip(0.4 * tempo_n + 0.35 * loud_n + 0.25 * dens_n, -1, 1))
    return valence, arousal


def describe(*, frames: np.ndarray) -> Descriptors:
    """``frames [T, 143]`` (one moment, typically 100 frames) → :class:`Descriptors`."""
    frames = np.asarray(frames)
    chroma = mean_chroma(frames=frames)
    k, mode_name, conf = estimate_key(chroma=chroma)
    onset = frames[:, ONSET][:, 0]
    tempo = estimate_tempo(onset=onset)
    loud = loudness_db(frames=frames)
    bright = brightness_hz(frames=frames)
    dens = onset_density(onset=onset)
    val, aro = mood(
        mode=mode_name, key_confidence=conf, brightness=bright, tempo_bpm=tempo, loudness=loud, density=dens
    )
    return Descriptors(
        chroma_mean=[float(v) for v in chroma],
        key_index=k,
        key=KEY_NAMES[k],
        mode=mode_name,
        key_confidence=conf,
        tempo_bpm=tempo,
        loudness_db=loud,
        brightness_hz=bright,
        onset_density=dens,
        tonalness=tonalness(frames=frames),
        valence=val,
        arousal=aro,
    )
