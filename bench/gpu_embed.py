"""``python -m bench.gpu_embed``: the encoder on a GPU against one CPU thread, in one run (issue #21).

What moving the embed stage off the CPUs buys, measured on the shipped checkpoint through the product's
own path (:meth:`Embedder.embed_windows` and :meth:`Embedder.embed_track`, float32, as a GPU embedding
actor of ``cadenza ingest --ray`` runs it: ``EmbedderSpec.build()`` then ``.to("cuda")``):

* windows per second and CPU seconds per window, at the shipped batch size (32) and larger ones;
* per track, as an ingest actor calls it (one 4-min track, 117 windows with its tail, per call);
* the same on one CPU thread of the same machine (an ingest lane's setting), for the ratio;
* agreement: the largest |GPU − CPU| over the same windows, since a stored vector must not depend on
  where it was made.

Input frames are the checkpoint's own normalization mean plus its std times N(0, 1): the encoder's cost
does not depend on content. Without a GPU the GPU rows are left out (the test runs it that way).
The results feed ``python -m bench.capacity`` ("what a GPU changes").
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import RESULTS_DIR, Report, machine_info, md_table
from encoder.embed import Embedder

log = logging.getLogger(__name__)

#: Batch sizes timed on the GPU: the shipped one (32, chosen for a CPU's cache) and larger ones.
GPU_BATCHES = (32, 256, 1024, 4096)
#: A 4-min track at 10 fps: 117 windows (10 s every 2 s, and a tail), as ingest cuts it.
TRACK_FRAMES = 2400


def frames_like(embedder: Embedder, *, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Acoustic frames at the checkpoint's own scale: ``mean + std · N(0, 1)``, float32."""
    rng = np.random.default_rng(seed)
    return (embedder.mean + embedder.std * rng.standard_normal(shape)).astype(np.float32)


def timed(fn: Callable[[], Any], *, repeats: int, sync: Callable[[], None]) -> dict[str, Any]:
    """Best wall and CPU seconds of ``repeats`` calls after one warm-up (first-call costs are start-up)."""
    fn()
    sync()
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return {"wall_s": min(walls), "cpu_s": min(cpus), "wall_s_all": walls, "cpu_s_all": cpus}


