"""Loudness: the integrated loudness (EBU R128, as pyloudnorm measures it) and the leveling ingest applies."""

from __future__ import annotations

import warnings

import numpy as np
import pyloudnorm
import pytest

from cadenza.synth_audio import SR, random_chord_track
from retrieval.analysis import integrated_loudness, k_weighted, level_loudness


def reference_lufs(y: np.ndarray, sr: int) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(pyloudnorm.Meter(sr).integrated_loudness(np.asarray(y, dtype=np.float64)))


def signals() -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(0)
    chords = random_chord_track(seconds=16, seed=1)
    gap = np.concatenate([np.zeros(3 * SR), 1e-5 * rng.standard_normal(2 * SR), chords[: 5 * SR]])
    return [
        (chords, SR),
        (0.01 * rng.standard_normal(7 * SR), SR),
        (gap, SR),  # quiet blocks under both gates
        (0.3 * rng.standard_normal(int(0.43 * SR)), SR),  # one block and a bit
        (0.1 * rng.standard_normal(int(6.37 * 44_100)), 44_100),  # bounds that are not whole hops
    ]


@pytest.mark.parametrize("in_time", [False, True], ids=["fft", "sosfilt"])
@pytest.mark.parametrize("i", range(5))
def test_integrated_loudness_matches_pyloudnorm(i, in_time):
    y, sr = signals()[i]
    assert abs(integrated_loudness(y=y, sr=sr, in_time=in_time) - reference_lufs(y, sr)) < 1e-6


def test_both_k_weightings_agree_sample_by_sample():
    for y, sr in signals():
        assert np.abs(k_weighted(y, sr=sr, in_time=True) - k_weighted(y, sr=sr)).max() < 1e-9


def test_silence_is_minus_infinity_and_is_left_alone():
    assert integrated_loudness(y=np.zeros(SR), sr=SR) == float("-inf") == reference_lufs(np.zeros(SR), SR)
    assert not level_loudness(y=np.zeros(2 * SR, np.float32)).any()


def test_leveled_track_reaches_the_target_by_pyloudnorm():
    y = 0.05 * random_chord_track(seconds=12, seed=4)
    out = level_loudness(y=y)
    assert np.abs(level_loudness(y=y, in_time=True) - out).max() < 1e-6
    assert out.dtype == np.float32 and abs(reference_lufs(out, SR) - (-23.0)) < 0.05
