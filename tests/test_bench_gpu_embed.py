"""bench/gpu_embed.py: runs without a GPU (CPU rows only) and reports what it timed."""

from __future__ import annotations

import json

from bench.gpu_embed import main


def test_runs_on_the_cpu_and_reports_what_it_timed(tmp_path):
    main(["--cpu-windows", "8", "--repeats", "1", "--out", str(tmp_path), "--commit", "abc1234"])
    data = json.loads((tmp_path / "gpu_embed.json").read_text())
    r = data["results"]
    assert r["model_version"].startswith("cadenza-v1-")
    (row,) = r["cpu"]["batches"]
    assert row["batch"] == 32 and row["windows"] == 8 and row["windows_per_s"] > 0
    assert r["cpu"]["per_track"]["windows"] == 117  # a 4-min track: 10-s windows every 2 s and a tail
    assert r["gpu"] is ("cuda" in r)
    assert data["machine"]["git_commit"] == "abc1234"
    assert "windows/s" in (tmp_path / "gpu_embed.md").read_text()