def measure(embedder: Embedder, *, device: str, windows: int, batches: tuple[int, ...], repeats: int,
            seed: int) -> dict[str, Any]:  # fmt: skip
    """Throughput of ``embedder`` on ``device`` for each batch size, and per track."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    embedder.to(device)
    win = embedder.windowing.window_frames
    x = frames_like(embedder, shape=(windows, win, embedder.mean.shape[0]), seed=seed)
    rows = []
    for bs in batches:
        embedder.batch_size = bs
        t = timed(lambda: embedder.embed_windows(windows=x), repeats=repeats, sync=sync)
        rows.append({"batch": bs, "windows": windows, **t, "windows_per_s": windows / t["wall_s"],
                     "cpu_s_per_window": t["cpu_s"] / windows})  # fmt: skip
    embedder.batch_size = Embedder.batch_size
    track = frames_like(embedder, shape=(TRACK_FRAMES, embedder.mean.shape[0]), seed=seed + 1)
    n_win = len(embedder.embed_track(frames=track)[0])
    t = timed(lambda: embedder.embed_track(frames=track), repeats=repeats, sync=sync)
    per_track = {"frames": TRACK_FRAMES, "windows": n_win, **t, "windows_per_s": n_win / t["wall_s"],
                 "cpu_s_per_window": t["cpu_s"] / n_win}  # fmt: skip
    return {"device": device, "batches": rows, "per_track": per_track}


def agreement(embedder: Embedder, *, windows: int, seed: int) -> dict[str, float]:
    """Largest |GPU − CPU| and smallest cosine between the two over the same windows."""
    x = frames_like(
        embedder, shape=(windows, embedder.windowing.window_frames, embedder.mean.shape[0]), seed=seed
    )
    embedder.to("cpu")
    cpu = embedder.embed_windows(windows=x)
    embedder.to("cuda")
    gpu = embedder.embed_windows(windows=x)
    embedder.to("cpu")
    return {"windows": windows, "max_abs_diff": float(np.abs(gpu - cpu).max()),
            "min_cosine": float((gpu * cpu).sum(axis=1).min())}  # fmt: skip


def run(*, windows: int, cpu_windows: int, repeats: int, seed: int, commit: str | None) -> Report:
    import torch

    torch.set_num_threads(1)  # the CPU rows as an ingest lane runs: one thread
    embedder = Embedder.load(backend="torch")
    gpu = torch.cuda.is_available()
    results: dict[str, Any] = {"model_version": embedder.model_version, "gpu": gpu,
                               "gpu_name": torch.cuda.get_device_name(0) if gpu else None}  # fmt: skip
    results["cpu"] = measure(
        embedder, device="cpu", windows=cpu_windows, batches=(32,), repeats=repeats, seed=seed
    )
    if gpu:
        results["cuda"] = measure(embedder, device="cuda", windows=windows, batches=GPU_BATCHES, repeats=repeats,
                                  seed=seed)  # fmt: skip
        results["agreement"] = agreement(embedder, windows=min(cpu_windows, 1024), seed=seed + 2)
        cpu_rate = results["cpu"]["batches"][0]["windows_per_s"]
        results["gpu_over_cpu_thread"] = {
            "best_batch": max(r["windows_per_s"] for r in results["cuda"]["batches"]) / cpu_rate,
            "shipped_batch_32": results["cuda"]["batches"][0]["windows_per_s"] / cpu_rate,
            "per_track": results["cuda"]["per_track"]["windows_per_s"]
            / results["cpu"]["per_track"]["windows_per_s"],
        }
    report = Report(name="gpu_embed", title="The encoder on a GPU against one CPU thread (issue #21)",
                    machine=machine_info(), data=results)  # fmt: skip
    if commit:
        report.machine["git_commit"] = commit
    report.notes.append(
        f"Shipped checkpoint `{embedder.model_version}`, float32, through `Embedder.embed_windows` / `embed_track` "
        "(the product's path: numpy in, numpy out). Best of "
        f"{repeats} timed calls after a warm-up; CPU s is this process's (all threads)."
    )
    if not gpu:
        report.notes.append("No GPU on this machine: only the CPU rows were measured.")
    table = []
    for dev in ("cpu", "cuda"):
        if dev not in results:
            continue
        m = results[dev]
        for r in m["batches"]:
            table.append((dev, f"windows, batch {r['batch']}", r["windows"], r["wall_s"], r["windows_per_s"],
                          r["cpu_s_per_window"] * 1e3))  # fmt: skip
        t = m["per_track"]
        table.append((dev, "a 4-min track per call (ingest)", t["windows"], t["wall_s"], t["windows_per_s"],
                      t["cpu_s_per_window"] * 1e3))  # fmt: skip
    report.section(
        "Throughput",
        md_table(["device", "call", "windows", "wall s", "windows/s", "CPU ms per window"], table),
    )
    if gpu:
        a, g = results["agreement"], results["gpu_over_cpu_thread"]
        report.section(
            "GPU against one CPU thread, and agreement",
            md_table(["measure", "value"], [
                ("GPU / one CPU thread, windows/s, best batch", g["best_batch"]),
                ("... at the shipped batch size (32)", g["shipped_batch_32"]),
                ("... per 4-min track, as ingest calls it", g["per_track"]),
                (f"largest abs(GPU − CPU) over {a['windows']} windows", a["max_abs_diff"]),
                ("smallest cosine between the GPU's and the CPU's vector", a["min_cosine"]),
            ]),
        )  # fmt: skip
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_embed", description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=32768, help="windows per timed GPU call (default 32768)")
    ap.add_argument("--cpu-windows", type=int, default=512, help="windows per timed CPU call (default 512)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--commit", help="the commit measured, where the tree has no .git (a device machine)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = run(windows=args.windows, cpu_windows=args.cpu_windows, repeats=args.repeats, seed=args.seed,
                 commit=args.commit)  # fmt: skip
    report.write(args.out)


if __name__ == "__main__":
    main()
