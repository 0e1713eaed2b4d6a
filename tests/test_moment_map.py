"""Moment maps, the pure part: window likeness and the strips' order (the query's own track first)."""

from __future__ import annotations

import numpy as np

from retrieval.moment_map import clip_span, strips, window_likeness


def test_likeness_is_cosine_clipped_to_zero_one():
    q = np.array([1.0, 0.0, 0.0])
    w = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    assert np.allclose(window_likeness(query=q, windows=w), [1.0, 0.0, 0.0, np.sqrt(0.5)], atol=1e-6)
    assert window_likeness(query=q, windows=np.zeros((0, 3))).size == 0


def test_strips_follow_the_order_with_the_own_track_flagged_and_missing_tracks_skipped():
    q = np.array([1.0, 0.0])
    windows = {
        7: ("Own", 30.0, np.array([0.0, 2.0]), np.array([[1.0, 0.0], [0.0, 1.0]])),
        3: ("Other", 20.0, np.array([0.0]), np.array([[1.0, 1.0]])),
    }
    out = strips(query=q, windows=windows, order=[7, 99, 3], own=7)
    assert [s.track_id for s in out] == [7, 3] and out[0].own and not out[1].own
    assert out[0].to_json()["windows"] == [{"start": 0.0, "likeness": 1.0}, {"start": 2.0, "likeness": 0.0}]
    assert out[1].to_json()["title"] == "Other"


def test_a_long_clip_strip_covers_two_minutes_around_the_passage():
    assert clip_span(seconds=90.0, start_s=40.0, end_s=50.0) == (0.0, 90.0)
    assert clip_span(seconds=600.0, start_s=300.0, end_s=310.0) == (245.0, 365.0)
    assert clip_span(seconds=600.0, start_s=0.0, end_s=10.0) == (0.0, 120.0)
    assert clip_span(seconds=600.0, start_s=595.0, end_s=600.0) == (480.0, 600.0)
