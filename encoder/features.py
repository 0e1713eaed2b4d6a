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


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale (librosa's default, ``htk=False``): linear below 1 kHz, log above."""
    f = np.asarray(f, dtype=np.float64)
    mel = f / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log_part, mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), (200.0 / 3) * m)


def mel_band_edges() -> np.ndarray:
    """``librosa.mel_frequencies(n_mels=130, fmax=8000)``: the 128 bands' edges and centres in Hz."""
    return _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2))


def _mel_filterbank() -> np.ndarray:
    """``librosa.filters.mel(sr=16000, n_fft=2048, n_mels=128)`` (Slaney scale and area norm) in numpy."""
    fft_hz = np.fft.rfftfreq(N_FFT, d=1.0 / SAMPLE_RATE)
    mel_hz = mel_band_edges()
    ramps = mel_hz[:, None] - fft_hz[None, :]
    fdiff = np.diff(mel_hz)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]


def _chroma_filterbank() -> np.ndarray:
    """``librosa.filters.chroma(sr=16000, n_fft=2048, tuning=0)`` in numpy.

    Gaussian bumps per pitch class over each FFT bin's fractional octave, each bin L2-normalized
    across the 12 classes, weighted by a Gaussian over octaves (centre 5, width 2), C first.
    """
    freqs = np.linspace(0, SAMPLE_RATE, N_FFT, endpoint=False)[1:]
    bins = N_CHROMA * np.log2(freqs / (440.0 / 16))
    bins = np.concatenate([[bins[0] - 1.5 * N_CHROMA], bins])
    width = np.concatenate([np.maximum(bins[1:] - bins[:-1], 1.0), [1.0]])
    half = np.round(N_CHROMA / 2)
    d = np.remainder(bins[None, :] - np.arange(N_CHROMA)[:, None] + half + 10 * N_CHROMA, N_CHROMA) - half
    wts = np.exp(-0.5 * (2 * d / width[None, :]) ** 2)
    wts /= np.linalg.norm(wts, axis=0, keepdims=True)
    wts *= np.exp(-0.5 * ((bins / N_CHROMA - 5.0) / 2.0) ** 2)[None, :]
    wts = np.roll(wts, -3, axis=0)  # start at C, not A
    return wts[:, : 1 + N_FFT // 2]


@functools.cache
def _filterbanks() -> tuple[np.ndarray, np.ndarray]:
    """Mel [128, 1025] and chroma [12, 1025] filterbanks, built once per process (read-only)."""
    mel = _mel_filterbank().astype(np.float32)
    chroma = _chroma_filterbank().astype(np.float32)
    mel.flags.writeable = False
    chroma.flags.writeable = False
    return mel, chroma


def mel_filterbank() -> np.ndarray:
    """The mel filterbank [128, 1025] float32 the features use (read-only)."""
    return _filterbanks()[0]


@functools.cache
def _window() -> np.ndarray:
    """The periodic Hann window of ``librosa.stft`` (``scipy.signal.get_window('hann', N_FFT)``)."""
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)
    w.flags.writeable = False
    return w


