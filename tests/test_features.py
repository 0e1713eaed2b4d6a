"""Acoustic features on synthetic signals whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from cadenza.errors import InputError
from encoder.features import (
    CENTROID,
    CHROMA,
    HOP,
    MEL,
    N_ACOUSTIC,
    N_FEATURES,
    ONSET,
    RMS,
    SAMPLE_RATE,
    ParameterError,
    acoustic_features,
    fit_normalization,
    normalize,
    window_features,
)

SR = SAMPLE_RATE


def sine(freq: float, seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("n", [8000, 16000, 16001, 17599, 17600, 48000])
def test_shape_follows_the_frame_formula(n: int) -> None:
    rng = np.random.default_rng(n)
    f = acoustic_features(y=(0.1 * rng.standard_normal(n)).astype(np.float32), sr=SR)
    assert f.shape == (1 + n // HOP, N_ACOUSTIC)
    assert f.dtype == np.float32
    assert np.all(np.isfinite(f))


def test_sine_at_440_peaks_at_a_with_centroid_near_440() -> None:
    f = acoustic_features(y=sine(440.0, 3.0), sr=SR)
    mid = f[5:-5]
    chroma = mid[:, CHROMA].mean(axis=0)
    assert int(np.argmax(chroma)) == 9  # C=0 ... A=9
    centroid_hz = np.exp(mid[:, CENTROID].mean())
    assert 400 < centroid_hz < 480
    # the loudest mel band is the one containing 440 Hz
    import librosa

    centres = librosa.mel_frequencies(n_mels=128, fmax=SR / 2)
    band = int(np.argmax(mid[:, MEL].mean(axis=0)))
    assert abs(centres[band] - 440) < 60


def test_chroma_follows_the_pitch_class() -> None:
    f = acoustic_features(y=sine(261.63, 2.0), sr=SR)  # middle C
    assert int(np.argmax(f[5:-5, CHROMA].mean(axis=0))) == 0


def test_rms_separates_silence_and_loud() -> None:
    quiet = acoustic_features(y=np.zeros(SR * 2, dtype=np.float32), sr=SR)
    loud = acoustic_features(y=sine(440.0, 2.0, amp=0.5), sr=SR)
    soft = acoustic_features(y=sine(440.0, 2.0, amp=0.05), sr=SR)
    assert loud[5:-5, RMS].mean() > soft[5:-5, RMS].mean() + 15  # 20 dB apart
    assert soft[5:-5, RMS].mean() > quiet[5:-5, RMS].mean() + 20
    assert np.all(np.isfinite(quiet))


def test_onsets_peak_at_clicks() -> None:
    y = np.zeros(SR * 6, dtype=np.float32)
    rng = np.random.default_rng(0)
    click_frames = [10, 25, 40, 55]
    for k in click_frames:
        start = k * HOP
        y[start : start + 400] = (0.8 * rng.standard_normal(400) * np.hanning(400)).astype(np.float32)
    onset = acoustic_features(y=y, sr=SR)[:, ONSET][:, 0]
    peaks = set(np.argsort(onset)[-len(click_frames) :].tolist())
    for k in click_frames:
        assert peaks & {k - 1, k, k + 1}, (k, sorted(peaks))


def test_window_features_appends_positions() -> None:
    f = acoustic_features(y=sine(330.0, 10.0), sr=SR)
    w = window_features(acoustic=f[:100])
    assert w.shape == (100, N_FEATURES)
    np.testing.assert_array_equal(w[:, :N_ACOUSTIC], f[:100])


@pytest.mark.parametrize(
    ("y", "sr"),
    [
        (np.zeros(0, dtype=np.float32), SR),
        (np.full(SR, np.nan, dtype=np.float32), SR),
        (np.full(SR, np.inf, dtype=np.float32), SR),
        (np.zeros(SR, dtype=np.float32), 44100),
        (np.zeros(SR // 4, dtype=np.float32), SR),
        (np.zeros((2, SR), dtype=np.float32), SR),
    ],
    ids=["empty", "nan", "inf", "wrong-sr", "too-short", "stereo"],
)
def test_bad_input_raises_parameter_error(y: np.ndarray, sr: int) -> None:
    with pytest.raises(ParameterError) as info:
        acoustic_features(y=y, sr=sr)
    assert isinstance(info.value, InputError)
    assert "\n" not in str(info.value)


def test_normalization_round_trip() -> None:
    rng = np.random.default_rng(1)
    frames = (rng.standard_normal((500, N_ACOUSTIC)) * 7 + 3).astype(np.float32)
    frames[:, 0] = 5.0  # a constant dimension must not blow up
    mean, std = fit_normalization(frames=frames)
    assert mean.shape == std.shape == (N_ACOUSTIC,)
    z = normalize(frames=frames, mean=mean, std=std)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[:, 1:].mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(z[:, 1:].std(axis=0), 1, atol=1e-3)
    np.testing.assert_allclose(z[:, 0], 0, atol=1e-6)
    with pytest.raises(ParameterError):
        normalize(frames=frames[:, :10], mean=mean, std=std)
    with pytest.raises(ParameterError):
        fit_normalization(frames=frames[:1])


def _librosa_frames(y: np.ndarray) -> np.ndarray:
    """The features as librosa's own calls compute them (what the numpy version replaces)."""
    import librosa

    mag = np.abs(librosa.stft(y, n_fft=2048, hop_length=HOP, center=True))
    power = mag**2
    mel = librosa.filters.mel(sr=SR, n_fft=2048, n_mels=128) @ power
    log_mel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    chroma = librosa.feature.chroma_stft(S=power, sr=SR, tuning=0.0, n_chroma=12)
    rms = librosa.amplitude_to_db(
        librosa.feature.rms(S=mag, frame_length=2048), ref=1.0, amin=1e-5, top_db=None
    )
    centroid = np.log(np.maximum(librosa.feature.spectral_centroid(S=mag, sr=SR, n_fft=2048), 1.0))
    onset = librosa.onset.onset_strength(S=log_mel, sr=SR, hop_length=HOP)[None, :]
    return np.concatenate([log_mel, chroma, rms, centroid, onset], axis=0).T


