"""scripts/sound_representations.py: the scoring and the level-free representations it measures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "sound_representations.py"


@pytest.fixture(scope="module")
def sr():
    spec = importlib.util.spec_from_file_location("sound_representations", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _library(n_sources: int = 2, tracks: int = 12, per_track: int = 4, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    src = np.repeat(np.arange(n_sources), tracks)
    seg_track = np.repeat(np.arange(len(src)), per_track)
    return dict(meta=[(f"t{i}", f"s{s}", "") for i, s in enumerate(src)], src=src, seg_track=seg_track,
                q_track=np.arange(len(src)), rng=rng)  # fmt: skip


def test_p_at_10_is_one_for_a_source_code_and_near_chance_for_noise(sr) -> None:
    d = _library()
    rng = d.pop("rng")
    code = np.eye(2)[d["src"][d["seg_track"]]] + 0.01 * rng.normal(size=(len(d["seg_track"]), 2))
    q = np.eye(2)[d["src"][d["q_track"]]]
    assert sr.p_at_10(d, [(1.0, sr.unit(code), q, "win")]) == pytest.approx(1.0)
    assert sr.p_at_10(d, [(1.0, sr.unit(code), q, "trk")]) == pytest.approx(1.0)
    noise = sr.unit(rng.normal(size=(len(d["seg_track"]), 16)))
    assert sr.p_at_10(d, [(1.0, noise, sr.unit(rng.normal(size=(len(q), 16))), "win")]) < 0.8


def test_p_at_10_leaves_out_the_query_track(sr) -> None:
    """Each query matches its own track best, then the OTHER source's tracks: with the own track left
    out, nothing of the top 10 is same-source (counting the own track would give 0.1)."""
    d = _library()
    d.pop("rng")
    n = len(d["src"])
    basis = np.eye(n + 2)
    db = sr.unit(basis[d["seg_track"]] + basis[n + d["src"][d["seg_track"]]])
    q = sr.unit(2 * basis[d["q_track"]] + basis[n + 1 - d["src"][d["q_track"]]])
    assert sr.p_at_10(d, [(1.0, db, q, "win")]) == 0.0
    assert sr.p_at_10(d, [(1.0, db, q, "trk")]) == 0.0


def test_representations_ignore_the_level(sr) -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(-30, 8, size=(3, 100, 143)).astype(np.float32)
    w[..., 140] = -20.0 + rng.normal(0, 2, size=(3, 100))
    louder = w.copy()
    louder[..., :128] += 6.0
    louder[..., 140] += 6.0
    np.testing.assert_allclose(sr.second_order(w, None), sr.second_order(louder, None), atol=1e-3)
    np.testing.assert_allclose(sr.xvec_inputs(w, None)[0], sr.xvec_inputs(louder, None)[0], atol=1e-4)
    x, m = sr.xvec_inputs(w, np.array([100, 60, 30]))
    assert x.shape == (3, 129, 100) and m.sum(1).tolist() == [100, 60, 30]
    assert not x[2, :, 30:].any()
