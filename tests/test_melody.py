"""The library's melodic line: the most salient pitch per frame, cut into the segments' windows."""

from __future__ import annotations

import numpy as np

from cadenza.synth_audio import accompanied_tune, random_tune
from retrieval.analysis import prepare
from retrieval.melody import melody_contour, window_melodies


def test_the_tune_over_chords_is_the_melodic_line_in_most_frames():
    notes = random_tune(seconds=12.0, seed=3)
    y = accompanied_tune(notes=notes, seed=5)
    c = melody_contour(y=prepare(y=y))
    assert c.shape == (1 + y.size // 1600,)
    truth = np.full(c.size, np.nan)
    for s, e, p in notes:
        truth[int(np.ceil(s * 10)) + 1 : int(np.floor(e * 10))] = p  # note interiors only
    ok = np.isfinite(truth) & np.isfinite(c)
    assert ok.sum() > 60
    assert np.mean(np.round(c[ok] - truth[ok]) % 12 == 0) > 0.8


def test_window_melodies_follow_the_segment_starts_and_pad_the_last():
    c = np.arange(250, dtype=np.float32)
    w = window_melodies(contour=c, starts_s=[0.0, 2.0, 20.0], win_frames=100)
    assert [x.dtype for x in w] == [np.float16] * 3
    assert w[1][0] == 20 and w[1][-1] == 119
    assert w[2][49] == 249 and np.isnan(w[2][50:]).all()
