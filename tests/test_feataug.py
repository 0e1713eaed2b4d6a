"""Feature-domain augmentations (encoder.feataug) against audio-domain ground truth and known answers."""

from __future__ import annotations

import numpy as np
import pytest

from encoder import augment, feataug
from encoder.features import CENTROID, CHROMA, MEL, ONSET, RMS, SAMPLE_RATE, ParameterError, acoustic_features


def _chord_audio(seconds: float = 6.0, *, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    """A harmonic chord progression (A minor → C major → E major), optionally transposed exactly."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    y = np.zeros_like(t)
    chords = [(57, 60, 64), (60, 64, 67), (64, 68, 71)]
    seg = t.size // len(chords)
    for i, chord in enumerate(chords):
        sl = slice(i * seg, (i + 1) * seg)
        env = np.minimum(1.0, 20 * (t[sl] - t[sl][0])) * np.exp(-1.5 * (t[sl] - t[sl][0]))
        for note in chord:
            f0 = 440.0 * 2 ** ((note + shift - 69) / 12)
            for h in range(1, 8):
                if f0 * h < SAMPLE_RATE / 2:
                    y[sl] += env * np.sin(2 * np.pi * f0 * h * t[sl] + rng.uniform(0, 6.28)) / h
    return (0.2 * y / np.abs(y).max()).astype(np.float32)


def _mae(a: np.ndarray, b: np.ndarray, cols: slice) -> float:
    n = min(len(a), len(b))
    return float(np.abs(a[:n, cols] - b[:n, cols]).mean())


def test_pitch_shift_lands_near_the_truly_transposed_audio():
    f0 = acoustic_features(y=_chord_audio())
    up = acoustic_features(y=_chord_audio(shift=1.0))
    shifted = feataug.pitch_shift(frames=f0, semitones=1.0)
    # closer to the real transposition than the untransposed frames are, on every part
    assert _mae(shifted, up, MEL) < 0.6 * _mae(f0, up, MEL)
    assert _mae(shifted, up, CHROMA) < 0.5 * _mae(f0, up, CHROMA)
    assert _mae(shifted, up, CENTROID) < _mae(f0, up, CENTROID)
    # chroma: an integer shift is an exact rotation; RMS and onset do not move
    assert np.allclose(shifted[:, CHROMA], np.roll(f0[:, CHROMA], 1, axis=1), atol=1e-6)
    assert np.array_equal(shifted[:, RMS], f0[:, RMS]) and np.array_equal(shifted[:, ONSET], f0[:, ONSET])
    back = feataug.pitch_shift(frames=shifted, semitones=-1.0)
    assert np.allclose(back[:, CHROMA], f0[:, CHROMA], atol=1e-6)
    assert np.allclose(feataug.pitch_shift(frames=f0, semitones=0.0), f0)


def test_equalizer_matches_the_audio_filter():
    y = _chord_audio() + 0.01 * np.random.default_rng(1).standard_normal(6 * SAMPLE_RATE).astype(np.float32)
    f0 = acoustic_features(y=y)
    for kind, fc in (("highpass", 400.0), ("lowpass", 3000.0)):
        truth = acoustic_features(y=augment.eq(y=y, kind=kind, freq_hz=fc))
        est = feataug.equalize(frames=f0, curve_db=feataug.filter_curve(kind=kind, freq_hz=fc))
        assert _mae(est, truth, MEL) < 0.5 * _mae(f0, truth, MEL), kind
        assert _mae(est, truth, RMS) < 0.5 * _mae(f0, truth, RMS) + 0.05, kind
        assert _mae(est, truth, CENTROID) < 0.5 * _mae(f0, truth, CENTROID), kind
    flat = feataug.equalize(frames=f0, curve_db=np.zeros(128))
    assert np.allclose(flat, f0, atol=1e-4)
    bell = feataug.filter_curve(kind="peaking", freq_hz=1000.0, gain_db=6.0, q=1.0)
    assert bell.max() == pytest.approx(6.0, abs=0.3) and abs(bell[0]) < 0.1


def test_noise_raises_the_floor_like_real_noise():
    y = _chord_audio()
    f0 = acoustic_features(y=y)
    rng = np.random.default_rng(3)
    noise = np.random.default_rng(0).standard_normal(y.size)
    noise *= np.sqrt(np.mean(y.astype(np.float64) ** 2) / 10.0 / np.mean(noise**2))  # white, SNR 10 dB
    truth = acoustic_features(y=(y + noise).astype(np.float32))
    est = feataug.add_noise(frames=f0, snr_db=10.0, brown=False, rng=rng)
    assert _mae(est, truth, MEL) < 0.3 * _mae(f0, truth, MEL)
    assert _mae(est, truth, ONSET) < _mae(f0, truth, ONSET)
    quiet = feataug.add_noise(frames=f0, snr_db=80.0)
    loud_cells = f0[:, MEL] > f0[:, MEL].max() - 50.0
    # far below the music: what the music fills does not move (the near-silent gaps may fill up)
    assert np.abs(quiet[:, MEL] - f0[:, MEL])[loud_cells].max() < 0.05
    assert (est[:, MEL] >= f0[:, MEL] - 1e-3 - 3.0).all()  # noise adds power (flicker aside)


def test_time_stretch_resamples_time():
    frames = np.tile(np.arange(40, dtype=np.float32)[:, None], (1, 143))  # value = frame index
    fast = feataug.time_stretch(frames=frames, rate=1.25, n_out=20)
    assert fast.shape == (20, 143)
    assert np.allclose(fast[:, 0], np.arange(20) * 1.25)
    assert np.allclose(feataug.time_stretch(frames=frames, rate=1.0, n_out=40), frames)
    with pytest.raises(ParameterError, match="need"):
        feataug.time_stretch(frames=frames, rate=1.25, n_out=40)


def test_bad_input_is_a_parameter_error():
    with pytest.raises(ParameterError):
        feataug.pitch_shift(frames=np.zeros((10, 140)), semitones=1)
    with pytest.raises(ParameterError):
        feataug.pitch_shift(frames=np.zeros((10, 143)), semitones=30)
    with pytest.raises(ParameterError):
        feataug.equalize(frames=np.zeros((10, 143)), curve_db=np.zeros(12))
    with pytest.raises(ParameterError):
        feataug.filter_curve(kind="notch", freq_hz=100)


def test_augment_policy_is_deterministic_per_rng_and_can_be_off():
    frames = acoustic_features(y=_chord_audio(3.0))
    aug = feataug.FeatureAugment(pitch_prob=1.0, eq_prob=1.0, noise_prob=1.0)
    a = aug.apply(frames=frames, rng=np.random.default_rng(9))
    b = aug.apply(frames=frames, rng=np.random.default_rng(9))
    c = aug.apply(frames=frames, rng=np.random.default_rng(10))
    assert np.array_equal(a, b) and not np.array_equal(a, c) and a.shape == frames.shape
    off = feataug.FeatureAugment(pitch_prob=0, tempo_prob=0, eq_prob=0, noise_prob=0)
    assert not off.enabled()
    assert np.array_equal(off.apply(frames=frames, rng=np.random.default_rng(0)), frames)
    assert off.draw_rate(np.random.default_rng(0)) == 1.0