@pytest.mark.parametrize("seconds", [0.5, 10.0, 10.0077, 61.3])
def test_numpy_features_equal_librosa(seconds: float) -> None:
    rng = np.random.default_rng(int(seconds * 10))
    y = sine(220.0, seconds) + sine(330.0, seconds, amp=0.1) + 0.02 * rng.standard_normal(int(seconds * SR))
    y[: int(0.2 * y.size)] = 0.0  # a silent stretch: zero columns must stay zero, not NaN
    ours, theirs = acoustic_features(y=y.astype(np.float32)), _librosa_frames(y.astype(np.float32))
    assert ours.shape == theirs.shape
    # dB values within 1e-4 dB, chroma and onset within float32 rounding.
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)


def test_features_need_neither_librosa_nor_scipy_signal() -> None:
    # A fresh `cadenza search` pays seconds to import (and JIT) these; the query path must not.
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from retrieval.analysis import prepare; "
        "from encoder.features import acoustic_features; "
        "y = (0.1 * np.sin(np.arange(32000) / 5.0)).astype(np.float32); acoustic_features(y=prepare(y=y)); "
        "print(sorted(m for m in ('librosa', 'scipy.signal', 'numba') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_band_chroma_comes_from_the_same_stft_and_keeps_only_the_phone_band():
    from encoder.features import acoustic_features_and_band_chroma

    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    low, mid = np.sin(2 * np.pi * 110.0 * t), np.sin(2 * np.pi * 880.0 * 2 ** (3 / 12) * t)  # A2; C6
    y = (0.5 * low + 0.02 * mid).astype(np.float32)
    frames, band = acoustic_features_and_band_chroma(y=y)
    assert np.array_equal(frames, acoustic_features(y=y)) and band.shape == (len(frames), 12)
    # Full chroma: A (the louder low partial) peaks; in the phone band only C is left.
    assert np.argmax(frames[20, CHROMA]) == 9 and np.argmax(band[20]) == 0 and band[20, 9] < 0.1
