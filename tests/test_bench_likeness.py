"""The likeness benchmark's parts: sources and stems from folders, its queries, chance and ceiling,
same-source precision on a library whose sources are known, and the phone-line distortion."""

from __future__ import annotations

import numpy as np
import pytest

from bench.likeness import chance_and_ceiling, same_source_memory, source_queries, stem_queries
from bench.memsearch import Library, features
from bench.queries import augment_clip, phone_band
from bench.real_sources import SAMPLE_RATE, load_sources
from cadenza.errors import ConfigError, InputError
from cadenza.synth_audio import random_chord_track, write_audio
from encoder.features import MEL


def _tone(hz: float, seconds: float, amp: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture(scope="module")
def sources_dir(tmp_path_factory):
    """Two 3-track sources, each of one pitch, and one Fret-on-Fire song as two stems."""
    root = tmp_path_factory.mktemp("real")
    for s, hz in (("alpha-data", 220.0), ("beta-data", 880.0)):
        for i in range(3):
            write_audio(root / s / f"music_{i}.wav", _tone(hz, 30.0, 0.2 + 0.1 * i))
    song = root / "fretsonfire-songs-x"
    write_audio(song / "usr_songs_x_tune_guitar.wav", random_chord_track(seconds=30.0, seed=99, key=2))
    write_audio(song / "usr_songs_x_tune_song.wav", _tone(3000.0, 30.0, 0.1))
    write_audio(root / "alpha-data" / "short.wav", _tone(220.0, 5.0, 0.3))
    return root


def test_sources_pair_stems_into_a_full_mix_and_skip_short_files(sources_dir):
    src = load_sources(sources_dir, max_seconds=None)
    assert src.counts() == {"alpha-data": 3, "beta-data": 3, "fretsonfire-songs-x": 1}
    assert src.skipped == ["alpha-data/short.wav"]
    guitar, backing, mix = src.stems["fretsonfire-songs-x/tune"]
    assert np.allclose(src.tracks[mix].audio, guitar + backing)
    assert stem_queries(src, np.random.default_rng(0))[0].work_index == mix


def test_reserved_packages_are_refused(tmp_path):
    (tmp_path / "wesnoth-music").mkdir()
    (tmp_path / "alpha-data").mkdir()
    with pytest.raises(InputError, match="reserved"):
        load_sources(tmp_path, max_seconds=None)


def test_same_source_precision_chance_and_ceiling(sources_dir):
    src = load_sources(sources_dir, max_seconds=None)
    queries = source_queries(src)
    assert len(queries) == 2 * len(src.tracks) and all(q.audio.size == 10 * SAMPLE_RATE for q in queries)
    base = chance_and_ceiling(src, queries)
    # 7 tracks: a query of a 3-track source has 2 others among 6 (chance 1/3), the mix 0 (chance 0).
    assert base["chance"] == pytest.approx((6 * 2 / 6) / 7)
    assert base["ceiling"] == pytest.approx((6 * 0.2) / 7)
    lib = Library.build({t.name: features(y=t.audio) for t in src.tracks})

    class SourceOracle:  # a window's loudest mel band: each source has its own pitch, so retrieval is perfect
        def embed_windows(self, *, windows, lengths=None):
            return np.eye(len(range(*MEL.indices(windows.shape[2]))), dtype=np.float32)[
                np.argmax(windows[:, :, MEL].mean(axis=1), axis=1)
            ]

    lib.embed("oracle", SourceOracle())
    got = same_source_memory(
        lib, "oracle", SourceOracle(), src, queries, [features(y=q.audio) for q in queries]
    )
    assert got == pytest.approx(base["ceiling"])


def test_phone_band_keeps_the_voice_band_only():
    t = np.arange(SAMPLE_RATE * 2) / SAMPLE_RATE
    low, mid = np.sin(2 * np.pi * 80 * t), np.sin(2 * np.pi * 1000 * t)
    y = phone_band(clip=(0.3 * low + 0.3 * mid).astype(np.float32))
    spec = np.abs(np.fft.rfft(y))
    assert spec[160] < 0.05 * spec[2000]  # 80 Hz (bin 160 at 0.5 Hz) is gone, 1 kHz stays
    assert y.dtype == np.float32 and y.shape == t.shape
    assert np.array_equal(
        augment_clip(clip=y, kind="phone", rng=np.random.default_rng(0)), phone_band(clip=y)
    )


def test_only_the_named_sources_are_loaded(sources_dir):
    src = load_sources(sources_dir, max_seconds=None, only=("beta-data", "fretsonfire-songs-x"))
    assert src.counts() == {"beta-data": 3, "fretsonfire-songs-x": 1}
    assert not any(t.source == "alpha-data" for t in src.tracks)


def test_the_benchmark_measures_only_sources_held_out_of_training():
    import inspect

    from bench.likeness import run_likeness
    from encoder.corpus_real import HELDOUT_SOURCES, list_tracks

    assert inspect.signature(run_likeness).parameters["sources"].default == HELDOUT_SOURCES
    assert inspect.signature(list_tracks).parameters["heldout"].default == HELDOUT_SOURCES


def test_a_candidate_checkpoint_is_measured_beside_the_shipped_one(sources_dir):
    from bench.quality_systems import CANDIDATE, CANDIDATE_PROBED, PROBED, build_systems
    from encoder.embed import SHIPPED_CHECKPOINT

    src = load_sources(sources_dir, max_seconds=None, only=("alpha-data", "beta-data"))
    lib = Library.build({t.name: features(y=t.audio) for t in src.tracks})
    notes: list[str] = []
    systems = build_systems(None, lib, notes, candidate=SHIPPED_CHECKPOINT)
    assert {"cadenza", PROBED, CANDIDATE, CANDIDATE_PROBED} <= set(systems)
    assert any(n.startswith(CANDIDATE) for n in notes)
    with pytest.raises(ConfigError, match="no encoder checkpoint"):
        build_systems(None, lib, [], candidate=sources_dir / "no-such-checkpoint")


def test_re_finding_clips_cut_from_silence_are_recognised():
    """A clip cut where the clean track is silent has nothing to re-find (bench.likeness leaves it out and
    says so); a quiet passage that still sounds is kept."""
    from bench.likeness import silent_source

    y = random_chord_track(seconds=30, seed=4)
    y[10 * SAMPLE_RATE : 22 * SAMPLE_RATE] = 0.0
    assert silent_source(y, 11.0, 10.0)
    assert not silent_source(y, 2.0, 10.0)
    assert not silent_source(y, 5.0, 10.0)  # half silent: there is still a passage
    assert not silent_source(y * 0.01, 2.0, 10.0)  # -40 dB: quiet, not silent
