"""One ingest run of bench/ray_ingest.py (the pool or Ray, into an emptied library: in this process, or as the
whole `cadenza ingest` command in a fresh one) and its figures: the steady rate, start-up and finish, CPU by
process; and the library's dithered copies."""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from bench.proc_cpu import timed

log = logging.getLogger(__name__)

#: The share of a run's stored tracks between which its steady rate is measured: after every
#: worker has started and before the last ones run alone.
STEADY_FROM, STEADY_TO = 0.2, 0.9
#: Fresh memory the probe before each run touches: big enough to time (≥ 10 ms even when cheap), small enough
#: not to warm much of what the run itself will touch (a Ray run's processes reach ~3 GB resident).
PROBE_MB = 64


def fresh_memory_cpu_s_per_gb(mb: int = PROBE_MB) -> float:
    """CPU seconds this process spends per GB of memory it allocates and touches for the first time, now.

    On a bare machine that is the kernel zeroing pages (~0.2 s/GB). On this benchmark's VM the host takes
    freed guest memory back, and a page it has taken back costs far more on the next first touch: 1 GB took
    7.2 and 2.1 CPU-s in two fresh processes, 0.17-0.8 for a second GB right after the first was freed (session 10). Every
    process a run starts (Ray's daemons, Ray Data's actors, the embedding actors, the pool's helper) pays this
    price for its imports and working set, so each run records it as it was just before the run.
    """
    import time

    c0 = time.process_time()
    a = np.ones(mb * 2**20 // 8)  # malloc maps new pages for an array this size; ones() touches all of them
    spent = time.process_time() - c0
    del a
    return spent * 1024 / mb


def steady_rate(done_at: list[tuple[float, float]]) -> float:
    """Audio seconds stored per wall second while a run is steady (0 with fewer than 10 tracks).

    ``done_at``: (seconds since the run began, audio seconds) per stored track
    (``IngestReport.done_at``). The rate is the least-squares slope of the audio stored so far
    against time, over the tracks between the STEADY_FROM and STEADY_TO shares of the run's audio:
    weighted by audio, as both paths take the longest files first, and fitted, as Ray's writers
    commit several tracks at once. A run's wall time less ``audio / rate`` is then what the steady
    rate does not explain: start-up (Ray's, the workers'), the tail where fewer workers than tracks
    are left, and the finish.
    """
    if len(done_at) < 10:
        return 0.0
    t, audio = (np.asarray(x, dtype=np.float64) for x in zip(*sorted(done_at), strict=True))
    cum = np.cumsum(audio)
    keep = (cum >= STEADY_FROM * cum[-1]) & (cum <= STEADY_TO * cum[-1])
    if keep.sum() < 3 or np.ptp(t[keep]) <= 0:
        return 0.0
    return float(np.polyfit(t[keep], cum[keep], 1)[0])


def dithered_copies(folder: Path, copies: int, *, seed: int = 0) -> int:
    """Write ``copies`` copies of every WAV in ``folder`` with ±1 LSB of dither; returns files written.

    The sidecar (``metadata.json``) gets the same metadata for each copy. Each copy's dither comes from its own
    generator (seed, file, copy number): a ``--workdir`` reused with more copies adds only the missing ones, and
    with one generator for the folder those repeated earlier copies' dither (session 11: copy 2 of the first file
    was copy 1 again, so the library held 399 distinct files instead of 400).
    """
    import json
    import zlib

    import soundfile as sf

    sidecar_path = folder / "metadata.json"
    sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.exists() else {}
    written = 0
    for src in sorted(folder.glob("*.wav")):
        if ".copy" in src.stem:
            continue
        y, sr = sf.read(str(src), dtype="int16")
        for c in range(1, copies + 1):
            dst = src.with_name(f"{src.stem}.copy{c}.wav")
            if not dst.exists():
                rng = np.random.default_rng([seed, zlib.crc32(src.name.encode()), c])
                noisy = np.clip(y.astype(np.int32) + rng.integers(-1, 2, size=y.shape), -32768, 32767)
                sf.write(str(dst), noisy.astype(np.int16), sr, subtype="PCM_16")
            if src.name in sidecar:
                sidecar[dst.name] = sidecar[src.name]
            written += 1
    if sidecar:
        sidecar_path.write_text(json.dumps(sidecar, indent=1))
    return written


def one_run(
    *,
    label: str,
    db: Any,
    paths: list[Path],
    sidecar: Path | None,
    embedder: Any,
    spec: Any,
    ray: bool,
    workers: int,
    pgdata: Path,
) -> dict[str, Any]:
    from cadenza.embedded_pg import postmaster_pid
    from retrieval.ingest import ingest
    from retrieval.ingest_steps import single_threaded
    from retrieval.ray_ingest import ray_ingest

    truncate_library(db)
    load_before = [round(x, 2) for x in os.getloadavg()]
    fresh_memory = fresh_memory_cpu_s_per_gb()

    def run() -> Any:
        if ray:
            return ray_ingest(
                db=db, paths=paths, spec=spec, model_version=embedder.model_version, metadata_file=sidecar,
                workers=workers, num_cpus=workers, progress=False,
            )  # fmt: skip
        # The pool's 1-lane run analyses in this process on one core (torch and BLAS on one thread), as
        # Ray's 1 actor on 1 CPU does and as `cadenza ingest --workers 1` does.
        with single_threaded() if workers == 1 else nullcontext():
            return ingest(
                db=db, paths=paths, embedder=embedder, spec=spec, metadata_file=sidecar, workers=workers,
                progress=False,
            )  # fmt: skip

    rep, procs = timed(run, extra_roots=lambda: [p for p in [postmaster_pid(pgdata)] if p])
    out = rep.to_json()
    tracks = len(rep.added) + len(rep.replaced)
    rate = steady_rate(rep.done_at)
    out.update(
        steady_realtime_factor=rate,
        fixed_seconds=rep.wall_seconds - rep.audio_seconds / rate if rate else None,
        # Both paths' first and last stored track (seconds since the run began): start-up and finish.
        first_stored_s=round(min(t for t, _ in rep.done_at), 2) if rep.done_at else None,
        last_stored_s=round(max(t for t, _ in rep.done_at), 2) if rep.done_at else None,
        cpu_by_process=procs,
        audio_s_per_cpu_s=rep.audio_seconds / max(procs["total_cpu_seconds"], 1e-9),
        label=label,
        path="ray" if ray else "pool",
        workers=workers,
        tracks=tracks,
        tracks_per_s=tracks / max(rep.wall_seconds, 1e-9),
        load_avg_before=load_before,
        load_avg_after=[round(x, 2) for x in os.getloadavg()],
        fresh_memory_cpu_s_per_gb=round(fresh_memory, 2),
    )
    log.info("%s: %.1f s wall, %.0fx realtime", label, rep.wall_seconds, rep.realtime_factor)
    return out


def command_run(
    *, label: str, db: Any, folder: Path, sidecar: Path | None, ray: bool, home: Path, pgdata: Path
) -> dict[str, Any]:
    """``cadenza ingest FOLDER`` (``--ray``) as a fresh process into the emptied library: what a user waits for.

    The wall time runs from starting the process to its exit: Python's start, the imports (torch for the pool,
    Ray and Ray Data for Ray), the model, the connection to the database (already up, as the server a user's
    library lives on is), the ingest itself and the process's exit with Ray's shutdown. Both commands use their
    defaults (2 lanes; one actor per CPU), as a user typing them would.
    """
    import json
    import subprocess
    import sys
    import time

    truncate_library(db)
    load_before = [round(x, 2) for x in os.getloadavg()]
    fresh_memory = fresh_memory_cpu_s_per_gb()
    cmd = [sys.executable, "-m", "cadenza", "-q", "ingest", str(folder), "--json"]
    cmd += ["--metadata", str(sidecar)] if sidecar else []
    cmd += ["--ray"] if ray else []
    env = {**os.environ, "CADENZA_HOME": str(home), "CADENZA_DATABASE_URL": db.url}

    def run() -> tuple[subprocess.CompletedProcess[str], float]:
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        return done, time.perf_counter() - t0

    from cadenza.embedded_pg import postmaster_pid

    (done, wall), procs = timed(run, extra_roots=lambda: [p for p in [postmaster_pid(pgdata)] if p])
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    inside = json.loads(done.stdout)
    tracks = inside["added"] + inside["replaced"]
    out = {
        "label": label,
        "path": "ray" if ray else "pool",
        "command": " ".join(["python", *cmd[1:]]),
        "tracks": tracks,
        "audio_seconds": inside["audio_seconds"],
        "wall_seconds": round(wall, 2),
        # The command's own report: from its ingest call to its return (what the in-process runs time).
        "inside_wall_seconds": inside["wall_seconds"],
        "outside_seconds": round(wall - inside["wall_seconds"], 2),
        "tracks_per_s": tracks / max(wall, 1e-9),
        "cpu_by_process": procs,
        "audio_s_per_cpu_s": inside["audio_seconds"] / max(procs["total_cpu_seconds"], 1e-9),
        "load_avg_before": load_before,
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "fresh_memory_cpu_s_per_gb": round(fresh_memory, 2),
    }
    log.info("%s: %.1f s wall (%.1f s inside its ingest)", label, wall, inside["wall_seconds"])
    return out


def truncate_library(db: Any) -> None:
    """Empty the library tables (the runs must not see each other's tracks)."""
    with db.connection() as conn:
        conn.execute("TRUNCATE tracks, segments, track_chroma RESTART IDENTITY CASCADE")
        conn.commit()
