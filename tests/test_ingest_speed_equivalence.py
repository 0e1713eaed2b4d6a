"""The fast ingest paths compute what the straightforward ones did: loudness, encoder forward, key scores."""

from __future__ import annotations

import warnings

import numpy as np
import pyloudnorm
import pytest
import torch.nn.functional as F

from encoder.embed import Embedder, _fast_path_agrees, _fast_path_applies
from retrieval.analysis import integrated_loudness, k_weighted, level_loudness
from retrieval.descriptors import KK_MAJOR, KK_MINOR, key_scores
from tests.helpers_audio import SR, random_chord_track


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


def stock(emb: Embedder, windows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    fast = emb._fast
    emb._fast = False
    try:
        return emb.embed_windows(windows=windows, lengths=lengths)
    finally:
        emb._fast = fast


@pytest.mark.parametrize("which", ["untrained", "shipped"])
def test_fast_encoder_forward_matches_the_module(which):
    emb = Embedder.untrained(seed=3) if which == "untrained" else Embedder.load()
    assert emb._fast
    rng = np.random.default_rng(1)
    windows = (rng.standard_normal((37, 100, 143)) * 5 - 20).astype(np.float32)
    lengths = np.full(37, 100)
    lengths[[3, 17, 30]] = [50, 77, 99]  # ragged batches take the masked attention
    got = emb.embed_windows(windows=windows, lengths=lengths)
    want = stock(emb, windows, lengths)
    assert np.abs(got - want).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_fast_path_refuses_a_model_it_does_not_know():
    emb = Embedder.untrained(seed=0)
    layer = emb.model.blocks.layers[1]
    layer.activation = F.relu
    assert not _fast_path_applies(emb.model) and not _fast_path_agrees(emb.model)
    assert not Embedder(model=emb.model, mean=emb.mean, std=emb.std, model_version="x")._fast


def test_vectorized_key_scores_match_the_per_tonic_loop():
    def pearson(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a - a.mean(), b - b.mean()
        d = np.sqrt((a * a).sum() * (b * b).sum())
        return float((a * b).sum() / d) if d > 1e-12 else 0.0

    rng = np.random.default_rng(2)
    for chroma in (rng.random(12), rng.random(12) ** 6, np.full(12, 1 / 12)):
        want = np.array([[pearson(chroma, np.roll(p, t)) for t in range(12)] for p in (KK_MAJOR, KK_MINOR)])
        assert np.abs(key_scores(chroma=chroma) - want).max() < 1e-12
