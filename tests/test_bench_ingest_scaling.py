"""bench/ingest_scaling.py: lanes run the pool's per-file steps and the report adds their audio up."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from bench.ingest_scaling import main


def test_each_lane_runs_every_file_and_efficiency_is_against_one_lane(tmp_path):
    rng = np.random.default_rng(0)
    audio = tmp_path / "audio"
    audio.mkdir()
    t = np.arange(16000 * 12) / 16000
    for i, hz in enumerate((220.0, 330.0)):
        y = 0.2 * np.sin(2 * np.pi * hz * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(audio / f"tone{i}.wav", y.astype(np.float32), 16000)
    (audio / "notes.txt").write_text("not audio")
    main([str(audio), "--processes", "1,2", "--passes", "1", "--out", str(tmp_path / "out")])
    rows = json.loads((tmp_path / "out" / "ingest_scaling.json").read_text())["results"]["rows"]
    assert [r["processes"] for r in rows] == [1, 2] and not any(r["gpu"] for r in rows)
    assert rows[0]["audio_s"] == 24.0 and rows[1]["audio_s"] == 48.0  # two 12-s files per lane
    assert rows[0]["efficiency"] == 1.0 and rows[1]["efficiency"] > 0 and all(r["errors"] == 0 for r in rows)
