"""Ingestion as a Ray Data pipeline: ``cadenza ingest --ray [ADDRESS]``.

The same guarantees and the same rows as :func:`retrieval.ingest.ingest`, because it runs
the same steps — only laid out for a cluster:

    plan (driver: content hashes against the database, while Ray starts; unchanged files never
          leave it; the rest largest first, as the pool's lanes take them)
      → featurize_file  Ray tasks: decode, silence check, level, features, tags
      → embed_file      an actor pool, one model load per actor (one GPU each when the
                        cluster has GPUs): the encoder and the window descriptors
      → store_result    binary COPY, every track inside its own savepoint, a batch of tracks per
                        commit: a few writer actors on a cluster, the driver itself on a local Ray
      → report          (driver: counts, progress bar, ANALYZE and calibration)

On a CPU-only cluster the featurize tasks and the embedding actors ask for the same resources,
so Ray Data fuses them: a track is decoded, featurized and embedded in one actor process, as in
the pool, with no frames crossing the object store. With GPUs the actors ask for one each, the
stages stay apart, and featurize runs as tasks on the CPUs while the GPUs embed. (Fusing by hand,
featurize called inside the actor's own call, cost 7 % more CPU in the actors than Ray Data's
fusion: 45.7-46.9 against 43.5-43.7 CPU-s with the writer, 100 files, alternating runs, loaded machine.)

On a local Ray the driver is the one writer: the rows come back to it anyway, and a writer actor
was one more process to start (a Ray worker, Ray Data, psycopg) and one more operator for Ray Data
to schedule on the cores that analyse. The writer spends 0.03–0.25 s per track, so one keeps up
with every CPU of a machine.

The stages themselves (what runs in Ray's workers) are in retrieval/ray_stages.py, the report's
time split (per stage, per actor, and a timeline of the run) in retrieval/ray_report.py. A
killed run loses at most the writers' open batches (never part of a track); a rerun skips what
was committed by content hash.

With ``address`` None a local Ray is started for the run and stopped after it. Against a
cluster (``ray://host:10001`` or ``host:6379``), every node must have this package installed,
see the audio files at the same paths, and reach the database URL.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from cadenza.db import Database, autocommit
from cadenza.errors import ConfigError
from encoder.embed import EmbedderSpec
from retrieval.ingest_plan import IngestPlan, find_audio_files, plan_ingest
from retrieval.ingest_report import progress_bar
from retrieval.ingest_steps import largest_first
from retrieval.ingest_store import finish_ingest, same_model
from retrieval.metadata import load_sidecar
from retrieval.ray_report import RayIngestReport
from retrieval.ray_stages import FEATURIZE_STAGES, Embed, Write, featurize_row, object_column

log = logging.getLogger(__name__)

#: Tracks per writer commit: fewer fsyncs than one commit per track; a kill loses at most this many.
WRITE_BATCH = 8
#: Writer actors on a cluster: the database, not Python, is the limit; two keep one batch in
#: flight while the other commits. A local Ray has none: its driver writes (module docstring).
WRITERS = 2
#: A local Ray's shared-memory object store. Rows in flight are small (a 3-min track's frames
#: are ~1 MB), and Ray's default (30 % of RAM) would claim GBs of /dev/shm on a shared machine.
LOCAL_OBJECT_STORE_BYTES = 512 * 1024 * 1024
#: Unfused (GPUs): the logical CPUs of one "lane": an embedding actor and a featurize task share it, half each.
#: Actors hold their reservation even when idle, so with a whole CPU each they would starve the
#: stage that feeds them (measured: a 1-CPU Ray with 1 actor of 0.5 CPU and tasks of 1 CPU never
#: scheduled a task). Half each keeps both stages running on every CPU.
LANE_SHARE = 0.5


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
        # Ray Data leaves reference cycles that hold object refs. Collected after the shutdown, in whatever
        # thread the collector happens to run, they call into the stopped core worker, which ends the process
        # at once (exit 1: `cadenza ingest --ray` lost its report, 40 files, session 11): collect them first.
        gc.collect()
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
    ``writers``: writer actors (default WRITERS on a cluster; 0, a local Ray's default: the driver writes).
    """
    t_start = time.perf_counter()
    sidecar = load_sidecar(metadata_file) if metadata_file else {}
    files = find_audio_files(paths)
    # The actors rebuild the embedder from ``spec``; check here that it is the run's model before
    # any cluster time is spent (the writers check every result again: nodes may differ). The numpy
    # backend reads the same weights without importing torch: this process never embeds.
    same_model(spec.build(backend="numpy").model_version, model_version)
    report = RayIngestReport()
    mark = report.times.mark
    report.times.t0_wall = time.time() - (time.perf_counter() - t_start)
    # Ray starts (its daemons and workers: ~2 s of both cores here) while a thread hashes the files
    # against the database, work the driver must do first anyway. A rerun with nothing new to analyse
    # pays Ray's start for nothing; any other run would pay it after the hashing instead.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="plan-finish") as ex:
        planning = ex.submit(_plan, db, files, sidecar, mark)
        mark("ray_init_start")
        with ray_session(address, num_cpus=num_cpus, start=bool(files)) as start_s:
            mark("ray_init_done")
            report.ray_start_seconds = start_s
            jobs, plan = _unique_jobs(planning.result(), report)
            log.info("%d files: %d unchanged, %d to analyze on Ray", len(files), report.unchanged, len(jobs))
            if jobs:
                _run_pipeline(
                    db=db, jobs=largest_first(jobs), plan_replace=plan.replace, spec=spec,
                    model_version=model_version, sidecar=sidecar, workers=workers,
                    writers=(WRITERS if address else 0) if writers is None else writers, write_batch=write_batch,
                    use_denoise=use_denoise,
                    progress=progress, report=report, t_start=t_start,
                )  # fmt: skip
            # ANALYZE and calibration run while Ray's shutdown (~1.5 s: stopping its daemons and
            # workers) leaves the block, instead of after it.
            finishing = ex.submit(_finish, db, report, model_version, calibrate_after)
            mark("ray_shutdown_start")
        mark("ray_shutdown_done")
        finishing.result()
    mark("end")
    report.wall_seconds = time.perf_counter() - t_start
    return report


