"""Tempo on synthetic signals of known BPM: click tracks with off-beats, and beat-wise block chords."""

from __future__ import annotations

import numpy as np
import pytest

from encoder.features import acoustic_features
from retrieval.analysis import prepare
from retrieval.descriptors import describe
from tests.helpers_audio import SR, clicks

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
