"""Augmentations applied to stored acoustic frames, so every training clip can be a fresh view.

The corpus stores a handful of audio-domain views per work (one EQ, one noise, one ±1 semitone
render...). A few fixed views per work teach the encoder those few distortions, not the
family: last session's encoder re-found pitch-shifted queries 13–25 % of the time although
half the works had a ±1 render. These functions produce the same distortions directly on the
raw ``[T, 143]`` frames (``encoder.features`` layout, before normalization), cheaply enough to
draw a new one for every clip of every batch:

- :func:`pitch_shift` — resample the log-mel axis by ``2**(s/12)`` in frequency, rotate the
  chroma by ``s`` bins (fractional: interpolated), move the log-centroid by ``s·ln2/12``;
- :func:`time_stretch` — linear interpolation along time (tempo ±x %);
- :func:`equalize` — a filter response evaluated at the mel band centres added to the dB
  bands, with RMS, centroid and onset moved by what the curve did to the band powers;
- :func:`add_noise` — white or brown noise at an SNR, added in the power domain, with the
  chroma flattened and RMS / centroid / onset recomputed the same way.

The approximations (mel bands treated as samples of a smooth power spectrum; chroma of noise
taken as flat) are good to a fraction of a dB on mel, which is what the encoder sees most of.
All functions are pure, keyword-only, ``[T, 143] → [T', 143]`` float32.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from encoder.features import (
    CENTROID,
    CHROMA,
    MEL,
    N_ACOUSTIC,
    N_FFT,
    N_MELS,
    ONSET,
    RMS,
    ParameterError,
    mel_band_edges,
    mel_filterbank,
)

_FLOOR_DB = -100.0  # = 10·log10(features._POWER_AMIN): nothing in a stored frame is below it
_LN2_12 = float(np.log(2.0) / 12.0)


@functools.cache
def _bands() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mel band centres [128] Hz, bandwidth weights [128] Hz and white-noise band gains [128].

    A band value is a slaney-area-normalized average of the power spectrum, so the linear
    power it stands for is ``value × bandwidth``; white noise of unit variance puts
    ``768 · sum_k fb[m, k]`` into band ``m`` (a Hann window of 2048 has ``Σw² = 768``).
    """
    edges = mel_band_edges()  # [130]
    centres = edges[1:-1]
    width = (edges[2:] - edges[:-2]) / 2.0
    fb = mel_filterbank()  # [128, 1025]
    white = 0.375 * N_FFT * fb.sum(axis=1)  # Σw² = 0.375·N for a Hann window
    # Noise power in a band is a weighted sum of exponential FFT-bin powers: a Gamma with this
    # many degrees of freedom (few in the narrow low bands, where noisy frames flicker most).
    dof = np.maximum(fb.sum(axis=1) ** 2 / np.maximum((fb**2).sum(axis=1), 1e-30), 1.0)
    out = tuple(a.astype(np.float64) for a in (centres, width, white, dof))
    for a in out:
        a.flags.writeable = False
    return out  # type: ignore[return-value]


def _check(frames: np.ndarray) -> np.ndarray:
    if frames.ndim != 2 or frames.shape[1] != N_ACOUSTIC or frames.shape[0] < 1:
        raise ParameterError(f"expected frames of shape [T, {N_ACOUSTIC}], got {frames.shape}")
    return frames.astype(np.float32, copy=True)


def onset_from_mel(*, log_mel: np.ndarray) -> np.ndarray:
    """What ``librosa.onset.onset_strength(S=log_mel.T)`` gives for hop 1600: ``[T, 128] → [T]``.

    Mean over bands of the positive first difference; frame 0 has none (0).
    """
    diff = np.maximum(np.diff(log_mel, axis=0), 0.0).mean(axis=1)  # [T-1]
    return np.concatenate([[0.0], diff]).astype(np.float32)


def _moved_descriptors(*, before: np.ndarray, after_mel: np.ndarray) -> np.ndarray:
    """Frames with new mel and RMS / centroid / onset shifted by what the mel change implies."""
    centres, width, _, _ = _bands()
    out = before.copy()
    p0 = 10.0 ** (before[:, MEL].astype(np.float64) / 10.0) * width  # [T, 128] linear power
    p1 = 10.0 ** (after_mel.astype(np.float64) / 10.0) * width
    tiny = 1e-30
    out[:, RMS] += (10.0 * np.log10((p1.sum(1) + tiny) / (p0.sum(1) + tiny)))[:, None]
    # The centroid is magnitude-weighted (librosa.feature.spectral_centroid(S=mag)).
    m0, m1 = np.sqrt(p0 * width), np.sqrt(p1 * width)
    c0 = (m0 * centres).sum(1) / (m0.sum(1) + tiny)
    c1 = (m1 * centres).sum(1) / (m1.sum(1) + tiny)
    out[:, CENTROID] += np.log(np.maximum(c1, 1.0) / np.maximum(c0, 1.0))[:, None]
    out[:, ONSET] += (onset_from_mel(log_mel=after_mel) - onset_from_mel(log_mel=before[:, MEL]))[:, None]
    out[:, ONSET] = np.maximum(out[:, ONSET], 0.0)
    out[:, MEL] = after_mel
    return out.astype(np.float32)


