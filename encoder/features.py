"""Frame features: 160 dims at 10 frames per second.

Layout of one frame (``N_FEATURES`` = 160):

====================  =======  ==============================================
slice                 dims     what
====================  =======  ==============================================
``MEL``               128      log-mel bands (dB)
``CHROMA``            12       chroma, C..B
``RMS``               1        RMS energy (dB)
``CENTROID``          1        spectral centroid (log Hz)
``ONSET``             1        onset strength
``POSITIONAL``        17       position *within the window*: ramp + 16 sinusoids
====================  =======  ==============================================

The first 143 (``N_ACOUSTIC``) depend only on the audio and are computed once per track
and stored; the 17 positional values depend on where a frame sits in the window the
encoder sees (an uploaded clip has no song position), so they are appended per window by
:func:`window_features`.
"""

from __future__ import annotations

import functools

import numpy as np

from cadenza.errors import InputError

SAMPLE_RATE = 16_000
HOP = 1_600  # samples: 10 frames per second at 16 kHz
FPS = SAMPLE_RATE // HOP
N_MELS = 128
N_CHROMA = 12
N_ACOUSTIC = N_MELS + N_CHROMA + 3  # 143
N_POSITIONAL = 17
N_FEATURES = N_ACOUSTIC + N_POSITIONAL  # 160

MEL = slice(0, 128)
CHROMA = slice(128, 140)
RMS = slice(140, 141)
CENTROID = slice(141, 142)
ONSET = slice(142, 143)
POSITIONAL = slice(143, 160)


class ParameterError(InputError):
    """Bad input to a feature function: empty, NaN/inf, wrong rate, too short, bad shape."""


def positional_features(*, n_frames: int) -> np.ndarray:
    """Position of each frame within a window of ``n_frames``.

    Returns ``[n_frames, 17]`` float32: column 0 is a linear ramp 0 → 1, columns 1..16 are
    8 sin/cos pairs at geometric frequencies (periods from 2 frames to ~1000 frames, as in
    a Transformer's positional encoding).
    """
    if n_frames < 1:
        raise ParameterError(f"n_frames must be >= 1, got {n_frames}")
    t = np.arange(n_frames, dtype=np.float64)
    ramp = t / max(n_frames - 1, 1)
    # 8 geometric frequencies, periods 2 .. 2*500**(7/7) frames.
    periods = 2.0 * (500.0 ** (np.arange(8) / 7.0))
    angles = 2.0 * np.pi * t[:, None] / periods[None, :]  # [T, 8]
    sincos = np.stack([np.sin(angles), np.cos(angles)], axis=-1).reshape(n_frames, 16)  # [T, 16]
    return np.concatenate([ramp[:, None], sincos], axis=1).astype(np.float32)  # [T, 17]


def window_features(*, acoustic: np.ndarray) -> np.ndarray:
    """Append positional values to one window of acoustic frames.

    ``acoustic``: ``[T, 143]`` → returns ``[T, 160]`` float32.
    """
    if acoustic.ndim != 2 or acoustic.shape[1] != N_ACOUSTIC:
        raise ParameterError(f"expected acoustic frames of shape [T, {N_ACOUSTIC}], got {acoustic.shape}")
    pos = positional_features(n_frames=acoustic.shape[0])
    return np.concatenate([acoustic.astype(np.float32, copy=False), pos], axis=1)


# --- acoustic frames -------------------------------------------------------------------

N_FFT = 2_048
MIN_SECONDS = 0.5
#: Floors keep silence finite: -100 dB for power, -100 dB for RMS amplitude.
_POWER_AMIN = 1e-10
_RMS_AMIN = 1e-5
#: Normalization never divides by less than this (a constant dimension stays centred at 0).
_STD_FLOOR = 1e-3


def _check_audio(*, y: np.ndarray, sr: int) -> np.ndarray:
    if sr != SAMPLE_RATE:
        raise ParameterError(f"audio must be resampled to {SAMPLE_RATE} Hz first, got {sr} Hz")
    y = np.asarray(y)
    if y.ndim != 1:
        raise ParameterError(f"audio must be mono 1-D samples, got shape {y.shape}; mix down first")
    if y.size == 0:
        raise ParameterError("audio is empty; give at least 0.5 s of sound")
    if y.size < MIN_SECONDS * SAMPLE_RATE:
        raise ParameterError(f"audio is {y.size / SAMPLE_RATE:.2f} s long; give at least {MIN_SECONDS} s")
    if not np.all(np.isfinite(y)):
        raise ParameterError("audio contains NaN or infinite samples; decode it again")
    return y.astype(np.float32, copy=False)


