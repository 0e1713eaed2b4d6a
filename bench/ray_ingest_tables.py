"""The tables of bench/ray_ingest.py's report: the whole commands, each run's throughput and CPU by process,
and where the Ray runs' time goes (stages, actors, a timeline)."""

from __future__ import annotations

from typing import Any

from bench.ray_ingest_runs import PROBE_MB, STEADY_FROM, STEADY_TO
from bench.report import Report, md_table


def runs_by_label(runs: list[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    """(pool 2 lanes, ray 2 actors, ray 1 actor, pool 1 lane): the runs in the order they were made."""
    by = {r["label"]: r for r in runs}
    return tuple(by[k] for k in by)


def commands_section(report: Report, data: dict[str, Any]) -> None:
    runs = data["command_runs"]
    rows = [
        (
            r["label"], r["tracks"], r["wall_seconds"], r["inside_wall_seconds"], r["outside_seconds"],
            round(r["tracks_per_s"], 3), r["cpu_by_process"]["total_cpu_seconds"], r["cpu_by_process"]["cores_used"],
            r["cpu_by_process"]["peak_rss_mb"], r["fresh_memory_cpu_s_per_gb"], ", ".join(str(x) for x in r["load_avg_before"]),
        )
        for r in runs
    ]  # fmt: skip
    roles = [
        (r["label"], role, c["processes"], c["cpu_seconds"], c.get("peak_rss_mb", "—"))
        for r in runs
        for role, c in r["cpu_by_process"]["by_role"].items()
        if c["cpu_seconds"] >= 0.3
    ]
    report.section(
        "Whole commands, fresh processes: what a user waits for (the target's measure)",
        f"`{runs[0]['command']}` and the same with `--ray`, in the order run (pairs alternate which goes first). "
        "Wall: from starting the process to its exit. Inside: the command's own report, from its ingest call to "
        "its return. Outside: the rest (Python's start, imports, the model in this process, the database "
        "connection, exit with Ray's shutdown).\n\n"
        + md_table(
            [
                "command",
                "tracks",
                "wall s",
                "inside s",
                "outside s",
                "tracks/s",
                "CPU s, all processes",
                "cores used",
                "largest RSS MB, processes summed",
                "fresh memory CPU s/GB before",
                "load before (1/5/15)",
            ],
            rows,
        )  # fmt: skip
        + "\n\nProcesses with 0.3 CPU-s or more:\n\n"
        + md_table(["command", "process", "count", "CPU s", "largest RSS MB"], roles),
    )


def throughput_section(report: Report, data: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    rows = [
        (
            r["label"], r["tracks"], r["wall_seconds"], round(r["tracks_per_s"], 2), r["realtime_factor"],
            round(r["steady_realtime_factor"], 1), round(r["fixed_seconds"], 1) if r["fixed_seconds"] is not None else "—",
            (r.get("ray") or {}).get("start_seconds", "—"), r["cpu_by_process"]["total_cpu_seconds"],
            r["cpu_by_process"]["cores_used"], round(r["audio_s_per_cpu_s"]),
            r["cpu_by_process"].get("peak_rss_mb", "—"), r.get("fresh_memory_cpu_s_per_gb", "—"),
            ", ".join(str(x) for x in r["load_avg_before"]),
        )
        for r in runs
    ]  # fmt: skip
    measures = [
        ("Ray (2 actors) / pool (2 lanes), throughput of the whole run", data["ray_over_pool_throughput"]),
        ("Ray (2 actors) / pool (2 lanes), steady rate", data["ray_over_pool_steady"]),
        ("Ray scaling 1 → 2 actors/CPUs, whole run", data["ray_scaling_1_to_2"]),
        ("Ray scaling 1 → 2 actors/CPUs, steady rate", data["ray_scaling_steady"]),
        ("pool scaling 1 → 2 lanes, whole run", data["pool_scaling_1_to_2"]),
        ("pool scaling 1 → 2 lanes, steady rate", data["pool_scaling_steady"]),
        ("Ray (2 actors) / pool (2 lanes), audio s per CPU s", data["ray_over_pool_cpu_efficiency"]),
    ]
    report.section(
        "Throughput, same library, one run",
        md_table(
            [
                "run",
                "tracks",
                "wall s",
                "tracks/s",
                "× realtime",
                "steady × realtime",
                "start-up + tail + finish s",
                "Ray start s",
                "CPU s, all processes",
                "cores used",
                "audio s per CPU s",
                "largest RSS MB, processes summed",
                "fresh memory CPU s/GB before",
                "load before (1/5/15)",
            ],
            rows,
        )  # fmt: skip
        + f"\n\nSteady rate: audio seconds stored per wall second between {STEADY_FROM:.0%} and {STEADY_TO:.0%} of "
        "the run's audio (least-squares slope). Start-up + tail + finish: the wall time that rate does not explain "
        "(wall − audio / steady rate): hashing, starting Ray and the workers, the last tracks running on fewer "
        "workers, ANALYZE and calibration. Largest RSS: each process's largest resident size, summed over the run's "
        "processes (the driver's includes what it held before the clock). Fresh memory: CPU seconds per GB this "
        f"process paid to touch {PROBE_MB} MB of new memory just before the run (`fresh_memory_cpu_s_per_gb`): on this VM "
        "a page the host has taken back costs up to ~60× a reused one, and every process a run starts pays that "
        "price for its imports and working set.\n\n"
        + md_table(["measure", "value"], [(k, round(v, 3)) for k, v in measures]),
    )


def cpu_sections(report: Report, runs: list[dict[str, Any]]) -> None:
    """CPU by process for every run, and where the time goes inside the two Ray runs."""
    _pool2, ray2, ray1, _pool1 = runs_by_label(runs)
    report.section(
        "CPU seconds by process, every run (sampled process tree, bench/proc_cpu.py)",
        md_table(
            ["run", "process", "count", "CPU s", "largest RSS MB"],
            [
                (r["label"], role, c["processes"], c["cpu_seconds"], c.get("peak_rss_mb", "—"))
                for r in runs
                for role, c in r["cpu_by_process"]["by_role"].items()
                if c["cpu_seconds"] >= 0.05
            ],
        ),  # fmt: skip
    )
    report.section("Timeline: where the fixed cost goes", timeline_md(runs))
    for r in (ray2, ray1):
        times = r["ray"]
        stage_rows = [(k, v, round(v / max(r["tracks"], 1), 3)) for k, v in times["stage_seconds"].items()]
        worker_rows = [
            (k, w["tracks"], w["seconds"], round(w["seconds"] / max(w["tracks"], 1), 3))
            for k, w in times["workers"].items()
        ]
        report.section(
            f"Where the time goes: {r['label']}",
            "Seconds inside each stage's step function, summed over tracks (stages overlap in time):\n\n"
            + md_table(["stage", "seconds", "s/track"], stage_rows)
            + "\n\nPer worker process (featurize tasks) and per actor (embed, write):\n\n"
            + md_table(["stage:pid", "tracks", "seconds", "s/track"], worker_rows)
            + "\n\nCPU seconds per analysis stage (the analysing threads', summed): "
            + ", ".join(f"{k} {v}" for k, v in r["stage_cpu_seconds"].items())
            + "\n\nCPU seconds of each embedding actor's process (featurize runs in it too): start-up (Ray "
            "worker, imports, model, warm-up), then its tracks' analysis stages, and the rest (Ray Data's "
            "per-block work, moving rows, pickling, tags, silence check, Ray's threads):\n\n"
            + md_table(
                ["actor pid", "start-up", "after start-up", "in the stages", "outside the stages"],
                [
                    (
                        pid,
                        a["startup_cpu_s"],
                        a["after_startup_cpu_s"],
                        a["in_stages_cpu_s"],
                        a["outside_stages_cpu_s"],
                    )
                    for pid, a in times.get("actor_cpu", {}).items()
                ],
            ),  # fmt: skip
        )


#: The timeline's rows: (what happened, the stamp in ``RayIngestReport``'s timeline).
TIMELINE_ROWS = (
    ("ray.init returned (started with the hashing)", "ray_init_done"),
    ("every file hashed and looked up (plan)", "plan_done"),
    ("Ray Data pipeline built, executor starting", "pipeline_start"),
    ("first embedding actor's process up", "actor_1_process_up"),
    ("... its constructor runs (Ray worker and module imports done)", "actor_1_constructor"),
    ("... torch imported", "actor_1_torch_imported"),
    ("... model loaded", "actor_1_model_loaded"),
    ("... warmed up (ready for its first file)", "actor_1_warm"),
    ("second actor ready", "actor_2_warm"),
    ("first file featurized", "first_featurize_done"),
    ("first file embedded", "first_embed_done"),
    ("first write committed", "first_write_done"),
    ("last file embedded", "last_embed_done"),
    ("last write committed", "last_write_done"),
    ("Ray Data done (its actors stopped)", "pipeline_done"),
    ("ANALYZE + calibration done (started at the last write)", "finish_done"),
    ("ray.shutdown() returned", "ray_shutdown_done"),
    ("run over", "end"),
)


def timeline_md(runs: list[dict[str, Any]]) -> str:
    """Seconds since each run began at which its start-up, first and last work and finish happened."""
    rays = [r for r in runs if r["path"] == "ray"]
    pools = [r for r in runs if r["path"] == "pool"]
    rows = [(what, *(r["ray"]["timeline"].get(key, "—") for r in rays)) for what, key in TIMELINE_ROWS]
    pool_rows = [
        (r["label"], r["first_stored_s"], r["last_stored_s"], r["wall_seconds"]) for r in pools
    ]  # fmt: skip
    return (
        "Wall-clock stamps in one run each, seconds since the run began (Ray's worker processes stamp their "
        "own steps; `RayIngestReport.times.timeline` has every stamp):\n\n"
        + md_table(["event", *(r["label"] for r in rays)], rows)
        + "\n\nThe pool for comparison (its first lane is this process, which holds the model already):\n\n"
        + md_table(["run", "first track stored s", "last track stored s", "run over s"], pool_rows)
    )