def _finish(db: Database, report: RayIngestReport, model_version: str, calibrate_after: bool) -> None:
    report.times.mark("finish_start")  # ANALYZE and calibration
    with autocommit(db) as conn:
        finish_ingest(conn, report, model_version=model_version, calibrate_after=calibrate_after)
    report.times.mark("finish_done")


def _plan(
    db: Database, files: Sequence[Path], sidecar: dict[Path, dict[str, Any]], mark: Callable[[str], None]
) -> IngestPlan:
    with db.connection() as conn:
        plan = plan_ingest(conn, files, sidecar)
        conn.commit()
    mark("plan_done")  # every file hashed and looked up
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
    )  # fmt: skip
    write_kwargs: dict[str, Any] = {
        "url": db.url, "model_version": model_version, "sidecar": sidecar,
        "replace": {str(p): ids for p, ids in plan_replace.items()},
    }  # fmt: skip
    if writers:
        writers = min(writers, -(-len(jobs) // write_batch))
        ds = ds.map_batches(
            Write, fn_constructor_kwargs=write_kwargs, batch_size=write_batch,
            compute=ray.data.ActorPoolStrategy(size=writers), num_cpus=0, batch_format="numpy",
        )  # fmt: skip
        _collect(ds.iter_rows(), progress=progress, total=len(jobs), report=report, t_start=t_start)
    else:
        with closing(Write(**write_kwargs)) as writer:
            rows = written_here(ds.iter_rows(), writer, write_batch)
            _collect(rows, progress=progress, total=len(jobs), report=report, t_start=t_start)


def _collect(
    rows: Iterable[dict[str, Any]], *, progress: bool, total: int, report: RayIngestReport, t_start: float
) -> None:
    """Count the written rows into ``report`` as they come back."""
    times = report.times
    bar = progress_bar(total, progress, "ingest (ray)")
    times.mark("pipeline_start")
    try:
        for row in rows:
            times.first_last("row_at_driver", time.time())
            bar.update(1)
            if row["outcome"] == "refused":
                raise ConfigError(str(row["error"]))
            tid = int(row["track_id"])
            report.count(
                str(row["outcome"]), None if tid < 0 else tid, path=str(row["path"]), error=str(row["error"]) or None,
                segments=int(row["segments"]), audio_seconds=float(row["audio_s"]), cpu_s=json.loads(row["cpu_s"]),
            )  # fmt: skip
            for stage in ("featurize", "embed", "write"):
                times.add(stage, int(row[f"{stage}_pid"]), float(row[f"{stage}_s"]))
                times.first_last(f"{stage}_done", float(row[f"{stage}_at"]))
            times.actor_started(int(row["embed_pid"]), json.loads(row["embed_started"]))
            # Without GPUs featurize runs in the actor's process too (fused), so its stages count there.
            fused = int(row["featurize_pid"]) == int(row["embed_pid"])
            stages = json.loads(row["cpu_s"])
            times.add_actor_cpu(
                int(row["embed_pid"]), ready_cpu=float(row["embed_ready_cpu"]), cpu_now=float(row["embed_cpu_now"]),
                stages_cpu=sum(v for k, v in stages.items() if fused or k not in FEATURIZE_STAGES),
            )  # fmt: skip
            bar.set_postfix_str(report.rate(time.perf_counter() - t_start))
    finally:
        bar.close()
    times.mark("pipeline_done")  # Ray Data has stopped its actors


def written_here(rows: Iterable[dict[str, Any]], writer: Write, batch: int) -> Iterator[dict[str, Any]]:
    """The driver as the writer (a local Ray): ``writer``'s rows for ``rows``, ``batch`` tracks per commit."""
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == batch:
            yield from _write_chunk(writer, chunk)
            chunk = []
    if chunk:
        yield from _write_chunk(writer, chunk)


def _write_chunk(writer: Write, chunk: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    out = writer({k: object_column([r[k] for r in chunk]) for k in chunk[0]})
    for i in range(len(chunk)):
        yield {k: v[i] for k, v in out.items()}
