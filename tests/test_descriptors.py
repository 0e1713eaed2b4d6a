"""Descriptors measured on synthetic signals whose key and tempo are known."""

from __future__ import annotations

import numpy as np
import pytest

from cadenza.synth_audio import SR, clicks, noise, progression
from encoder.features import acoustic_features
from retrieval.analysis import prepare
from retrieval.descriptors import (
    KEY_NAMES,
    KK_MAJOR,
    KK_MINOR,
    chroma_sequence,
    describe,
    estimate_key,
    key_index,
    key_scores,
    mean_chroma,
)
from retrieval.metadata import era_from_year

CADENCE = [1, 4, 5, 1, 6, 4, 5, 1]


@pytest.mark.parametrize("key", [0, 2, 7, 10])
def test_major_key_is_found(key):
    d = describe(frames=acoustic_features(y=progression(degrees=CADENCE, key=key, chord_s=1.25)))
    assert (d.key, d.mode) == (KEY_NAMES[key], "major")
    assert d.key_confidence > 0.6 and d.valence > 0


def test_relative_minor_is_minor_with_lower_valence():
    # vi–ii–iii–vi of C major = i–iv–v–i of A minor.
    minor = describe(frames=acoustic_features(y=progression(degrees=[6, 2, 3, 6] * 2, key=0, chord_s=1.25)))
    major = describe(frames=acoustic_features(y=progression(degrees=CADENCE, key=0, chord_s=1.25)))
    assert (minor.key, minor.mode) == ("A", "minor")
    assert minor.valence < major.valence


@pytest.mark.parametrize("bpm", [72, 90, 120, 150])
def test_tempo_of_click_tracks(bpm):
    d = describe(frames=acoustic_features(y=clicks(bpm=bpm, seconds=10)))
    assert d.tempo_bpm is not None and abs(d.tempo_bpm - bpm) / bpm < 0.04
    assert abs(d.onset_density - bpm / 60) < 0.5


def test_faster_and_louder_is_more_aroused():
    slow = describe(frames=acoustic_features(y=0.2 * clicks(bpm=70, seconds=10)))
    fast = describe(frames=acoustic_features(y=clicks(bpm=150, seconds=10)))
    assert fast.arousal > slow.arousal


def test_noise_and_silence():
    n = describe(frames=acoustic_features(y=noise(seconds=10)))
    tonal = describe(frames=acoustic_features(y=progression(degrees=CADENCE, chord_s=1.25)))
    assert n.tonalness < 0.35 < tonal.tonalness
    s = describe(frames=acoustic_features(y=np.zeros(10 * SR, np.float32)))
    assert s.tempo_bpm is None and s.key_confidence == 0.0 and s.loudness_db < -90
    assert np.allclose(s.chroma_mean, 1 / 12)


def test_chroma_shapes_and_key_names():
    f = acoustic_features(y=progression(degrees=CADENCE, chord_s=1.25))
    m = mean_chroma(frames=f)
    assert m.shape == (12,) and abs(m.sum() - 1) < 1e-6
    seq = chroma_sequence(frames=f)
    assert seq.shape == (int(np.ceil(len(f) / 5)), 12) and np.allclose(seq.sum(axis=1), 1, atol=1e-5)
    assert estimate_key(chroma=np.roll(m, 3))[0] == 3
    assert [key_index(k) for k in ("C", "F#", "Gb", "bb", "Eb", "B")] == [0, 6, 6, 10, 3, 11]
    with pytest.raises(ValueError):
        key_index("H")
    assert era_from_year(1685) == "Baroque" and era_from_year(None) == ""


def test_vectorized_key_scores_match_the_per_tonic_loop():
    def pearson(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a - a.mean(), b - b.mean()
        d = np.sqrt((a * a).sum() * (b * b).sum())
        return float((a * b).sum() / d) if d > 1e-12 else 0.0

    rng = np.random.default_rng(2)
    for chroma in (rng.random(12), rng.random(12) ** 6, np.full(12, 1 / 12)):
        want = np.array([[pearson(chroma, np.roll(p, t)) for t in range(12)] for p in (KK_MAJOR, KK_MINOR)])
        assert np.abs(key_scores(chroma=chroma) - want).max() < 1e-12


SCALE = (0, 2, 4, 5, 7, 9, 11)


def decaying_note(*, hz: float, seconds: float, amp: float, decay: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    env = np.exp(-decay * t) * np.minimum(1.0, t / 0.005)
    return amp * env * sum(np.sin(2 * np.pi * hz * k * t) / k for k in range(1, 5))


def add(y: np.ndarray, at_s: float, x: np.ndarray) -> None:
    i = int(round(at_s * SR))
    y[i : i + x.size] += x[: max(0, y.size - i)]


def off_beat_clicks(bpm: float, seconds: float = 10.0) -> np.ndarray:
    """Clicks on the beat plus softer ones halfway between: eighth notes, the beat is the loud ones."""
    y = clicks(bpm=bpm, seconds=seconds)
    soft = 0.4 * clicks(bpm=bpm, seconds=seconds + 1, pitch_hz=1500.0)
    half = int(round(30.0 / bpm * SR))
    y[half:] += soft[: y.size - half]
    return y


def beat_chords(bpm: float, seed: int, seconds: float = 10.0) -> np.ndarray:
    """A slowly decaying three-note chord on most beats (a few rests), with a little noise."""
    rng = np.random.default_rng(seed)
    y = np.zeros(int(seconds * SR), np.float64)
    beat = 60.0 / bpm
    t = float(rng.uniform(0, beat))
    while t < seconds:
        if rng.random() < 0.85:
            for p in rng.choice(7, 3, replace=False):
                add(y, t, decaying_note(hz=220 * 2 ** (SCALE[p] / 12), seconds=2 * beat, amp=0.2, decay=2.0))
        t += beat
    return (y + 0.003 * rng.standard_normal(y.size)).astype(np.float32)


def tempo(y: np.ndarray) -> float | None:
    return describe(frames=acoustic_features(y=prepare(y=y))).tempo_bpm


@pytest.mark.parametrize("bpm", [90, 120, 150])
def test_click_tracks_with_off_beats_give_the_beat(bpm):
    got = tempo(off_beat_clicks(bpm))
    assert got is not None and abs(got - bpm) / bpm < 0.04, got


def test_beat_wise_chords_give_the_beat_not_a_multiple():
    cases = [(bpm, seed) for bpm in (84, 108, 132, 144) for seed in (0, 1)]
    hits = [abs((tempo(beat_chords(bpm, seed)) or 0.0) - bpm) / bpm < 0.04 for bpm, seed in cases]
    assert sum(hits) >= 7, hits
