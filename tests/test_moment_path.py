"""Moment paths, the pure planner: steps move toward B, each close to the last, no window twice."""

from __future__ import annotations

import numpy as np
import pytest

from cadenza.errors import InputError
from retrieval.moment_map import unit
from retrieval.moment_path import plan_path, waypoints


def _pool(seed: int = 0, n: int = 400, d: int = 16):
    rng = np.random.default_rng(seed)
    a, b = unit(rng.normal(size=d)), unit(rng.normal(size=d))
    # Windows scattered around the chord from A to B, on 40 tracks of 10 windows.
    alphas = rng.random(n)[:, None]
    pool = unit((1 - alphas) * a + alphas * b + 0.2 * rng.normal(size=(n, d)))
    tracks = np.repeat(np.arange(40), n // 40)
    starts = np.tile(np.arange(n // 40) * 10.0, 40).astype(np.float32)
    return a, b, pool, tracks, starts


def test_waypoints_run_from_a_to_b():
    a, b, *_ = _pool()
    w = waypoints(a=a, b=b, steps=5)
    assert w.shape == (5, a.size)
    assert np.allclose(w[0], a, atol=1e-6) and np.allclose(w[-1], b, atol=1e-6)
    assert np.all(np.diff(w @ b) > 0)


def test_each_step_moves_toward_b_and_stays_close_to_the_last():
    a, b, pool, tracks, starts = _pool()
    picked = plan_path(a=a, b=b, pool=pool, pool_tracks=tracks, pool_starts=starts, steps=8)
    assert len(picked) == 6 and len(set(picked)) == 6
    path = np.vstack([a, pool[picked], b])
    to_b = path @ b
    assert np.all(np.diff(to_b) >= -1e-6)  # never farther from B than the step before
    step_sims = np.sum(path[1:] * path[:-1], axis=1)
    rng = np.random.default_rng(5)
    random_sims = [float(pool[i] @ pool[j]) for i, j in rng.integers(0, len(pool), size=(200, 2))]
    assert np.mean(step_sims) > np.mean(random_sims) + 0.2
    assert len({int(tracks[i]) for i in picked}) == 6  # a different track at every step while there are some


def test_no_window_overlaps_the_ends_or_another_step():
    a, b, pool, tracks, starts = _pool(seed=2, n=40)
    ends = ((int(tracks[0]), float(starts[0])), (int(tracks[-1]), float(starts[-1])))
    picked = plan_path(a=a, b=b, pool=pool, pool_tracks=tracks, pool_starts=starts, steps=12, ends=ends)
    spots = [(int(tracks[i]), float(starts[i])) for i in picked] + list(ends)
    assert len(spots) == len(set(spots))


def test_two_steps_are_the_ends_alone_and_fewer_is_an_error():
    a, b, pool, tracks, starts = _pool()
    assert plan_path(a=a, b=b, pool=pool, pool_tracks=tracks, pool_starts=starts, steps=2) == []
    with pytest.raises(InputError):
        plan_path(a=a, b=b, pool=pool, pool_tracks=tracks, pool_starts=starts, steps=1)
