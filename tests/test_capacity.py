"""bench/capacity.py: the fits recover known laws, the check uses a point the fit did not see,
and the plan is arithmetic on the measured figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.capacity import run_capacity
from bench.capacity_model import GIB, Catalogue, nlogn_fit, power_fit


def test_fits_recover_known_laws():
    a, b = power_fit([(n, 3.0 * n**0.5) for n in (1e4, 1e5, 1e6)])
    assert a == pytest.approx(3.0, rel=1e-9) and b == pytest.approx(0.5, rel=1e-9)
    assert nlogn_fit([(n, 2e-6 * n * math.log(n)) for n in (1e5, 1e6)]) == pytest.approx(2e-6, rel=1e-12)


def _size(n: int, *, build_c: float, p50_a: float) -> dict:
    return {
        "n_segments": n,
        "index": {"table_bytes": 1000 * n, "hnsw_bytes_per_segment": 800.0, "bytes_per_segment": 2000.0,
                  "build_s": build_c * n * math.log(n)},
        "unfiltered": [{"ef_search": 40, "recall@10": 0.9, "p50": p50_a * n**0.25}],
        "exact_scan_sql": {"p50": 1e-4 * n},
    }  # fmt: skip


def _results(folder: Path, *, big_build_s: float | None = None) -> Path:
    sizes = [_size(n, build_c=1e-6, p50_a=0.01) for n in (10_000, 100_000, 1_000_000)]
    if big_build_s is not None:
        sizes[-1]["index"]["build_s"] = big_build_s
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scale_1m.json").write_text(json.dumps({"machine": {"cores": 2}, "results": {"sizes": sizes}}))
    ingest = {"audio_seconds": 3600.0, "cpu_seconds_total": 10.0, "realtime_factor": 400.0,
              "stage_cpu_seconds": {"decode": 1.0, "features": 2.0, "embed": 4.0}}  # fmt: skip
    (folder / "ingest_speed.json").write_text(json.dumps({"results": ingest}))
    return folder


def test_checks_the_extrapolation_against_the_held_out_size(tmp_path):
    report = run_capacity(results=_results(tmp_path / "r"), out_dir=tmp_path / "out")
    checks = {(c["quantity"], c["law"]): c for c in report.data["checks"]}
    assert checks[("HNSW build seconds", "c·n·ln n")]["error_pct"] == pytest.approx(0.0, abs=1e-6)
    assert checks[("HNSW build seconds", "c·n·ln n")]["fitted_on"] == "100,000"  # not the 1M it is checked on
    # A measured 1M point off the law shows up as an error, not as a refit.
    off = run_capacity(
        results=_results(tmp_path / "r2", big_build_s=2 * 1e-6 * 1e6 * math.log(1e6)), out_dir=tmp_path / "o2"
    )
    off_checks = {(c["quantity"], c["law"]): c for c in off.data["checks"]}
    assert off_checks[("HNSW build seconds", "c·n·ln n")]["error_pct"] == pytest.approx(-50.0, abs=1e-6)
    assert (tmp_path / "out" / "capacity.json").exists() and (tmp_path / "out" / "capacity.md").exists()


def test_plan_is_arithmetic_on_the_measurements(tmp_path):
    cat = Catalogue(tracks=1_000_000, track_seconds=130.0, ingest_days=1.0, segments_per_shard=10_000_000)
    plan = run_capacity(results=_results(tmp_path / "r"), out_dir=tmp_path / "out", cat=cat).data["plan"]
    segs = 1_000_000 * 61  # (130 - 10) / 2 + 1 windows a track
    assert plan["catalogue"]["segments"] == segs
    assert plan["storage"]["vector"]["hnsw_gib"] == pytest.approx(segs * 800 / GIB)
    assert plan["storage"]["halfvec"]["hnsw_gib"] == pytest.approx(segs * (800 - 256) / GIB)
    assert plan["shards"]["shards"] == 7
    # 10 CPU-s per audio hour; 36,111 audio hours in one day.
    assert plan["ingest"]["cores_for_days"] == pytest.approx(10.0 * 1_000_000 * 130 / 3600 / 3600 / 24)
    assert plan["ingest"]["cores_for_days_if_embedding_moves_to_gpu"] == pytest.approx(
        plan["ingest"]["cores_for_days"] * 0.6
    )


def test_missing_measurements_say_what_to_run(tmp_path):
    with pytest.raises(SystemExit, match="scale_1m.json"):
        run_capacity(results=tmp_path, out_dir=tmp_path / "out")


def test_runs_on_the_committed_results(tmp_path):
    report = run_capacity(out_dir=tmp_path)
    assert report.data["plan"]["storage"]["vector"]["total_gib"] > 0 and len(report.data["checks"]) >= 4


def test_a_measured_gpu_keeps_the_cpu_its_calls_still_spend(tmp_path):
    folder = _results(tmp_path / "r")
    per_track = {"cpu": {"per_track": {"cpu_s_per_window": 2e-3, "windows_per_s": 500.0}},
                 "cuda": {"per_track": {"cpu_s_per_window": 1e-4, "windows_per_s": 10_000.0},
                          "batches": [{"windows_per_s": 12_000.0}, {"windows_per_s": 20_000.0}]}}  # fmt: skip
    gpu = {"results": {"gpu": True, "gpu_name": "a test GPU", **per_track}}
    (folder / "gpu_embed.json").write_text(json.dumps(gpu))
    cat = Catalogue(tracks=1_000_000, track_seconds=130.0, ingest_days=1.0, segments_per_shard=10_000_000)
    plan = run_capacity(results=folder, out_dir=tmp_path / "out", cat=cat).data["plan"]
    # 10 CPU-s an audio hour, 4 of them embed; on the GPU embed costs the CPU 1e-4 / 2e-3 = 5 % of that.
    assert plan["gpu"]["cpu_s_per_audio_hour_with_gpu_embed"] == pytest.approx(6.0 + 4.0 * 0.05)
    assert plan["gpu"]["cores_for_days_with_gpu_embed"] == pytest.approx(
        plan["ingest"]["cores_for_days"] * 0.62
    )
    segs = 1_000_000 * 61
    assert plan["gpu"]["gpu_busy_share_for_days"] == pytest.approx(segs / 86400.0 / 10_000.0)
    assert plan["gpu"]["reembed_gpu_hours"] == pytest.approx(segs / 20_000.0 / 3600.0)
    assert "a test GPU" in (tmp_path / "out" / "capacity.md").read_text()
    # a run without a GPU adds no GPU rows
    gpu["results"] = {"gpu": False}
    (folder / "gpu_embed.json").write_text(json.dumps(gpu))
    assert "gpu" not in run_capacity(results=folder, out_dir=tmp_path / "o2", cat=cat).data["plan"]


def test_full_nodes_scale_the_two_lane_figure_by_the_measured_efficiency(tmp_path):
    folder = _results(tmp_path / "r")
    rows = [
        {
            "processes": 1,
            "gpu": False,
            "efficiency": 1.0,
            "cpu_s_per_audio_hour": 10.0,
            "audio_s_per_wall_s": 100.0,
        },
        {
            "processes": 2,
            "gpu": False,
            "efficiency": 0.9,
            "cpu_s_per_audio_hour": 11.0,
            "audio_s_per_wall_s": 180.0,
        },
        {
            "processes": 8,
            "gpu": False,
            "efficiency": 0.6,
            "cpu_s_per_audio_hour": 16.0,
            "audio_s_per_wall_s": 480.0,
        },
        {
            "processes": 8,
            "gpu": True,
            "efficiency": 0.9,
            "cpu_s_per_audio_hour": 8.0,
            "audio_s_per_wall_s": 720.0,
        },
    ]
    (folder / "ingest_scaling.json").write_text(
        json.dumps({"machine": {"cores": 8}, "results": {"rows": rows}})
    )
    cat = Catalogue(tracks=1_000_000, track_seconds=130.0, ingest_days=1.0, segments_per_shard=10_000_000)
    plan = run_capacity(results=folder, out_dir=tmp_path / "out", cat=cat).data["plan"]
    cores = plan["ingest"]["cores_for_days"]
    assert plan["node"]["cores_for_days_full_nodes"] == pytest.approx(cores * 0.9 / 0.6)
    assert plan["node"]["cores_for_days_full_nodes_gpu"] == pytest.approx(cores * 0.9 / 0.6 * 0.5)
    assert plan["node"]["gpu_speedup"] == pytest.approx(1.5)
    assert "full 8-core nodes" in (tmp_path / "out" / "capacity.md").read_text()
