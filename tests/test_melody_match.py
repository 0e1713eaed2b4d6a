"""The contour matcher: key, octave and tempo invariance, where in a track a hum starts, and
unrelated lines scoring low."""

from __future__ import annotations

import numpy as np

from retrieval.melody_match import GAP_FRAMES, JoinedLines, join_windows, match_lines


def _steps(seed: int, n: int) -> np.ndarray:
    """A random 10-fps contour of notes held 2–6 frames."""
    rng = np.random.default_rng(seed)
    out: list[float] = []
    p = 67.0
    while len(out) < n:
        p += float(rng.choice([-4, -2, -1, 1, 2, 3, 5]))
        out += [p] * int(rng.integers(2, 7))
    return np.asarray(out[:n], dtype=np.float32)


def _library(lines: list[np.ndarray]) -> JoinedLines:
    """Each line cut into 10-s windows every 2 s, as ingest stores them, and joined again."""
    tracks, starts, windows = [], [], []
    for t, line in enumerate(lines):
        for s in range(0, max(line.size - 100, 0) + 1, 20):
            tracks.append(t)
            starts.append(s / 10.0)
            windows.append(line[s : s + 100])
    return join_windows(tracks=np.array(tracks), starts_s=np.array(starts), windows=windows, fps=10.0)


def test_join_windows_rebuilds_each_track_with_gaps_between_tracks():
    a, b = _steps(1, 180), _steps(2, 140)
    joined = _library([a, b])
    assert joined.line.size == 180 + 140 + 3 * GAP_FRAMES
    on_a = joined.track == 0
    assert np.array_equal(joined.line[on_a], a) and np.array_equal(joined.frame[on_a], np.arange(180))
    assert np.array_equal(joined.line[joined.track == 1], b)
    assert np.isnan(joined.line[joined.track == -1]).all()


def test_transposed_octave_shifted_slower_hum_finds_its_track_start_and_key():
    lines = [_steps(s, 300) for s in range(30)]
    tune = lines[7][120:200]  # 8 s from 12 s in
    # sung at ×0.87 (slower: more frames), 3 semitones and an octave lower, drifting ±25 cents
    hum = np.interp(np.arange(0, tune.size, 0.87), np.arange(tune.size), tune).round() - 3.0 - 12.0
    hum = hum.astype(np.float32) + 0.25 * np.sin(np.arange(hum.size) / 7.0).astype(np.float32)  # drift
    hum = np.concatenate([np.full(6, np.nan, np.float32), hum])  # a breath before the first note
    m = match_lines(query_midi=hum, lines=_library(lines))
    best = m.track_best()
    top = max(best, key=lambda t: m.score[best[t]])
    i = best[top]
    assert top == 7
    assert abs(int(m.start_frame[i]) - 120) <= 3  # the hum's first note, in library frames
    assert round(float(m.shift[i])) % 12 == 3  # library = hum + 3 (mod the octave)
    assert abs(float(m.tempo[i]) - 0.87) <= 0.07
    others = [float(m.score[j]) for t, j in best.items() if t != 7]
    assert float(m.score[i]) > 0.8 > max(others) + 0.2


def test_unvoiced_library_frames_count_against_a_track():
    q = _steps(1, 80)
    lines = [_steps(1, 100), np.full(100, np.nan, np.float32)]
    m = match_lines(query_midi=q, lines=_library(lines))
    best = m.track_best()
    assert m.score[best[0]] > 0.95 and m.score[best[1]] == 0.0
