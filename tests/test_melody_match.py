"""The contour matcher: key, octave and tempo invariance, and unrelated lines scoring low."""

from __future__ import annotations

import numpy as np

from retrieval.melody_match import CHUNK_FRAMES, match_windows


def _steps(seed: int, n: int) -> np.ndarray:
    """A random 10-fps contour of notes held 2–6 frames."""
    rng = np.random.default_rng(seed)
    out: list[float] = []
    p = 67.0
    while len(out) < n:
        p += float(rng.choice([-4, -2, -1, 1, 2, 3, 5]))
        out += [p] * int(rng.integers(2, 7))
    return np.asarray(out[:n], dtype=np.float32)


def test_transposed_octave_shifted_slower_hum_matches_its_window_and_reports_the_key():
    lib = np.stack([_steps(s, 100) for s in range(30)])
    tune = lib[7, 10:90]
    # sung at ×0.87 (slower: more frames), 3 semitones and an octave lower, drifting ±25 cents
    hum = np.interp(np.arange(0, tune.size, 0.87), np.arange(tune.size), tune).round() - 3.0 - 12.0
    hum = hum.astype(np.float32) + 0.25 * np.sin(np.arange(hum.size) / 7.0).astype(np.float32)  # drift
    m = match_windows(query_midi=hum, library=lib)
    assert int(np.argmax(m.score)) == 7
    assert round(float(m.shift[7])) % 12 == 3  # library = hum + 3 (mod the octave)
    assert abs(float(m.tempo[7]) - 0.87) <= 0.07
    others = np.delete(m.score, 7)
    assert float(m.score[7]) > 0.8 > float(others.max()) + 0.2


def test_unvoiced_frames_count_against_a_window_and_short_windows_are_padded():
    q = _steps(1, 80)
    lib = np.stack([_steps(1, 100), np.full(100, np.nan, np.float32)])
    m = match_windows(query_midi=q, library=lib)
    assert m.score[0] > 0.95 and m.score[1] == 0.0
    short = match_windows(query_midi=q, library=lib[:, : CHUNK_FRAMES - 10])
    assert short.score.shape == (2,)
