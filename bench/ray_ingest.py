"""Ingest on Ray against the built-in process pool, on the same library, in one run.

``python -m bench.ray_ingest`` renders held-out works (as ``bench.ingest_speed`` does), adds copies
of them made distinct by one bit of dither (so each has its own content hash and the library
is long enough for start-up costs to matter as little as they would in real use), then ingests
the library four times into one throw-away embedded database, emptied between runs:

* the built-in pool with 2 lanes (the baseline) and with 1 lane (torch and BLAS on one thread: one core);
* Ray Data with 2 embedding actors on a local Ray of 2 CPUs, and with 1 actor on 1 CPU.

Each in-process run's clock starts at the ingest call: Ray's start is inside it, but this process
already holds what the pool's first lane needs (torch, the model, librosa's imports), so those runs
say where the time goes (stages, actors, a timeline) more than what a user waits for.

Then the whole commands, ``cadenza ingest DIR`` against ``cadenza ingest --ray DIR``, each a fresh
process with its defaults, timed from its start to its exit, in pairs (A B, then B A) on the same
library with the database already up. **The target is judged on these**, as decided before either
was measured (session 11): a user of either command pays Python's start, the imports, the model
and Ray's start and shutdown, and nothing is paid before a clock that the other path pays after it.
Writes ``bench/results/ray_ingest.{json,md}``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import pgbench_db
from bench.ingest_speed import render_ingest_library
from bench.ray_ingest_runs import command_run, dithered_copies, one_run
from bench.ray_ingest_tables import commands_section, cpu_sections, runs_by_label, throughput_section
from bench.report import Report, machine_info

log = logging.getLogger(__name__)

#: Issue #21: the Ray path within 15 % of the built-in pool's throughput on one machine.
RAY_TARGET_RATIO = 0.85
#: Dithered copies of each rendered file: 20 rendered works × (1 + 19) = 400 files, ~16.7 h of audio,
#: ~100 s for the 2-lane pool on an idle 2-core machine (extrapolated from 20.7 s for 80 files).
#: Ray's start-up (~18 CPU-s) is a fixed cost per run; on those 80 files it was most of Ray's gap,
#: a share no catalogue one would put on Ray would see. Bigger is closer to real ingests, but the
#: four runs must fit a benchmark session (~12–15 min idle, extrapolated).
DEFAULT_COPIES = 19
#: Pairs of whole commands (pool, Ray; then Ray, pool; ...): each run is ~80-95 s on 400 files idle, so one
#: pair keeps the benchmark near 11 min; more pairs give a median over more orders.
DEFAULT_COMMAND_PAIRS = 1
#: A 1-minute load average above this (2 cores) makes every wall time here pessimistic.
BUSY_LOAD = 3.0  # the 2-lane runs themselves keep the 1-minute load near 2 on 2 cores


def _report(data: dict[str, Any], runs: list[dict[str, Any]], *, copies: int, elapsed: float) -> Report:
    pool2 = runs_by_label(runs)[0]
    ratio, n_files = data["ray_over_pool_throughput"], data["files"]
    report = Report(
        name="ray_ingest",
        title="Ingest on Ray Data against the built-in pool (issue #21)",
        machine=machine_info(),
    )
    report.data = data
    loads = [
        x for r in [*runs, *data["command_runs"]] for x in (r["load_avg_before"][0], r["load_avg_after"][0])
    ]
    busy = max(loads) > BUSY_LOAD
    # On a shared machine each run gets whatever share of the cores the other work leaves it, and that share
    # moves between runs (session 9: the pool's runs got 0.55-0.65 cores, Ray's 1.05-1.34): no verdict then.
    verdict = (
        "cannot be judged from this run (shared machine; see the cores used per run)"
        if busy
        else ("is met" if data["meets_target"] else "is NOT met")
    )
    report.notes += [
        f"Library: {n_files} files, {pool2['audio_seconds'] / 3600:.1f} h: held-out works rendered to 16-kHz WAV "
        f"(bench.library) plus {copies} copies of each with ±1 LSB dither (own content hashes, same work per file). "
        "Sized so that start-up is a share of the run, as in a real ingest of a catalogue, not most of it "
        "(`--copies` changes it).",
        f"Whole commands, fresh processes (the target's measure, decided before measuring): `cadenza ingest "
        f"--ray` reaches {data['command_ray_over_pool']:.3f}× the throughput of `cadenza ingest` (target ≥ "
        f"{RAY_TARGET_RATIO}; median of {len(data['command_pair_ratios'])} pair(s): "
        f"{', '.join(f'{x:.3f}' for x in data['command_pair_ratios'])}): the target {verdict}.",
        f"In this process (clock from the ingest call; this process already holds torch, the model and librosa "
        f"for the pool's first lane): Ray with 2 actors reaches {ratio:.3f}× the pool over the whole run, "
        f"{data['ray_over_pool_steady']:.2f}× at the steady rate (start-up, tail and finish left out).",
        "In-process wall time: hashing the files, worker start-up, Ray's start (`ray.init`, overlapped with the "
        "hashing) for the Ray rows, writes, ANALYZE and calibration; the embedded PostgreSQL was started before "
        "the clock, for the whole commands too.",
        f"1-minute load average around the runs: {min(loads):.1f}–{max(loads):.1f} on 2 cores: "
        + (
            "the machine was SHARED with other work, so wall times are pessimistic and the ratios noisier "
            "than the figures suggest; rerun on an idle machine for the figures to quote."
            if busy
            else "idle enough for the wall times to stand."
        ),
        f"Run took {elapsed / 60:.1f} min: `python -m bench.ray_ingest`.",
    ]
    commands_section(report, data)
    throughput_section(report, data, runs)
    cpu_sections(report, runs)
    return report


def command_pairs(
    *, db: Any, folder: Path, sidecar: Path | None, home: Path, pairs: int
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``pairs`` × (pool command, Ray command), alternating which goes first; each pair as (pool, Ray)."""
    out = []
    for i in range(pairs):
        order = (False, True) if i % 2 == 0 else (True, False)
        got = {
            ray: command_run(
                label="cadenza ingest --ray" if ray else "cadenza ingest",
                db=db,
                folder=folder,
                sidecar=sidecar,
                ray=ray,
                home=home,
                pgdata=home / "pgdata",
            )
            for ray in order
        }
        out.append((got[False], got[True]))
    return out


