"""The humming benchmark's query maker: passages moved in key and tempo, drift, and the synthetic voices."""

from __future__ import annotations

import numpy as np

from bench.humming_voices import drift, passage, whistle
from encoder.pitch import track_pitch

NOTES = [(0.0, 1.0, 60), (1.0, 2.0, 62), (2.0, 3.0, 64), (3.0, 4.0, 65), (12.0, 13.0, 67)]


def test_a_passage_is_cut_moved_in_key_and_stretched_by_tempo():
    rng = np.random.default_rng(0)
    out = passage(NOTES, 1.0, tempo=0.5, transpose=-3, rng=rng)  # half as fast: 5 s of score in 10 s
    assert [p for _, _, p in out] == [59, 61, 62]
    starts = [s for s, _, _ in out]
    assert abs(starts[1] - 2.0) < 0.2 and abs(starts[2] - 4.0) < 0.2  # jittered onsets (σ 40 ms)
    assert all(e > s for s, e, _ in out)


def test_drift_moves_pitch_by_at_most_thirty_cents():
    rng = np.random.default_rng(1)
    y = whistle([(0.0, 3.0, 69)], rng)
    drifted = drift(y, rng)
    a, b = track_pitch(y=y).midi, track_pitch(y=drifted).midi
    assert np.nanmedian(a[5:25]) == np.float32(np.nanmedian(a[5:25]))  # voiced
    assert abs(np.nanmedian(a[3:25]) - 81.0) < 0.3  # a whistle: an octave above the note
    change = np.abs(np.nanmedian(b[2:6]) - np.nanmedian(b[-10:-6]))
    assert 0.05 < change < 0.65  # a drift from −d to +d cents, d ≤ 30


def test_espeak_sings_each_note_at_its_pitch_with_one_voice():
    # espeak-ng only speaks ("laaa" glides down ~4 semitones); the benchmark re-pitches it note by
    # note (TD-PSOLA), so the sung notes must come out flat at their pitch and count as one voice.
    from bench.humming_voices import espeak, espeak_la
    from retrieval.melody_search import sung_query

    la = espeak_la()
    assert la is not None, "espeak-ng is required (Makefile: Debian packages the tests need)"
    y = espeak([(0.0, 1.5, 69), (1.5, 3.0, 64)], la)
    sung = sung_query(y=y)
    first, second = np.nanmedian(sung.midi[3:12]), np.nanmedian(sung.midi[18:27])
    assert abs((first - 69.0 + 6.0) % 12.0 - 6.0) < 0.4
    assert abs((second - 64.0 + 6.0) % 12.0 - 6.0) < 0.4
    assert np.nanmax(sung.midi[3:12]) - np.nanmin(sung.midi[3:12]) < 0.6  # held flat, no speech glide
    assert sung.single_voice, sung.to_json()
