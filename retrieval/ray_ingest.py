"""Ingestion as a Ray Data pipeline: ``cadenza ingest --ray [ADDRESS]``.

The same guarantees and the same rows as :func:`retrieval.ingest.ingest`, because it runs
the same steps — only laid out for a cluster:

    plan (driver: content hashes against the database, while Ray starts; unchanged files never
          leave it; the rest largest first, as the pool's lanes take them)
      → featurize_file  Ray tasks, one CPU each: decode, silence check, level, features, tags
      → embed_file      an actor pool, one model load per actor (one GPU each when the
                        cluster has GPUs): the encoder and the window descriptors
      → store_result    a few writer actors, one connection each: a batch of tracks per
                        commit, every track's COPY inside its own savepoint
      → report          (driver: counts, progress bar, ANALYZE and calibration)

On a CPU-only cluster the featurize tasks and the embedding actors ask for the same resources,
so Ray Data fuses them: a track is decoded, featurized and embedded in one actor process, as in
the pool, with no frames crossing the object store. With GPUs the actors ask for one each, the
stages stay apart, and featurize runs as tasks on the CPUs while the GPUs embed.

The stages themselves (what runs in Ray's workers) are in retrieval/ray_stages.py. A killed run
loses at most the writers' open batches (never part of a track); a rerun skips what was
committed by content hash.

With ``address`` None a local Ray is started for the run and stopped after it. Against a
cluster (``ray://host:10001`` or ``host:6379``), every node must have this package installed,
see the audio files at the same paths, and reach the database URL.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cadenza.db import Database, autocommit
from cadenza.errors import ConfigError
from encoder.embed import EmbedderSpec
from retrieval.ingest_plan import IngestPlan, find_audio_files, plan_ingest
from retrieval.ingest_report import IngestReport, progress_bar
from retrieval.ingest_steps import largest_first
from retrieval.ingest_store import finish_ingest, same_model
from retrieval.metadata import load_sidecar
from retrieval.ray_stages import FEATURIZE_STAGES, Embed, Write, featurize_row

log = logging.getLogger(__name__)

#: Tracks per writer commit: fewer fsyncs than one commit per track; a kill loses at most this many.
WRITE_BATCH = 8
#: Writer actors on a cluster: the database, not Python, is the limit; two keep one batch in
#: flight while the other commits. A local Ray gets one: a writer spends 0.03–0.25 s per track
#: (measured here, loaded machine), so one keeps up with every CPU of a machine, and each writer
#: is one more process to start (a Ray worker, psycopg, numpy) on the cores that analyse.
WRITERS = 2
#: A local Ray's shared-memory object store. Rows in flight are small (a 3-min track's frames
#: are ~1 MB), and Ray's default (30 % of RAM) would claim GBs of /dev/shm on a shared machine.
LOCAL_OBJECT_STORE_BYTES = 512 * 1024 * 1024
#: The logical CPUs of one "lane": an embedding actor and a featurize task share it, half each.
#: Actors hold their reservation even when idle, so with a whole CPU each they would starve the
#: stage that feeds them (measured: a 1-CPU Ray with 1 actor of 0.5 CPU and tasks of 1 CPU never
#: scheduled a task). Half each keeps both stages running on every CPU.
LANE_SHARE = 0.5


@dataclass
class StageTimes:
    """Where the time went, from the pipeline's own rows (seconds, summed over tracks)."""

    #: stage -> wall seconds inside the step functions.
    stage_s: dict[str, float] = field(default_factory=dict)
    #: "stage:pid" -> (tracks, wall seconds): the per-worker / per-actor split.
    worker: dict[str, list[float]] = field(default_factory=dict)
    #: embedding actor pid -> [its process's CPU seconds when ready (Ray worker start, imports, model
    #: load, warm-up), its latest CPU reading, CPU seconds of its tracks' analysis stages].
    actor_cpu: dict[int, list[float]] = field(default_factory=dict)

    def add(self, stage: str, pid: int, seconds: float) -> None:
        self.stage_s[stage] = self.stage_s.get(stage, 0.0) + seconds
        cell = self.worker.setdefault(f"{stage}:{pid}", [0, 0.0])
        cell[0] += 1
        cell[1] += seconds

    def add_actor_cpu(self, pid: int, *, ready_cpu: float, cpu_now: float, stages_cpu: float) -> None:
        cell = self.actor_cpu.setdefault(pid, [ready_cpu, 0.0, 0.0])
        cell[1] = max(cell[1], cpu_now)
        cell[2] += stages_cpu

    def to_json(self) -> dict[str, Any]:
        return {
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_s.items()},
            "workers": {
                k: {"tracks": int(n), "seconds": round(s, 3)} for k, (n, s) in sorted(self.worker.items())
            },
            # Where an actor's CPU went: start-up, the analysis stages, and the rest (Ray Data's
            # per-block work, moving rows, pickling, tag reading, Ray's threads in the process).
            "actor_cpu": {
                str(pid): {
                    "startup_cpu_s": round(ready, 2),
                    "after_startup_cpu_s": round(now - ready, 2),
                    "in_stages_cpu_s": round(stages, 2),
                    "outside_stages_cpu_s": round(now - ready - stages, 2),
                }
                for pid, (ready, now, stages) in sorted(self.actor_cpu.items())
            },
        }


