"""``python -m bench.ingest_speed``: end-to-end ingest speed with the real ``retrieval.ingest``.

On a library of at least 30 min of audio so that process start-up does not dominate (issue #4's
target: ≥ 300× realtime on 2 cores): wall time, CPU seconds per stage (decode, level, features,
embed, describe; summed over the lanes), all CPU of this process and its workers, and the load
average before and after. ``cadenza bench speed`` runs the same measurement inside its report.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from pathlib import Path
from typing import Any

from bench import pgbench_db
from bench.library import SAMPLE_RATE, Renderer, render_library, select_works
from bench.proc_cpu import TreeCPU
from bench.report import Report, machine_info, md_table

log = logging.getLogger(__name__)

#: Issue #4: ingest end to end at ≥ 300× realtime on 2 cores.
INGEST_TARGET_X = 300.0
INGEST_STAGES = ("decode", "level", "features", "melody", "embed", "timbre", "describe", "write")


def render_ingest_library(
    *, out_dir: Path, midi_cache: Path, seed: int, min_seconds: float, work_seconds: float = 240.0
) -> tuple[Path | None, float]:
    """Render held-out works (up to ``work_seconds`` each) into ``out_dir`` until ≥ ``min_seconds``.

    Returns (the ingest sidecar, seconds of audio written).
    """
    renderer = Renderer(midi_cache=midi_cache, max_seconds=work_seconds)
    sidecar, total = None, 0.0
    for per in range(1, 7):  # the smallest selection that is long enough
        _, clean, sidecar = render_library(
            select_works(per_composer=per, seed=seed), renderer=renderer, out_dir=out_dir
        )
        total = sum(y.size for y in clean.values()) / SAMPLE_RATE
        if total >= min_seconds:
            break
    return sidecar, total


def measure_ingest(
    *, paths: list[Path], home: Path, embedder: Any, spec: Any, metadata_file: Path | None, workers: int = 2
) -> dict[str, Any]:
    """Ingest ``paths`` into a fresh embedded database under ``home`` with the real ``retrieval.ingest``.

    Wall time and realtime factor as the user sees them (database already running); CPU
    seconds per analysis stage summed over the lanes, and per lane; CPU of this process, of its
    worker processes (``getrusage``) and of the PostgreSQL server (its processes' own
    counters); load averages around it.
    """
    from cadenza.embedded_pg import postmaster_pid
    from retrieval.ingest import ingest  # torch and the analysis stack: only when measuring

    db = pgbench_db.open_temp_database(home)
    try:
        load_before = [round(x, 2) for x in os.getloadavg()]
        tree = TreeCPU(extra_roots=lambda: [p for p in [postmaster_pid(home / "pgdata")] if p]).start()
        self0, kids0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            rep = ingest(
                db=db, paths=paths, embedder=embedder, spec=spec, metadata_file=metadata_file, workers=workers,
                progress=False,
            )  # fmt: skip
        finally:
            procs = tree.stop()
        self1, kids1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        load_after = [round(x, 2) for x in os.getloadavg()]
    finally:
        db.close()

    def cpu(a: Any, b: Any) -> float:
        return (b.ru_utime + b.ru_stime) - (a.ru_utime + a.ru_stime)

    out: dict[str, Any] = rep.to_json()
    stage = {k: rep.stage_cpu_s.get(k, 0.0) for k in INGEST_STAGES}
    analysis = sum(v for k, v in stage.items() if k != "write")
    total_cpu = cpu(self0, self1) + cpu(kids0, kids1)
    pg_cpu = procs["by_role"].get("postgres", {}).get("cpu_seconds")
    out.update(
        workers=workers,
        cores=os.cpu_count(),
        tracks=len(rep.added) + len(rep.replaced),
        stage_cpu_seconds=stage,
        stage_cpu_seconds_total=sum(stage.values()),
        stage_realtime_x_per_core={k: rep.audio_seconds / v for k, v in stage.items() if v > 0},
        analysis_realtime_x_per_core=rep.audio_seconds / max(analysis, 1e-9),
        cpu_seconds_parent=cpu(self0, self1),
        cpu_seconds_workers=cpu(kids0, kids1),
        cpu_seconds_total=total_cpu,
        cpu_seconds_postgres=pg_cpu,
        # Sampled per process (bench/proc_cpu.py): the driver, pool workers, PostgreSQL.
        cpu_by_process=procs,
        cores_used=(total_cpu + (pg_cpu or 0.0)) / max(rep.wall_seconds, 1e-9),
        # Everything that is not a per-track stage: process start-up, imports, calibration.
        cpu_seconds_overhead=total_cpu - sum(stage.values()),
        realtime_x_per_cpu_second=rep.audio_seconds / max(total_cpu + (pg_cpu or 0.0), 1e-9),
        load_avg_before=load_before,
        load_avg_after=load_after,
        target_realtime_x=INGEST_TARGET_X,
        meets_target=rep.realtime_factor >= INGEST_TARGET_X,
    )
    return out


def ingest_rows(d: dict[str, Any]) -> list[tuple[str, Any]]:
    """The ingest measurement as (measure, value) rows."""
    rows: list[tuple[str, Any]] = [
        ("tracks / audio minutes", f"{d['tracks']} / {d['audio_seconds'] / 60:.1f}"),
        (f"wall seconds ({d['workers']} lanes on {d['cores']} cores)", d["wall_seconds"]),
        (f"realtime factor, wall (target ≥ {d['target_realtime_x']:.0f}×)", d["realtime_factor"]),
        ("meets the target", d["meets_target"]),
        ("CPU seconds, this process + workers", d["cpu_seconds_total"]),
        ("CPU seconds, workers", d["cpu_seconds_workers"]),
        ("CPU seconds, PostgreSQL server", d.get("cpu_seconds_postgres")),
        ("audio seconds per CPU second (all of the above)", d["realtime_x_per_cpu_second"]),
        (
            "audio seconds per CPU second of the analysis stages (one core's ceiling)",
            d.get("analysis_realtime_x_per_core"),
        ),
    ]
    for k, v in d["stage_cpu_seconds"].items():
        rows.append((f"stage CPU seconds: {k} ({d['stage_realtime_x_per_core'].get(k, 0):.0f}× per core)", v))
    rows += [
        ("stage CPU seconds: sum", d["stage_cpu_seconds_total"]),
        ("CPU seconds outside the stages (start-up, imports, calibration)", d["cpu_seconds_overhead"]),
        ("load average before (1/5/15 min)", ", ".join(map(str, d["load_avg_before"]))),
        ("load average after (1/5/15 min)", ", ".join(map(str, d["load_avg_after"]))),
    ]
    return rows


#: The side-by-side table's rows: (label, key in a measurement, digits).
SIDE_BY_SIDE = (
    ("files / tracks stored", None, 0),
    ("audio minutes", "audio_minutes", 1),
    ("wall seconds (median of the rounds)", "wall_seconds", 2),
    ("realtime factor, wall (median; target ≥ 300×)", "realtime_factor", 0),
    ("CPU s, this process + workers", "cpu_seconds_total", 1),
    ("CPU s, PostgreSQL server", "cpu_seconds_postgres", 1),
    ("audio s per CPU s, everything (this process, workers, server)", "realtime_x_per_cpu_second", 0),
    ("cores used: CPU s (all of the above) / wall s", "cores_used", 2),
    ("audio s per CPU s, analysis stages only (one core's ceiling)", "analysis_realtime_x_per_core", 0),
)


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median realtime factor (a real run, so its figures belong together)."""
    return sorted(runs, key=lambda r: r["realtime_factor"])[len(runs) // 2]


def side_by_side(kinds: dict[str, list[dict[str, Any]]]) -> tuple[list[str], list[list[Any]]]:
    """Real vs rendered: one column per kind (its median run), rows as in SIDE_BY_SIDE plus every stage."""
    med = {k: _median_run(v) for k, v in kinds.items()}
    headers = ["measure", *kinds]
    rows: list[list[Any]] = []
    for label, key, digits in SIDE_BY_SIDE:
        if key is None:
            rows.append([label, *(f"{m['files']} / {m['tracks']}" for m in med.values())])
        elif key == "audio_minutes":
            rows.append([label, *(round(m["audio_seconds"] / 60, digits) for m in med.values())])
        else:
            rows.append(
                [label, *(None if m.get(key) is None else round(m[key], digits) for m in med.values())]
            )
    rows.append(["realtime factor, wall, every round", *(
        " / ".join(f"{r['realtime_factor']:.0f}" for r in v) for v in kinds.values())])  # fmt: skip
    for stage in INGEST_STAGES:
        rows.append([f"stage CPU s: {stage} (× realtime per core)", *(
            f"{m['stage_cpu_seconds'].get(stage, 0):.2f} ({m['stage_realtime_x_per_core'].get(stage, 0):.0f}×)"
            for m in med.values())])  # fmt: skip
    rows.append(["CPU s outside the stages (start-up, imports, calibration)", *(
        round(m["cpu_seconds_overhead"], 2) for m in med.values())])  # fmt: skip
    return headers, rows


def lane_rows(kinds: dict[str, list[dict[str, Any]]]) -> list[list[Any]]:
    """Per lane of each kind's median run: tracks, audio minutes, analysis CPU s, share of the audio."""
    rows: list[list[Any]] = []
    for kind, runs in kinds.items():
        m = _median_run(runs)
        lanes = sorted(m.get("lanes", {}).values(), key=lambda c: -c["audio_seconds"])
        total = sum(c["audio_seconds"] for c in lanes) or 1.0
        for i, c in enumerate(lanes):
            name = "this process (also writes)" if i == 0 and len(lanes) == 1 else f"lane {i + 1}"
            rows.append([kind, name, int(c["tracks"]), round(c["audio_seconds"] / 60, 1),
                         round(c["cpu_seconds"], 2), f"{c['audio_seconds'] / total:.0%}"])  # fmt: skip
    return rows


def _rounds(
    libraries: dict[str, tuple[list[Path], Path | None]], *, workdir: Path, embedder: Any, spec: Any, workers: int,
    rounds: int,
) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """Every library ingested once per round into a fresh database, the order alternating; runs per library."""
    from retrieval.ingest import find_audio_files

    kinds: dict[str, list[dict[str, Any]]] = {k: [] for k in libraries}
    for r in range(rounds):
        order = list(libraries) if r % 2 == 0 else list(reversed(libraries))
        for kind in order:
            paths, meta = libraries[kind]
            run = measure_ingest(
                paths=paths, home=workdir / f"home-{r}-{len(kinds[kind])}-{kind[:4]}", embedder=embedder,
                spec=spec, metadata_file=meta, workers=workers,
            )  # fmt: skip
            run.update(files=len(find_audio_files(paths)), round=r)
            kinds[kind].append(run)
            log.info("%s round %d: %.0fx realtime", kind, r, run["realtime_factor"])
    return kinds


def _report(
    kinds: dict[str, list[dict[str, Any]]], *, audio: list[Path], model_version: str, workers: int, rounds: int,
    elapsed: float,
) -> Report:  # fmt: skip
    report = Report(
        name="ingest_speed",
        title="Ingest speed end to end, real recordings and rendered audio in one run (target ≥ 300× realtime on 2 cores)",
        machine=machine_info(),
    )
    headline = next(iter(kinds))  # real recordings when given: what a library is made of
    report.data = {
        # The headline library's median run, flat, as bench.capacity reads it.
        **_median_run(kinds[headline]),
        "library": headline,
        "by_library": {k: _median_run(v) for k, v in kinds.items()},
        "model_version": model_version,
        "sources": {
            "real recordings": [str(p) for p in audio],
            "rendered 16-kHz WAV": "bench.library held-out works",
        },
        "rounds": rounds,
        "runs": kinds,
    }
    loads = [
        x
        for runs in kinds.values()
        for run in runs
        for x in (run["load_avg_before"][0], run["load_avg_after"][0])
    ]
    report.notes += [
        f"Model {model_version}; {workers} lanes; {rounds} rounds, each ingesting every library into a fresh "
        "embedded database, in alternating order; the columns show each library's median round.",
        "Real recordings: " + (", ".join(str(p) for p in audio) or "none given (--audio)") + ".",
        f"1-min load average around the runs: {min(loads):.1f}–{max(loads):.1f} on {os.cpu_count()} cores. "
        "Above ~1 other work shared the cores, so wall times are pessimistic; the CPU-second rows are less sensitive to it.",
        "Stage CPU seconds are the analysing threads' own (one thread per lane), summed over the lanes; "
        "write = the writing thread in this process. PostgreSQL's CPU is its processes' own counters.",
        f"Run took {elapsed / 60:.1f} min.",
    ]
    headers, rows = side_by_side(kinds)
    report.section("Real vs rendered", md_table(headers, rows))
    report.section(
        "Per lane (median run): what each process analysed",
        md_table(
            ["library", "lane", "tracks", "audio min", "analysis CPU s", "share of the audio"],
            lane_rows(kinds),
        ),
    )
    report.section(
        "CPU by process (median run; sampled, bench/proc_cpu.py)",
        md_table(["library", "process", "count", "CPU s"], process_rows(kinds)),
    )
    return report


def run_ingest_speed(
    *,
    out_dir: Path,
    workdir: Path,
    audio: list[Path],
    minutes: float,
    workers: int,
    seed: int,
    checkpoint: Path | None,
    midi_cache: Path,
    rounds: int = 2,
) -> Report:
    """Real recordings (``audio``) and rendered held-out works side by side in one run.

    Each round ingests both libraries into fresh databases, in alternating order, so a change of
    load on a shared machine hits both alike; the table shows each kind's median round.
    """
    from encoder.embed import resolve_embedder

    t0 = time.perf_counter()
    embedder, spec = resolve_embedder(checkpoint)
    lib = workdir / "ingest-library"
    sidecar, _ = render_ingest_library(
        out_dir=lib, midi_cache=midi_cache, seed=seed, min_seconds=minutes * 60
    )
    libraries: dict[str, tuple[list[Path], Path | None]] = {}
    if audio:
        libraries["real recordings"] = (list(audio), None)
    libraries["rendered 16-kHz WAV"] = ([lib], sidecar)
    kinds = _rounds(libraries, workdir=workdir, embedder=embedder, spec=spec, workers=workers, rounds=rounds)
    report = _report(
        kinds, audio=audio, model_version=embedder.model_version, workers=workers, rounds=rounds,
        elapsed=time.perf_counter() - t0,
    )  # fmt: skip
    report.write(out_dir)
    return report


def process_rows(kinds: dict[str, list[dict[str, Any]]]) -> list[list[Any]]:
    """CPU seconds per kind of process (driver, pool workers, PostgreSQL) of each library's median run."""
    rows: list[list[Any]] = []
    for kind, runs in kinds.items():
        by_role = _median_run(runs)["cpu_by_process"]["by_role"]
        rows += [
            [kind, r, c["processes"], c["cpu_seconds"]]
            for r, c in by_role.items()
            if c["cpu_seconds"] >= 0.05
        ]
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.ingest_speed`` (or ``python -m bench.speed``): the ingest measurement alone (one command, a few minutes)."""
    import argparse
    import tempfile

    from bench.report import RESULTS_DIR
    from cadenza.settings import Settings

    p = argparse.ArgumentParser(prog="python -m bench.ingest_speed", description=main.__doc__)
    p.add_argument(
        "--audio", type=Path, nargs="*", default=[], help="folders/files to ingest (default: render)"
    )
    p.add_argument("--minutes", type=float, default=30.0, help="rendered library size (default 30 min)")
    p.add_argument("--workers", type=int, default=2, help="ingest lanes (default 2)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of both libraries, interleaved (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--midi-cache", type=Path, default=None)
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    pgbench_db.keep_lock_files_for_the_run()
    with tempfile.TemporaryDirectory(prefix="cadenza-bench-ingest-") as tmp:
        report = run_ingest_speed(
            out_dir=args.out,
            workdir=Path(tmp),
            audio=list(args.audio),
            minutes=args.minutes,
            workers=args.workers,
            seed=args.seed,
            checkpoint=args.checkpoint or settings.checkpoint,
            midi_cache=args.midi_cache or (settings.paths.corpus / "midi_cache"),
            rounds=args.rounds,
        )
    for kind, runs in report.data["runs"].items():
        rf = " / ".join(f"{r['realtime_factor']:.0f}" for r in runs)
        print(f"ingest, {kind}: {rf}x realtime (target {INGEST_TARGET_X:.0f}x)")
    print(f"wrote {args.out / 'ingest_speed.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
