"""``python -m bench.ingest_scaling DIR``: ingest's per-file work on 1 … N processes of one machine (issue #21).

The capacity model (``bench.capacity``) turns CPU seconds per audio hour, measured on 2 cores, into
cores for a catalogue: that assumes the per-file work scales with the processes. This measures it on
whatever machine runs it (a 16-core node when one is lent): each process is an ingest lane (torch and
BLAS on one thread, freed memory kept, warmed up), and runs the pool's own per-file steps
(``featurize_file`` then ``embed_file``: decode, level, features, melody, encoder, descriptors; no
database) over the audio files in ``DIR``, each file ``--passes`` times per process. With a GPU, a last
run puts every lane's encoder on it (``--gpu``): what the CPUs do then, and how fast.

Throughput is audio seconds per wall second from the moment every lane is ready (start-up reported apart)
to the last file; efficiency is throughput / (processes × the one-process throughput).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

from bench.report import RESULTS_DIR, Report, machine_info, md_table

log = logging.getLogger(__name__)


def _lane(files: list[str], passes: int, gpu: bool, ready: Any, go: Any, out: Any) -> None:
    """One ingest lane: warm up, wait for every lane, then run its files; report its CPU and audio."""
    import torch

    from encoder.embed import Embedder
    from retrieval.analysis import warm_up
    from retrieval.ingest_steps import embed_file, featurize_file, keep_freed_memory, one_blas_thread

    torch.set_num_threads(1)
    _blas = one_blas_thread()  # held for the lane's life: BLAS on one thread, as in an ingest lane
    keep_freed_memory()
    embedder = Embedder.load()
    if gpu:
        embedder.to("cuda")
    warm_up()
    ready.put(os.getpid())
    go.wait()
    c0, audio, errors = time.process_time(), 0.0, 0
    for _ in range(passes):
        for f in files:
            res = embed_file(featurize_file(path=Path(f), digest="", read_metadata=False), embedder=embedder)
            if res.analysis is None:
                errors += 1
            else:
                audio += res.analysis.duration_s
    out.put({"pid": os.getpid(), "cpu_s": time.process_time() - c0, "audio_s": audio, "errors": errors,
             "done_at": time.time()})  # fmt: skip


def one_run(files: list[str], *, processes: int, passes: int, gpu: bool) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    t0 = time.time()
    lanes = [ctx.Process(target=_lane, args=(files, passes, gpu, ready, go, out)) for _ in range(processes)]
    for p in lanes:
        p.start()
    for _ in lanes:
        ready.get(timeout=600)
    start_s = time.time() - t0
    t1 = time.time()
    go.set()
    reports = [out.get(timeout=3600) for _ in lanes]
    for p in lanes:
        p.join()
    wall = max(r["done_at"] for r in reports) - t1
    audio = sum(r["audio_s"] for r in reports)
    cpu = sum(r["cpu_s"] for r in reports)
    row = {"processes": processes, "gpu": gpu, "start_up_s": start_s, "wall_s": wall, "audio_s": audio,
           "audio_s_per_wall_s": audio / wall, "cpu_s_per_audio_hour": cpu / (audio / 3600.0),
           "errors": sum(r["errors"] for r in reports)}  # fmt: skip
    log.info(
        "%d lanes%s: %.1f s, %.0fx realtime",
        processes,
        " + GPU" if gpu else "",
        wall,
        row["audio_s_per_wall_s"],
    )
    return row


def run(audio_dir: Path, *, counts: list[int], passes: int, gpu: bool, commit: str | None) -> Report:
    files = sorted(
        str(p) for p in audio_dir.iterdir() if p.suffix.lower() in {".wav", ".ogg", ".flac", ".mp3"}
    )
    if not files:
        raise SystemExit(f"bench.ingest_scaling: no audio files in {audio_dir}")
    rows = [one_run(files, processes=n, passes=passes, gpu=False) for n in counts]
    if gpu:
        rows.append(one_run(files, processes=counts[-1], passes=passes, gpu=True))
    one = rows[0]["audio_s_per_wall_s"] / rows[0]["processes"]
    for r in rows:
        r["efficiency"] = r["audio_s_per_wall_s"] / (r["processes"] * one)
    report = Report(name="ingest_scaling", title="Ingest's per-file work on 1 … N processes of one machine",
                    machine=machine_info(), data={"files": len(files), "passes": passes, "rows": rows})  # fmt: skip
    if commit:
        report.machine["git_commit"] = commit
    report.notes.append(
        f"{len(files)} files from {audio_dir.name}/, each {passes}× per process; every process an ingest lane "
        "(`featurize_file` + `embed_file`, torch and BLAS on one thread, no database). Wall time from the moment "
        "every lane was warm to the last file."
    )
    report.section(
        "Throughput by processes",
        md_table(
            ["processes", "encoder", "start-up s", "wall s", "audio h", "× realtime", "efficiency",
             "CPU-s per audio hour", "errors"],
            [(r["processes"], "GPU" if r["gpu"] else "CPU", r["start_up_s"], r["wall_s"], r["audio_s"] / 3600.0,
              r["audio_s_per_wall_s"], r["efficiency"], r["cpu_s_per_audio_hour"], r["errors"]) for r in rows],
        ),
    )  # fmt: skip
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.ingest_scaling", description=__doc__.splitlines()[0])
    ap.add_argument("audio_dir", type=Path)
    ap.add_argument("--processes", default="1,2", help="comma-separated process counts (default 1,2)")
    ap.add_argument("--passes", type=int, default=2, help="times each process runs the files (default 2)")
    ap.add_argument(
        "--gpu", action="store_true", help="then the largest count again with the encoder on the GPU"
    )
    ap.add_argument("--commit", help="the commit measured, where the tree has no .git (a device machine)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    counts = [int(x) for x in args.processes.split(",")]
    run(args.audio_dir, counts=counts, passes=args.passes, gpu=args.gpu, commit=args.commit).write(args.out)


if __name__ == "__main__":
    main()