@functools.cache
def _filterbanks() -> tuple[np.ndarray, np.ndarray]:
    """Mel [128, 1025] and chroma [12, 1025] filterbanks, built once per process (read-only)."""
    import librosa

    mel = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS).astype(np.float32)
    chroma = librosa.filters.chroma(sr=SAMPLE_RATE, n_fft=N_FFT, tuning=0.0, n_chroma=N_CHROMA).astype(
        np.float32
    )
    mel.flags.writeable = False
    chroma.flags.writeable = False
    return mel, chroma


def acoustic_features(*, y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Raw (unnormalized) acoustic frames of a mono 16 kHz signal.

    ``y``: ``[n]`` samples → ``[T, 143]`` float32 with ``T = 1 + n // 1600`` (10 fps, centred
    frames). Everything comes from ONE magnitude STFT (n_fft 2048, hop 1600), which is what
    makes this ~600x realtime: 128 log-mel (dB re 1.0), 12 chroma (per-frame max-normalized,
    no tuning estimation), RMS (dB), log spectral centroid (natural log of Hz), onset strength
    (from the log-mel). Raises :class:`ParameterError` for bad input.
    """
    import librosa  # heavy import: only when features are actually computed

    y = _check_audio(y=y, sr=sr)
    mag = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP, center=True))  # [1025, T]
    power = mag**2
    mel_fb, chroma_fb = _filterbanks()
    mel = mel_fb @ power  # [128, T]: what librosa.feature.melspectrogram(S=power) computes
    # Absolute reference and no top_db: a clip must get the same values as the same moment
    # inside a whole track, so nothing may depend on the signal's own maximum.
    log_mel = librosa.power_to_db(mel, ref=1.0, amin=_POWER_AMIN, top_db=None)
    # = librosa.feature.chroma_stft(S=power, tuning=0): filterbank, then per-frame max-normalization
    chroma = librosa.util.normalize(chroma_fb @ power, norm=np.inf, axis=0)  # [12, T]
    rms = librosa.feature.rms(S=mag, frame_length=N_FFT)  # [1, T]
    rms_db = librosa.amplitude_to_db(rms, ref=1.0, amin=_RMS_AMIN, top_db=None)
    centroid = librosa.feature.spectral_centroid(S=mag, sr=sr, n_fft=N_FFT)  # [1, T]
    log_centroid = np.log(np.maximum(centroid, 1.0))
    onset = librosa.onset.onset_strength(S=log_mel, sr=sr, hop_length=HOP)[None, :]  # [1, T]
    frames = np.concatenate([log_mel, chroma, rms_db, log_centroid, onset], axis=0).T  # [T, 143]
    return np.ascontiguousarray(frames, dtype=np.float32)


def fit_normalization(*, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std of ``frames`` ``[N, 143]`` → (``[143]``, ``[143]``) float32.

    The std is floored so that :func:`normalize` never divides by ~0.
    """
    frames = np.asarray(frames)
    if frames.ndim != 2 or frames.shape[1] != N_ACOUSTIC or frames.shape[0] < 2:
        raise ParameterError(f"expected at least 2 frames of shape [N, {N_ACOUSTIC}], got {frames.shape}")
    f64 = frames.astype(np.float64)
    mean = f64.mean(axis=0)
    std = np.maximum(f64.std(axis=0), _STD_FLOOR)
    return mean.astype(np.float32), std.astype(np.float32)


def normalize(*, frames: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(frames - mean) / std``: ``[..., 143]`` → same shape, float32."""
    if frames.shape[-1] != N_ACOUSTIC or mean.shape != (N_ACOUSTIC,) or std.shape != (N_ACOUSTIC,):
        raise ParameterError(
            f"expected frames [..., {N_ACOUSTIC}] and stats [{N_ACOUSTIC}], got {frames.shape}, "
            f"{mean.shape}, {std.shape}"
        )
    out = (frames.astype(np.float32) - mean.astype(np.float32)) / np.maximum(
        std.astype(np.float32), _STD_FLOOR
    )
    return out.astype(np.float32, copy=False)