@dataclass
class RayIngestReport(IngestReport):
    """An :class:`IngestReport` plus the pipeline's time split."""

    times: StageTimes = field(default_factory=StageTimes)
    ray_start_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "ray": {"start_seconds": round(self.ray_start_seconds, 2), **self.times.to_json()},
        }


# -- the driver ---------------------------------------------------------------------------------------


@contextmanager
def ray_session(address: str | None, *, num_cpus: int | None = None, start: bool = True) -> Iterator[float]:
    """Connect to the Ray at ``address``, or start a local one for the block; yields the start seconds.

    ``start`` False: no Ray at all (nothing to run), yields 0.
    """
    if not start:
        yield 0.0
        return
    try:
        import ray
    except ImportError:
        raise ConfigError("`--ray` needs the ray extra: pip install 'cadenza[ray]'") from None
    if ray.is_initialized():  # a caller (a notebook, a test) already holds a session: use it
        yield 0.0
        return
    t0 = time.perf_counter()
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(
                num_cpus=num_cpus or os.cpu_count() or 1,
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = address or "a local Ray"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"could not start or reach {where} ({first}); check the address or drop it"
        ) from None
    try:
        yield time.perf_counter() - t0
    finally:
        ray.shutdown()


def ray_ingest(
    *,
    db: Database,
    paths: Sequence[Path],
    spec: EmbedderSpec,
    model_version: str,
    address: str | None = None,
    metadata_file: Path | None = None,
    workers: int | None = None,
    writers: int | None = None,
    write_batch: int = WRITE_BATCH,
    num_cpus: int | None = None,
    use_denoise: bool = False,
    progress: bool = True,
    calibrate_after: bool = True,
) -> RayIngestReport:
    """Add ``paths`` to the library through Ray; same contract as :func:`retrieval.ingest.ingest`.

    ``workers``: embedding actors (default: one per GPU, else one per CPU of the cluster); the
    featurize tasks fill whatever CPUs are left. ``spec`` is how each actor builds its embedder;
    ``model_version`` is what it must produce (anything else is refused, as in the pool).
    ``num_cpus``: the CPUs of a local Ray started for the run (default: all of this machine's).
    ``writers``: writer actors (default WRITERS on a cluster, one on a local Ray).
    """
    t_start = time.perf_counter()
    sidecar = load_sidecar(metadata_file) if metadata_file else {}
    files = find_audio_files(paths)
    # The actors rebuild the embedder from ``spec``; check here that it is the run's model before
    # any cluster time is spent (the writers check every result again: nodes may differ).
    same_model(spec.build().model_version, model_version)
    report = RayIngestReport()
    # Ray starts (its daemons and workers: ~2 s of both cores here) while a thread hashes the files
    # against the database, work the driver must do first anyway. A rerun with nothing new to analyse
    # pays Ray's start for nothing; any other run would pay it after the hashing instead.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="plan-finish") as ex:
        planning = ex.submit(_plan, db, files, sidecar)
        with ray_session(address, num_cpus=num_cpus, start=bool(files)) as start_s:
            report.ray_start_seconds = start_s
            jobs, plan = _unique_jobs(planning.result(), report)
            log.info("%d files: %d unchanged, %d to analyze on Ray", len(files), report.unchanged, len(jobs))
            if jobs:
                _run_pipeline(
                    db=db, jobs=largest_first(jobs), plan_replace=plan.replace, spec=spec,
                    model_version=model_version, sidecar=sidecar, workers=workers,
                    writers=writers or (WRITERS if address else 1), write_batch=write_batch, use_denoise=use_denoise,
                    progress=progress, report=report, t_start=t_start,
                )  # fmt: skip
            # ANALYZE and calibration run while Ray's shutdown (~1.5 s: stopping its daemons and
            # workers) leaves the block, instead of after it.
            finishing = ex.submit(_finish, db, report, model_version, calibrate_after)
        finishing.result()
    report.wall_seconds = time.perf_counter() - t_start
    return report


