"""Harmony vectors (retrieval/harmony.py): a window's chord sequence as one vector, and the query's probes."""

from __future__ import annotations

import numpy as np
import pytest

from cadenza.synth_audio import random_chord_track
from encoder.augment import phone_band
from encoder.features import CHROMA, acoustic_features
from retrieval.harmony import (
    BLOCKS,
    HARMONY_DIM,
    block_similarity,
    block_vector,
    query_probes,
    segment_harmony,
)


def test_block_vector_is_unit_blocks_of_chroma():
    rng = np.random.default_rng(0)
    c = rng.random((100, 12)).astype(np.float32)
    v, k = block_vector(c)
    assert v.shape == (HARMONY_DIM,) and k == BLOCKS and np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    first = c[:10].mean(axis=0)
    assert np.allclose(v[:12] * np.sqrt(BLOCKS), first / np.linalg.norm(first), atol=1e-5)
    short, k5 = block_vector(c[:47])  # 4 whole blocks and 7 frames (more than half a block): 5
    assert k5 == 5 and not short[5 * 12 :].any()
    silent, k0 = block_vector(np.zeros((100, 12)))
    assert k0 == 0 and not silent.any()


def test_segment_harmony_skips_silent_windows():
    c = np.zeros((300, 12), np.float32)
    c[100:] = 1.0
    got = segment_harmony(c, [0.0, 10.0, 20.0])
    assert got[0] is None and got[1] is not None and got[2] is not None


def test_a_clip_off_the_grid_meets_its_segment_through_the_later_probe():
    """A clip starting 1 s before a stored segment: the probe from 1 s in has that segment's blocks."""
    chroma = acoustic_features(y=random_chord_track(seconds=40, seed=5))[:, CHROMA]
    seg = segment_harmony(chroma, [12.0])[0]
    probes = query_probes(chroma[110:210])
    assert [p.offset_s for p in probes] == [0.0, 1.0]
    sims = [block_similarity(1.0 - float(seg @ p.vector), p) for p in probes]
    assert sims[1] == pytest.approx(1.0, abs=1e-4) and sims[0] < sims[1]


def test_a_phone_clip_is_nearer_its_own_window_than_other_music():
    y = random_chord_track(seconds=40, seed=6, key=2)
    other = random_chord_track(seconds=40, seed=7, key=2)
    own = segment_harmony(acoustic_features(y=y)[:, CHROMA], [10.0])[0]
    far = segment_harmony(acoustic_features(y=other)[:, CHROMA], [10.0])[0]
    probe = query_probes(acoustic_features(y=phone_band(y=y[160_000:320_000]))[:, CHROMA])[0]
    assert float(own @ probe.vector) > float(far @ probe.vector) + 0.1