def run_ray_ingest(
    *,
    out_dir: Path,
    workdir: Path,
    minutes: float,
    copies: int,
    seed: int,
    checkpoint: Path | None,
    midi_cache: Path,
    command_pairs_n: int = DEFAULT_COMMAND_PAIRS,
) -> Report:
    from encoder.embed import resolve_embedder
    from retrieval.ingest import find_audio_files

    t0 = time.perf_counter()
    embedder, spec = resolve_embedder(checkpoint)
    lib = workdir / "ray-ingest-library"
    sidecar, _ = render_ingest_library(
        out_dir=lib, midi_cache=midi_cache, seed=seed, min_seconds=minutes * 60
    )
    dithered_copies(lib, copies, seed=seed)
    n_files = len(find_audio_files([lib]))
    db = pgbench_db.open_temp_database(workdir / "home")
    runs = []
    try:
        for label, ray, workers in (
            ("pool, 2 lanes", False, 2),
            ("ray, 2 actors / 2 CPUs", True, 2),
            ("ray, 1 actor / 1 CPU", True, 1),
            ("pool, 1 lane", False, 1),
        ):
            runs.append(
                one_run(
                    label=label, db=db, paths=[lib], sidecar=sidecar, embedder=embedder, spec=spec, ray=ray,
                    workers=workers, pgdata=workdir / "home" / "pgdata",
                )
            )  # fmt: skip
        commands = command_pairs(
            db=db, folder=lib, sidecar=sidecar, home=workdir / "home", pairs=command_pairs_n
        )
    finally:
        db.close()
    by = {r["label"]: r for r in runs}
    pool2, ray2, ray1, pool1 = (by[k] for k in by)
    ratio = ray2["tracks_per_s"] / pool2["tracks_per_s"]
    pair_ratios = [r["tracks_per_s"] / p["tracks_per_s"] for p, r in commands]
    command_ratio = float(np.median(pair_ratios)) if pair_ratios else float("nan")
    data = {
        "files": n_files,
        "model_version": embedder.model_version,
        "runs": runs,
        "ray_over_pool_throughput": ratio,
        "target_ratio": RAY_TARGET_RATIO,
        # The target's measure: the whole commands, fresh processes (module docstring).
        "command_ray_over_pool": command_ratio,
        "command_pair_ratios": pair_ratios,
        "command_runs": [r for pair in commands for r in pair],
        "meets_target": command_ratio >= RAY_TARGET_RATIO,
        "in_process_meets_target": ratio >= RAY_TARGET_RATIO,
        "ray_over_pool_steady": ray2["steady_realtime_factor"] / max(pool2["steady_realtime_factor"], 1e-9),
        "ray_scaling_1_to_2": ray2["tracks_per_s"] / ray1["tracks_per_s"],
        "ray_scaling_steady": ray2["steady_realtime_factor"] / max(ray1["steady_realtime_factor"], 1e-9),
        "pool_scaling_steady": pool2["steady_realtime_factor"] / max(pool1["steady_realtime_factor"], 1e-9),
        "pool_scaling_1_to_2": pool2["tracks_per_s"] / pool1["tracks_per_s"],
        # Load-insensitive: audio seconds per CPU second of everything (driver, workers, Ray, PostgreSQL).
        "ray_over_pool_cpu_efficiency": ray2["audio_s_per_cpu_s"] / pool2["audio_s_per_cpu_s"],
    }
    report = _report(data, runs, copies=copies, elapsed=time.perf_counter() - t0)
    report.write(out_dir)
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.ray_ingest``: Ray Data ingest against the built-in pool (a few minutes)."""
    import argparse
    import tempfile

    from bench.report import RESULTS_DIR
    from cadenza.settings import Settings

    p = argparse.ArgumentParser(prog="python -m bench.ray_ingest", description=main.__doc__)
    p.add_argument("--minutes", type=float, default=30.0, help="rendered audio before copies (default 30)")
    p.add_argument(
        "--copies", type=int, default=DEFAULT_COPIES,
        help=f"dithered copies of each rendered file (default {DEFAULT_COPIES})",
    )  # fmt: skip
    p.add_argument(
        "--pairs", type=int, default=DEFAULT_COMMAND_PAIRS,
        help=f"pairs of whole `cadenza ingest` / `--ray` commands, fresh processes (default {DEFAULT_COMMAND_PAIRS})",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--midi-cache", type=Path, default=None)
    p.add_argument(
        "--workdir", type=Path, default=None, help="keep the rendered library here (default: temporary)"
    )
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    midi_cache = args.midi_cache or (Settings.from_env().paths.corpus / "midi_cache")
    with tempfile.TemporaryDirectory(prefix="cadenza-ray-bench-") as tmp:
        report = run_ray_ingest(
            out_dir=args.out, workdir=args.workdir or Path(tmp), minutes=args.minutes, copies=args.copies,
            seed=args.seed, checkpoint=args.checkpoint, midi_cache=midi_cache, command_pairs_n=args.pairs,
        )  # fmt: skip
    print(report.to_markdown())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