def _finish(db: Database, report: RayIngestReport, model_version: str, calibrate_after: bool) -> None:
    with autocommit(db) as conn:
        finish_ingest(conn, report, model_version=model_version, calibrate_after=calibrate_after)


def _plan(db: Database, files: Sequence[Path], sidecar: dict[Path, dict[str, Any]]) -> IngestPlan:
    with db.connection() as conn:
        plan = plan_ingest(conn, files, sidecar)
        conn.commit()
    return plan


def _unique_jobs(plan: IngestPlan, report: RayIngestReport) -> tuple[list[tuple[Path, str]], IngestPlan]:
    """The plan's jobs with one file per content (the pool would store only one too, and two writers must
    never insert the same hash in crossing order); the others count as unchanged."""
    seen: set[str] = set()
    jobs = []
    for path, digest in plan.jobs:
        if digest in seen:
            report.unchanged += 1
        else:
            seen.add(digest)
            jobs.append((path, digest))
    report.unchanged += plan.unchanged
    report.updated += plan.updated
    return jobs, plan


def _run_pipeline(
    *,
    db: Database,
    jobs: list[tuple[Path, str]],
    plan_replace: dict[Path, list[int]],
    spec: EmbedderSpec,
    model_version: str,
    sidecar: dict[Path, dict[str, Any]],
    workers: int | None,
    writers: int,
    write_batch: int,
    use_denoise: bool,
    progress: bool,
    report: RayIngestReport,
    t_start: float,
) -> None:
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours below counts tracks, not blocks
    ctx.print_on_execution_start = False
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    actors = max(1, min(workers or gpus or cpus, len(jobs)))
    writers = max(1, min(writers, -(-len(jobs) // write_batch)))
    # The actors together never take more than half the CPUs, so featurize tasks always fit.
    actor_cpus = min(LANE_SHARE, cpus * LANE_SHARE / actors)
    items = [{"path": str(p), "digest": d} for p, d in jobs]
    ds = (
        ray.data.from_items(items, override_num_blocks=len(items))
        .map(featurize_row, fn_kwargs={"use_denoise": use_denoise}, num_cpus=LANE_SHARE)
        .map_batches(
            Embed, fn_constructor_kwargs={"spec": spec, "use_gpu": bool(gpus)}, batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=actors), batch_format="numpy", num_cpus=actor_cpus,
            num_gpus=1 if gpus else None,
        )
        .map_batches(
            Write,
            fn_constructor_kwargs={
                "url": db.url, "model_version": model_version, "sidecar": sidecar,
                "replace": {str(p): ids for p, ids in plan_replace.items()},
            },
            batch_size=write_batch, compute=ray.data.ActorPoolStrategy(size=writers), num_cpus=0,
            batch_format="numpy",
        )
    )  # fmt: skip
    bar = progress_bar(len(jobs), progress, "ingest (ray)")
    try:
        for row in ds.iter_rows():
            bar.update(1)
            if row["outcome"] == "refused":
                raise ConfigError(str(row["error"]))
            tid = int(row["track_id"])
            report.count(
                str(row["outcome"]), None if tid < 0 else tid, path=str(row["path"]), error=str(row["error"]) or None,
                segments=int(row["segments"]), audio_seconds=float(row["audio_s"]), cpu_s=json.loads(row["cpu_s"]),
            )  # fmt: skip
            for stage in ("featurize", "embed", "write"):
                report.times.add(stage, int(row[f"{stage}_pid"]), float(row[f"{stage}_s"]))
            # Without GPUs featurize runs in the actor's process too (fused), so its stages count there.
            fused = int(row["featurize_pid"]) == int(row["embed_pid"])
            stages = json.loads(row["cpu_s"])
            report.times.add_actor_cpu(
                int(row["embed_pid"]), ready_cpu=float(row["embed_ready_cpu"]), cpu_now=float(row["embed_cpu_now"]),
                stages_cpu=sum(v for k, v in stages.items() if fused or k not in FEATURIZE_STAGES),
            )  # fmt: skip
            bar.set_postfix_str(report.rate(time.perf_counter() - t_start))
    finally:
        bar.close()
