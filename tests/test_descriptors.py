"""Descriptors measured on synthetic signals whose key and tempo are known."""

from __future__ import annotations

import numpy as np
import pytest

from encoder.features import acoustic_features
from retrieval.descriptors import KEY_NAMES, chroma_sequence, describe, estimate_key, key_index, mean_chroma
from retrieval.metadata import era_from_year
from tests.helpers_audio import SR, clicks, noise, progression

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
