"""Where a Ray ingest's CPU goes, next to the pool's (behind docs/SCALE.md, "Session 12"). Scratch quality;
not part of the product or of CI.

Renders the Ray benchmark's library (``bench.ingest_speed.render_ingest_library`` plus dithered copies) and
runs each variant on it in this process, each Ray variant with its own local Ray, sampling every process in
this process's tree: per process its CPU at the last sample, under its last title (a Ray worker is renamed
when it becomes an actor, so nothing is counted twice; PostgreSQL runs detached and is not counted), and the
analysis stages' thread CPU from the report.

    python scripts/ray_cpu_probe.py pool2,ray2,ray1                      # 15 min rendered, 7 copies: 88 files
    python scripts/ray_cpu_probe.py ray2,ray2-noprestart,ray2,ray2-noprestart --minutes 15 --copies 7
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil


def title(p: psutil.Process) -> str:
    cmd = p.cmdline()
    name = cmd[0] if cmd else p.name()
    if "ray::" in name:
        return name.split("(")[0].split(".")[0]
    if p.pid == os.getpid():
        return "driver (this process)"
    if "postgres" in p.name():
        return "postgres"
    return name.rsplit("/", 1)[-1] + " " + " ".join(cmd[1:3])[-40:]


def sample(stop: threading.Event, seen: dict[int, tuple[str, float]]) -> None:
    me = psutil.Process()
    while not stop.is_set():
        for p in [me, *me.children(recursive=True)]:
            try:
                t = p.cpu_times()
                seen[p.pid] = (title(p), t.user + t.system)
            except psutil.Error:
                pass
        time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", help="comma-separated: pool1, pool2, ray1, ray2, ray2-noprestart")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--copies", type=int, default=7)
    ap.add_argument("--work", type=Path, default=Path("/tmp/ray-cpu-probe"))
    args = ap.parse_args()

    import ray

    from bench import pgbench_db
    from bench.ingest_speed import render_ingest_library
    from bench.ray_ingest_runs import dithered_copies, truncate_library
    from cadenza.settings import Settings
    from encoder.embed import resolve_embedder
    from retrieval.ingest import ingest
    from retrieval.ray_ingest import LOCAL_OBJECT_STORE_BYTES, ray_ingest

    lib = args.work / "lib"
    midi = Settings.from_env().paths.corpus / "midi_cache"
    sidecar, _ = render_ingest_library(out_dir=lib, midi_cache=midi, seed=0, min_seconds=args.minutes * 60)
    dithered_copies(lib, args.copies, seed=0)
    embedder, spec = resolve_embedder(None)
    db = pgbench_db.open_temp_database(args.work / "home")
    try:
        for variant in args.variants.split(","):
            truncate_library(db)
            seen: dict[int, tuple[str, float]] = {}
            stop = threading.Event()
            sampler = threading.Thread(target=sample, args=(stop, seen))
            sampler.start()
            time.sleep(0.5)
            before = seen[os.getpid()][1]
            workers = int(next(c for c in variant if c.isdigit()))
            t0 = time.perf_counter()
            if variant.startswith("ray"):
                off = {"prestart_worker_first_driver": False, "enable_worker_prestart": False}
                ray.init(
                    num_cpus=workers, include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                    logging_level=logging.WARNING, log_to_driver=False,
                    _system_config=off if variant.endswith("noprestart") else {},
                )  # fmt: skip
                rep = ray_ingest(
                    db=db, paths=[lib], spec=spec, model_version=embedder.model_version, metadata_file=sidecar,
                    workers=workers, num_cpus=workers, progress=False,
                )  # fmt: skip
                gc.collect()
                ray.shutdown()
            else:
                rep = ingest(
                    db=db, paths=[lib], embedder=embedder, spec=spec, metadata_file=sidecar, workers=workers,
                    progress=False,
                )  # fmt: skip
            wall = time.perf_counter() - t0
            time.sleep(0.3)
            stop.set()
            sampler.join()
            by: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
            for pid, (name, cpu) in seen.items():
                by[name][0] += cpu - (before if pid == os.getpid() else 0.0)
                by[name][1] += 1
            stages = rep.to_json().get("stage_cpu_seconds", {})
            print(
                f"== {variant}: wall {wall:.1f} s, tracks {len(rep.added) + len(rep.replaced)}, "
                f"{len(seen)} processes, CPU {sum(v[0] for v in by.values()):.1f} s, "
                f"stages {sum(stages.values()):.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in stages.items())})"
            )
            for name, (cpu, n) in sorted(by.items(), key=lambda kv: -kv[1][0]):
                if cpu >= 0.2:
                    print(f"   {name[:60]:60s} x{n:<3d} {cpu:7.2f}")
    finally:
        db.close()


if __name__ == "__main__":
    main()