def pitch_shift(*, frames: np.ndarray, semitones: float) -> np.ndarray:
    """Transpose by ``semitones`` (fractional allowed): ``[T, 143] → [T, 143]``.

    Band ``m`` takes the value the spectrum had at ``centre_m / 2**(s/12)`` (linear
    interpolation between band centres; beyond the edges the edge band repeats). Chroma rotates
    by ``s`` classes and is renormalized to max 1; RMS and onset are unchanged.
    """
    out = _check(frames)
    if abs(semitones) > 12:
        raise ParameterError(f"semitones must be within ±12, got {semitones}")
    centres, _, _, _ = _bands()
    src = np.interp(centres / 2.0 ** (semitones / 12.0), centres, np.arange(N_MELS, dtype=np.float64))
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, N_MELS - 1)
    frac = (src - lo).astype(np.float32)
    mel = frames[:, MEL]
    out[:, MEL] = mel[:, lo] * (1.0 - frac) + mel[:, hi] * frac  # [T, 128]
    k = int(np.floor(semitones))
    f = float(semitones - k)
    chroma = frames[:, CHROMA]
    rolled = np.roll(chroma, k, axis=1) * (1.0 - f) + np.roll(chroma, k + 1, axis=1) * f  # [T, 12]
    out[:, CHROMA] = rolled / np.maximum(rolled.max(axis=1, keepdims=True), 1e-6)
    out[:, CENTROID] += semitones * _LN2_12
    return out


def time_stretch(*, frames: np.ndarray, rate: float, n_out: int) -> np.ndarray:
    """Play ``rate`` times faster: output frame ``i`` samples input time ``i·rate``.

    ``frames [T, 143]`` must hold at least ``1 + (n_out - 1)·rate`` frames; returns ``[n_out, 143]``.
    """
    frames = _check(frames)
    if not 0.5 <= rate <= 2.0:
        raise ParameterError(f"rate must be within 0.5–2, got {rate}")
    pos = np.arange(n_out, dtype=np.float64) * rate
    if pos[-1] > frames.shape[0] - 1 + 1e-9:
        raise ParameterError(
            f"need {int(np.ceil(pos[-1])) + 1} frames for rate {rate}, got {frames.shape[0]}"
        )
    lo = np.minimum(np.floor(pos).astype(int), frames.shape[0] - 1)
    hi = np.minimum(lo + 1, frames.shape[0] - 1)
    frac = (pos - lo).astype(np.float32)[:, None]
    return (frames[lo] * (1.0 - frac) + frames[hi] * frac).astype(np.float32)


def filter_curve(*, kind: str, freq_hz: float, gain_db: float = 0.0, q: float = 1.0) -> np.ndarray:
    """Power response in dB at the 128 mel band centres → ``[128]``.

    ``lowpass`` / ``highpass``: 4th-order Butterworth (``∓10·log10(1 + (f/fc)^±8)``), as in
    ``encoder.augment.eq``; ``peaking``: a bell of ``gain_db`` at ``freq_hz``, about ``1/q``
    octaves wide (Gaussian in log-frequency, close to the RBJ bell for q in 0.5–2).
    """
    centres, _, _, _ = _bands()
    f = np.maximum(centres, 1.0)
    if kind == "lowpass":
        return -10.0 * np.log10(1.0 + (f / freq_hz) ** 8)
    if kind == "highpass":
        return -10.0 * np.log10(1.0 + (freq_hz / f) ** 8)
    if kind == "peaking":
        octaves = np.log2(f / freq_hz)
        return gain_db * np.exp(-0.5 * (octaves * q * 2.0) ** 2)
    raise ParameterError(f"filter kind must be lowpass, highpass or peaking, got {kind!r}")


def equalize(*, frames: np.ndarray, curve_db: np.ndarray) -> np.ndarray:
    """Add a filter response ``curve_db [128]`` to the mel bands: ``[T, 143] → [T, 143]``."""
    frames = _check(frames)
    if curve_db.shape != (N_MELS,):
        raise ParameterError(f"curve_db must have shape [{N_MELS}], got {curve_db.shape}")
    mel = np.maximum(frames[:, MEL] + curve_db[None, :].astype(np.float32), _FLOOR_DB)
    return _moved_descriptors(before=frames, after_mel=mel)