def stft_magnitude(y: np.ndarray) -> np.ndarray:
    """``|librosa.stft(y, n_fft=2048, hop_length=1600, center=True)|`` in numpy: ``[n] → [1025, 1 + n // 1600]``.

    Zero-padded by half a window each side (librosa's ``pad_mode='constant'``), computed in
    float64 and returned as float32 as librosa's complex64 result gives it.
    """
    padded = np.pad(np.asarray(y, dtype=np.float32), N_FFT // 2)
    n_frames = 1 + (padded.size - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(n_frames, N_FFT), strides=(padded.strides[0] * HOP, padded.strides[0]), writeable=False
    )
    spec = np.fft.rfft(frames * _window(), axis=1).astype(np.complex64)  # [T, 1025]
    return np.ascontiguousarray(np.abs(spec).T)


def _normalize_columns(x: np.ndarray, *, order: float) -> np.ndarray:
    """``librosa.util.normalize(x, norm=order, axis=0)``: columns of (near) zero norm stay as they are."""
    norm = np.max(np.abs(x), axis=0) if order == np.inf else np.sum(np.abs(x), axis=0)
    norm = np.where(norm < np.finfo(x.dtype).tiny, 1.0, norm)
    return x / norm


def chroma_phases(*, y: np.ndarray, phases: int, frames: int) -> np.ndarray:
    """The chroma of :func:`acoustic_features` taken ``k / phases`` of a frame later, for ``k = 1..phases - 1``:
    ``[n]`` → ``[phases - 1, frames, 12]`` float32 (frames past the signal's end are 0).

    A clip cut at an arbitrary time has its frames up to half a hop off the 10-fps grid of the
    stored track chroma; at half a frame a clean clip's chroma lined up with its own passage at
    a mean frame cosine of 0.79 where the on-grid cut gave 0.99 (training sources). Only the
    frames asked for are transformed, in float32 (the per-frame max-normalized chroma moves by
    ~1e-6).
    """
    out = np.zeros((max(phases - 1, 0), frames, 12), np.float32)
    if phases < 2 or not frames:
        return out
    y = _check_audio(y=y, sr=SAMPLE_RATE)
    padded = np.pad(np.asarray(y, dtype=np.float32), N_FFT // 2)
    step = HOP // phases
    n = min(frames, 1 + (padded.size - N_FFT - (phases - 1) * step) // HOP)  # frames every phase has
    if n <= 0:
        return out
    b = padded.strides[0]
    cut = np.lib.stride_tricks.as_strided(
        padded[step:], shape=(phases - 1, n, N_FFT), strides=(b * step, b * HOP, b), writeable=False
    )  # [P - 1, n, N_FFT]: frame j of phase k starts k * step samples after frame j of the grid
    import scipy.fft  # here, not at import: only a search query needs it (numpy's float32 FFT took 5x as long)

    spec = scipy.fft.rfft(cut * _window().astype(np.float32), axis=-1, workers=1).reshape(-1, N_FFT // 2 + 1)
    power = spec.real**2 + spec.imag**2  # [(P - 1) * n, 1025]
    _, chroma_fb = _filterbanks()
    chroma = (power @ chroma_fb.T).reshape(phases - 1, n, 12)  # 2-D: one BLAS call, not a stacked loop
    norm = chroma.max(axis=-1, keepdims=True)
    out[:, :n] = chroma / np.where(norm < np.finfo(np.float32).tiny, 1.0, norm)
    return out


#: The band a phone line carries (Hz): :func:`band_chroma` keeps only the FFT bins inside it.
PHONE_BAND_HZ = (300.0, 3400.0)


@functools.cache
def _band_chroma_filterbank() -> np.ndarray:
    """The chroma filterbank [12, 1025] with every FFT bin outside :data:`PHONE_BAND_HZ` zeroed (read-only)."""
    hz = np.fft.rfftfreq(N_FFT, d=1.0 / SAMPLE_RATE)
    fb = _filterbanks()[1] * ((hz >= PHONE_BAND_HZ[0]) & (hz <= PHONE_BAND_HZ[1]))[None, :].astype(np.float32)
    fb.flags.writeable = False
    return fb


def acoustic_features_and_band_chroma(
    *, y: np.ndarray, sr: int = SAMPLE_RATE
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`acoustic_features` and, from the same STFT, the chroma of the phone band alone ``[T, 12]``
    float32 (per-frame max-normalized like the full chroma).

    A clip heard through a phone line has lost its bass and its top: its chroma lines up with the
    band-limited chroma of its own passage at a median frame cosine of 0.97, against 0.81 with the
    full-band chroma (training sources, 60 clips); search compares band-limited clips with this.
    """
    y = _check_audio(y=y, sr=sr)
    mag = stft_magnitude(y)
    band = _normalize_columns(_band_chroma_filterbank() @ (mag**2), order=np.inf).T
    return _frames_of(mag, sr), np.ascontiguousarray(band, dtype=np.float32)


def acoustic_features(*, y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Raw (unnormalized) acoustic frames of a mono 16 kHz signal.

    ``y``: ``[n]`` samples → ``[T, 143]`` float32 with ``T = 1 + n // 1600`` (10 fps, centred
    frames). Everything comes from ONE magnitude STFT (n_fft 2048, hop 1600), which is what
    makes this ~600x realtime: 128 log-mel (dB re 1.0), 12 chroma (per-frame max-normalized,
    no tuning estimation), RMS (dB), log spectral centroid (natural log of Hz), onset strength
    (from the log-mel). Raises :class:`ParameterError` for bad input.
    """
    y = _check_audio(y=y, sr=sr)
    return _frames_of(stft_magnitude(y), sr)


def _frames_of(mag: np.ndarray, sr: int) -> np.ndarray:
    """The frames of :func:`acoustic_features` from the magnitude STFT ``mag [1025, T]``."""
    power = mag**2
    mel_fb, chroma_fb = _filterbanks()
    mel = mel_fb @ power  # [128, T]: what librosa.feature.melspectrogram(S=power) computes
    # Absolute reference and no top_db: a clip must get the same values as the same moment
    # inside a whole track, so nothing may depend on the signal's own maximum.
    log_mel = 10.0 * np.log10(np.maximum(mel, _POWER_AMIN))  # librosa.power_to_db(ref=1.0)
    # = librosa.feature.chroma_stft(S=power, tuning=0): filterbank, then per-frame max-normalization
    chroma = _normalize_columns(chroma_fb @ power, order=np.inf)  # [12, T]
    # librosa.feature.rms(S=mag): DC and Nyquist bins count half, then Parseval over the window.
    half = power.copy()
    half[0] *= 0.5
    half[-1] *= 0.5
    rms = np.sqrt(2.0 * half.sum(axis=0, keepdims=True) / N_FFT**2)  # [1, T]
    rms_db = 10.0 * np.log10(np.maximum(rms**2, _RMS_AMIN**2))  # librosa.amplitude_to_db(ref=1.0)
    freqs = np.fft.rfftfreq(N_FFT, d=1.0 / sr).astype(np.float32)
    centroid = (freqs[:, None] * _normalize_columns(mag, order=1)).sum(axis=0, keepdims=True)  # [1, T]
    log_centroid = np.log(np.maximum(centroid, 1.0))
    # librosa.onset.onset_strength(S=log_mel): mean positive first difference, frame 0 gets 0.
    onset = np.concatenate([[0.0], np.maximum(np.diff(log_mel, axis=1), 0.0).mean(axis=0)])[None, :]
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
