"""The windowing record: saved in every checkpoint, read back, derived for the shipped one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cadenza.errors import ConfigError
from encoder.embed import SHIPPED_CHECKPOINT, Embedder, write_checkpoint
from encoder.model import EncoderConfig
from encoder.windowing import DEFAULT_WINDOWING, Windowing

SMALL = EncoderConfig(d_model=32, n_heads=2, n_layers=1)


def test_default_windowing_is_ten_seconds_every_two_at_ten_fps():
    w = DEFAULT_WINDOWING
    assert (w.fps, w.window_s, w.hop_s, w.min_s, w.max_s) == (10, 10.0, 2.0, 3.0, 30.0)
    assert w.tail_frames == 50 and w.frames(2.46) == 25


def test_bad_windowing_is_refused():
    with pytest.raises(ValueError, match="min_frames"):
        Windowing(window_frames=400)
    with pytest.raises(ValueError, match="tail_frames"):
        Windowing(hop_frames=0)


def test_track_starts_keep_a_long_enough_tail():
    w = Windowing(window_frames=100, hop_frames=60, tail_frames=50)
    s, n = w.track_starts(170)
    assert s.tolist() == [0, 60, 120] and n.tolist() == [100, 100, 50]
    assert w.track_starts(165)[0].tolist() == [0, 60]
    assert w.track_starts(40)[0].tolist() == []
    assert w.track_starts(70)[1].tolist() == [70]


def test_a_new_checkpoint_records_its_windowing_and_loads_it_back(tmp_path):
    odd = Windowing(window_frames=80, hop_frames=15, tail_frames=40, min_frames=20, max_frames=200)
    cfg = EncoderConfig(d_model=32, n_heads=2, n_layers=1, windowing=odd)
    src = Embedder.untrained(config=cfg)
    write_checkpoint(folder=tmp_path, model=src.model, mean=np.zeros(143), std=np.ones(143))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"]["windowing"] == odd.to_json()
    loaded = Embedder.load(tmp_path)
    assert loaded.windowing == odd and loaded.config.max_frames == 200
    starts, _ = loaded.embed_track(frames=np.zeros((200, 143), np.float32))
    assert np.allclose(starts, [0.0, 1.5, 3.0, 4.5, 6.0, 7.5, 9.0, 10.5, 12.0, 13.5])  # 13.5: a 6.5-s tail


def test_a_checkpoint_without_windowing_derives_it_from_its_old_fields(tmp_path):
    src = Embedder.untrained(config=SMALL)
    write_checkpoint(
        folder=tmp_path, model=src.model, mean=np.zeros(143), std=np.ones(143),
        training={"batch": {"win_frames": 90, "min_crop_frames": 25}, "corpus": {"fps": 10}},
    )  # fmt: skip
    meta = json.loads((tmp_path / "config.json").read_text())
    del meta["model"]["windowing"]
    meta["model"]["max_frames"] = 250
    (tmp_path / "config.json").write_text(json.dumps(meta))
    w = Embedder.load(tmp_path).windowing
    assert (w.window_frames, w.min_frames, w.max_frames, w.hop_frames, w.tail_frames) == (90, 25, 250, 20, 50)


def test_the_shipped_checkpoint_reads_as_the_default_windowing():
    assert "windowing" not in json.loads((SHIPPED_CHECKPOINT / "config.json").read_text())["model"]
    assert Embedder.load().windowing == DEFAULT_WINDOWING


def test_a_checkpoint_for_other_features_is_refused(tmp_path):
    src = Embedder.untrained(config=SMALL)
    write_checkpoint(folder=tmp_path, model=src.model, mean=np.zeros(143), std=np.ones(143))
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["model"]["windowing"]["fps"] = 25
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="25-fps"):
        Embedder.load(tmp_path)
