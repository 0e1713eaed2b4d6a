"""encoder/timbre.py: the timbre/production statistics of a window and the fitted model that projects them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from cadenza.errors import ConfigError
from cadenza.synth_audio import SR, noise, random_chord_track, tone
from encoder.features import ParameterError, acoustic_features
from encoder.timbre import (
    N_STATS,
    STAT_NAMES,
    TimbreModel,
    model_version,
    shipped_timbre,
    timbre_statistics,
    window_statistics,
)

ROOT = Path(__file__).resolve().parents[1]


def _frames(y: np.ndarray) -> np.ndarray:
    return acoustic_features(y=y.astype(np.float32), sr=SR)


def test_window_statistics_equal_the_statistics_of_each_window_cut_out():
    frames = _frames(random_chord_track(seconds=30, seed=3))
    starts = np.array([0, 20, 40, 200, len(frames) - 50])  # the last one is cut short at the end
    got = window_statistics(frames=frames, starts=starts, win=100)
    want = np.concatenate([timbre_statistics(windows=frames[None, s : s + 100]) for s in starts])
    assert got.shape == (5, N_STATS) == (5, len(STAT_NAMES))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_the_statistics_tell_a_bright_noise_from_a_dark_tone_and_ignore_the_level():
    dark = _frames(tone(hz=110.0, seconds=10, harmonics=2))
    bright = _frames(noise(seconds=10, seed=1))
    d, b = timbre_statistics(windows=np.stack([dark[:100], bright[:100]]))
    col = {n: i for i, n in enumerate(STAT_NAMES)}
    assert b[col["centroid_mean"]] > d[col["centroid_mean"]] + 1.0  # log Hz: e-fold brighter at least
    assert b[col["flatness_mean"]] > d[col["flatness_mean"]] + 10.0  # dB: noise is flat, a tone is not
    # 12 dB quieter, same sound (chords over a little hiss, so no band sits at the -100 dB floor):
    # the statistics stay put (MFCC c0, the level, is left out).
    y = random_chord_track(seconds=10, seed=1) + noise(seconds=10, seed=2, amp=0.01)
    loud, quiet = timbre_statistics(windows=np.stack([_frames(y)[:100], _frames(0.25 * y)[:100]]))
    np.testing.assert_allclose(quiet, loud, rtol=1e-3, atol=1e-2)


def test_quiet_frames_do_not_count():
    y = tone(hz=440.0, seconds=10)
    y[: len(y) // 2] *= 1e-5  # the first half is a near-silent fade
    half = _frames(y)
    full = _frames(tone(hz=440.0, seconds=10))
    col = STAT_NAMES.index("centroid_mean")
    got = timbre_statistics(windows=half[None, :100])[0][col]
    assert abs(got - timbre_statistics(windows=full[None, :100])[0][col]) < 0.05


def test_bad_frames_are_refused():
    with pytest.raises(ParameterError, match="shape"):
        window_statistics(frames=np.zeros((10, 12)), starts=np.zeros(1, np.int64), win=10)
    with pytest.raises(ParameterError, match="inside"):
        window_statistics(frames=np.zeros((10, 143)), starts=np.array([10]), win=10)
    with pytest.raises(ParameterError, match="NaN"):
        window_statistics(frames=np.full((10, 143), np.nan), starts=np.zeros(1, np.int64), win=10)


def test_model_round_trips_and_projects_to_unit_vectors(tmp_path):
    rng = np.random.default_rng(0)
    centre, scale, proj = rng.normal(size=N_STATS), rng.uniform(1, 2, N_STATS), rng.normal(size=(N_STATS, 8))
    m = TimbreModel(centre, scale, proj, model_version(centre=centre, scale=scale, projection=proj), 1.5, 0.5)
    m.save(tmp_path, card={"fitted_on": "test"})
    back = TimbreModel.load(tmp_path)
    assert back.version == m.version and back.weight == 1.5 and back.track_weight == 0.5 and back.dim == 8
    v = back.project(rng.normal(size=(4, N_STATS)))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    # Another fit is another version.
    assert model_version(centre=centre + 1, scale=scale, projection=proj) != m.version
    with pytest.raises(ConfigError, match="cadenza timbre fit"):
        TimbreModel.load(tmp_path / "missing")


def test_the_shipped_model_fits_the_database_column():
    m = shipped_timbre()
    sql = (ROOT / "sql" / "008_timbre.sql").read_text()
    assert int(re.search(r"timbre vector\((\d+)\)", sql).group(1)) == m.dim
    assert m.weight > 0 and m.track_weight > 0 and m.version.startswith("timbre-")
    assert (ROOT / "sql" / "012_track_timbre.sql").read_text().count(f"timbre vector({m.dim})") == 1