def add_noise(
    *, frames: np.ndarray, snr_db: float, brown: bool = False, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Noise at ``snr_db`` below the clip's mean power, added in the power domain.

    The clip's power comes from its RMS column (mean over frames, as ``augment.add_noise`` uses
    the clip's mean square). White noise is flat per Hz; ``brown`` falls 6 dB per octave above
    40 Hz (``augment.add_noise``'s "pink-ish" branch). Chroma: noise adds the same energy to
    every pitch class, relative to a tonal frame whose strongest class holds ~30 % of its power.
    With ``rng``, each band of each frame gets the noise's own frame-to-frame flicker (Gamma with
    the band's degrees of freedom), which is what raises the onset strength of noisy audio.
    """
    frames = _check(frames)
    centres, width, white, dof = _bands()
    # rms² of librosa.feature.rms(S=|STFT|) is 0.375 × the mean square for broadband signals.
    signal = float(np.mean(10.0 ** (frames[:, RMS].astype(np.float64) / 10.0)))
    variance = signal / 0.375 / 10.0 ** (snr_db / 10.0)
    shape = white.copy()
    if brown:
        tilt = (40.0 / np.maximum(centres, 40.0)) ** 2
        shape = shape * tilt * (white * width).sum() / (white * tilt * width).sum()
    noise_band = np.broadcast_to(variance * shape, (frames.shape[0], N_MELS))  # [T, 128]
    if rng is not None:
        noise_band = noise_band * rng.gamma(dof, 1.0 / dof, size=noise_band.shape)
    mel = 10.0 * np.log10(10.0 ** (frames[:, MEL].astype(np.float64) / 10.0) + noise_band)
    out = _moved_descriptors(before=frames, after_mel=mel.astype(np.float32))
    frame_power = 10.0 ** (frames[:, RMS].astype(np.float64) / 10.0)  # [T, 1]
    ratio = (variance * 0.375 / 12.0) / np.maximum(0.3 * frame_power, 1e-30)  # [T, 1]
    chroma = frames[:, CHROMA] + ratio.astype(np.float32)
    out[:, CHROMA] = chroma / np.maximum(chroma.max(axis=1, keepdims=True), 1e-6)
    return out


@dataclass(frozen=True)
class FeatureAugment:
    """Probabilities and ranges of the per-clip feature augmentations used in training."""

    pitch_prob: float = 0.35
    pitch_max: float = 2.0  # semitones, uniform in ±pitch_max (fractional: detuned sources too)
    tempo_prob: float = 0.3
    tempo_max: float = 0.08  # rate in 1 ± tempo_max
    eq_prob: float = 0.35
    noise_prob: float = 0.3
    snr_db: tuple[float, float] = (3.0, 30.0)

    def enabled(self) -> bool:
        return max(self.pitch_prob, self.tempo_prob, self.eq_prob, self.noise_prob) > 0

    def draw_rate(self, rng: np.random.Generator) -> float:
        """The tempo rate for the next clip (1.0 when no stretch): decides how many frames to read."""
        if self.tempo_prob > 0 and rng.random() < self.tempo_prob:
            return float(rng.uniform(1.0 - self.tempo_max, 1.0 + self.tempo_max))
        return 1.0

    def apply(self, *, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Pitch, EQ and noise, each with its probability: ``[T, 143] → [T, 143]``."""
        out = frames
        if self.pitch_prob > 0 and rng.random() < self.pitch_prob:
            out = pitch_shift(frames=out, semitones=float(rng.uniform(-self.pitch_max, self.pitch_max)))
        if self.eq_prob > 0 and rng.random() < self.eq_prob:
            out = equalize(frames=out, curve_db=random_curve(rng=rng))
        if self.noise_prob > 0 and rng.random() < self.noise_prob:
            snr = float(rng.uniform(*self.snr_db))
            out = add_noise(frames=out, snr_db=snr, brown=bool(rng.random() < 0.5), rng=rng)
        return out


def random_curve(*, rng: np.random.Generator) -> np.ndarray:
    """A random EQ, wider than the benchmark's: low-pass 1.5–7 kHz, high-pass 80–700 Hz, or a
    ±3–12 dB bell at 150 Hz–6 kHz; a third of the time two of them stacked. → ``[128]`` dB."""

    def one() -> np.ndarray:
        choice = rng.integers(3)
        if choice == 0:
            return filter_curve(kind="lowpass", freq_hz=float(rng.uniform(1500, 7000)))
        if choice == 1:
            return filter_curve(kind="highpass", freq_hz=float(rng.uniform(80, 700)))
        return filter_curve(
            kind="peaking",
            freq_hz=float(np.exp(rng.uniform(np.log(150), np.log(6000)))),
            gain_db=float(rng.choice([-1, 1]) * rng.uniform(3, 12)),
            q=float(rng.uniform(0.5, 2.0)),
        )

    curve = one()
    if rng.random() < 1 / 3:
        curve = curve + one()
    return curve
