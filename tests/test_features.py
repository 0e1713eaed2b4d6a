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
