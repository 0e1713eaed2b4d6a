"""Degradations measured against what they promise."""

from __future__ import annotations

import numpy as np
import pytest

from encoder import augment
from encoder.features import ParameterError

SR = 16_000


def tone(freq: float, seconds: float = 3.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t) * (1 + 0.3 * np.sin(2 * np.pi * 1.3 * t))).astype(np.float32)


def power_at(y: np.ndarray, freq: float) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size))) ** 2
    freqs = np.fft.rfftfreq(y.size, 1 / SR)
    return float(spec[np.abs(freqs - freq) < 20].sum())


def test_gain_in_db() -> None:
    y = tone(440)
    z = augment.gain(y=y, db=-6.0)
    assert z.dtype == np.float32
    assert abs(20 * np.log10(np.max(np.abs(z)) / np.max(np.abs(y))) + 6.0) < 0.01


@pytest.mark.parametrize("snr_db", [5.0, 15.0, 30.0])
def test_noise_at_requested_snr(snr_db: float) -> None:
    y = tone(440)
    for seed in range(4):  # both the white and the pink branch
        z = augment.add_noise(y=y, rng=np.random.default_rng(seed), snr_db=snr_db)
        noise = z - y
        measured = 10 * np.log10(np.mean(y.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
        assert abs(measured - snr_db) < 0.2
        assert z.shape == y.shape and z.dtype == np.float32


def test_random_noise_snr_in_range() -> None:
    y = tone(440)
    for seed in range(5):
        z = augment.add_noise(y=y, rng=np.random.default_rng(seed))
        snr = 10 * np.log10(np.mean(y**2) / np.mean((z - y) ** 2))
        assert 4.9 < snr < 30.1


def test_lowpass_kills_a_high_sine_and_keeps_a_low_one() -> None:
    y = tone(300) + tone(6000)
    z = augment.eq(y=y, kind="lowpass", freq_hz=2000)
    assert power_at(z, 6000) < 1e-4 * power_at(y, 6000)
    assert power_at(z, 300) > 0.9 * power_at(y, 300)
    h = augment.eq(y=y, kind="highpass", freq_hz=2000)
    assert power_at(h, 300) < 1e-4 * power_at(y, 300)


def test_peaking_boosts_its_band() -> None:
    y = tone(1000) + tone(4000)
    z = augment.eq(y=y, kind="peaking", freq_hz=1000, gain_db=9.0, q=2.0)
    gain_1k = 10 * np.log10(power_at(z, 1000) / power_at(y, 1000))
    gain_4k = 10 * np.log10(power_at(z, 4000) / power_at(y, 4000))
    assert abs(gain_1k - 9.0) < 0.7
    assert abs(gain_4k) < 1.5
    with pytest.raises(ParameterError):
        augment.eq(y=y, kind="notch", freq_hz=1000)


def test_reverb_keeps_length_and_level_and_smears() -> None:
    y = np.zeros(SR * 2, dtype=np.float32)
    y[SR // 2 : SR // 2 + 200] = 0.9  # a short burst
    z = augment.reverb(y=y, rng=np.random.default_rng(0), rt60=1.0, wet=0.5)
    assert z.shape == y.shape
    assert abs(np.sqrt(np.mean(z**2)) - np.sqrt(np.mean(y**2))) < 1e-3
    after = slice(SR // 2 + 2000, SR // 2 + 6000)  # 125–375 ms after the burst
    assert np.sqrt(np.mean(z[after] ** 2)) > 1e-3 and np.all(y[after] == 0)


def test_mp3_roundtrip_keeps_length_and_alignment() -> None:
    rng = np.random.default_rng(3)
    y = tone(440, seconds=4.0) + (0.05 * rng.standard_normal(4 * SR)).astype(np.float32)
    z = augment.mp3_roundtrip(y=y, kbps=32)
    assert z.shape == y.shape and z.dtype == np.float32
    assert not np.allclose(z, y, atol=1e-3)  # it is lossy
    err = np.sqrt(np.mean((z - y) ** 2)) / np.sqrt(np.mean(y**2))
    assert err < 0.5  # aligned sample for sample: a misaligned decode would be ~1.4
    z2 = augment.mp3_roundtrip(y=y, rng=np.random.default_rng(0))
    assert z2.shape == y.shape


def test_pitch_shift_and_time_stretch() -> None:
    from encoder.features import CHROMA, acoustic_features

    y = tone(440, seconds=2.0)
    up = augment.pitch_shift(y=y, semitones=2)
    assert up.shape == y.shape
    assert int(np.argmax(acoustic_features(y=up, sr=SR)[3:-3, CHROMA].mean(axis=0))) == 11  # A → B
    fast = augment.time_stretch(y=y, rate=1.25)
    assert abs(fast.size - y.size / 1.25) < 0.01 * y.size
    with pytest.raises(ParameterError):
        augment.time_stretch(y=y, rate=0)


def test_empty_input_is_refused() -> None:
    with pytest.raises(ParameterError):
        augment.gain(y=np.zeros(0, dtype=np.float32), db=3)
