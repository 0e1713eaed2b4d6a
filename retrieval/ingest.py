"""Ingestion: files/folders → decoded, leveled, embedded, described segments in PostgreSQL.

Idempotent by content hash: an unchanged file is skipped before decoding; a changed file at
a known path replaces its old track in the same transaction; every track is one
transaction, so a killed run leaves no partial track and a rerun finishes the job. The
decode → features → embed work is a pure per-file map (retrieval/ingest_steps.py) run in a
process pool; only the parent process writes (binary COPY). ``plan_ingest``, ``store_result``
and ``finish_ingest`` are the database edges, shared with the Ray pipeline (retrieval/ray_ingest.py).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from cadenza.audio import AUDIO_EXTENSIONS, content_hash
from cadenza.db import autocommit, scalar
from cadenza.errors import ConfigError, InputError
from retrieval.analysis import warm_up
from retrieval.ingest_steps import (
    EmbedderSpec,
    FileResult,
    one_blas_thread,
    process_file,
    resolve_embedder,
    spec_for,
)
from retrieval.metadata import load_sidecar, merge, metadata_changes, read_tags
from retrieval.store import replace_segments, update_track, write_track

log = logging.getLogger(__name__)

INGEST_EXTENSIONS = frozenset({".mp3", ".wav", ".flac", ".ogg", ".opus", ".m4a", ".aac"})
assert INGEST_EXTENSIONS <= AUDIO_EXTENSIONS


def find_audio_files(paths: Iterable[Path]) -> list[Path]:
    """Files as given, folders searched recursively for audio extensions; sorted, de-duplicated."""
    out: list[Path] = []
    for p in paths:
        p = Path(p).expanduser()
        if p.is_dir():
            out.extend(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in INGEST_EXTENSIONS)
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"{p} does not exist; give audio files or folders")
    return sorted({f.resolve() for f in out})


# -- the worker side: pure map ---------------------------------------------------------------

_WORKER: dict[str, Any] = {}  # per worker *process* (set by the pool initializer), never in the parent


def _fast_exit() -> None:
    """A worker's last atexit hook: leave without tearing down torch/numba (≈ 1–2 s per process)."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _init_worker(spec: EmbedderSpec, parent_pid: int | None = None) -> None:
    import atexit

    from cadenza.procs import die_with_parent

    # First: a worker must not outlive `cadenza ingest` (a kill -9 of it left one blocked on its
    # result pipe forever, holding its memory).
    die_with_parent(parent_pid)
    import torch

    # One thread per process: N processes × N threads on N cores only adds switching.
    torch.set_num_threads(1)
    _WORKER["limits"] = one_blas_thread()
    _WORKER["embedder"] = spec.build()
    warm_up()
    # Registered last, so it runs first at exit: the pool has collected every result by then.
    atexit.register(_fast_exit)


def _work(path: Path, digest: str, use_denoise: bool, read_metadata: bool) -> FileResult:
    return process_file(
        path=path,
        digest=digest,
        embedder=_WORKER["embedder"],
        use_denoise=use_denoise,
        read_metadata=read_metadata,
    )


def _largest_first(jobs: Sequence[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """Jobs by decreasing file size (a proxy for duration): the long ones start early, so the
    lanes finish together instead of one lane decoding a long file while the others idle."""

    def size(job: tuple[Path, str]) -> int:
        try:
            return job[0].stat().st_size
        except OSError:
            return 0

    return sorted(jobs, key=size, reverse=True)


@contextmanager
def _single_threaded() -> Iterator[None]:
    """torch and BLAS on one thread in this process for the block (the worker processes use the others)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    limits = one_blas_thread()
    try:
        yield
    finally:
        if limits is not None:  # first: threadpoolctl's restore also resets OpenMP, torch's pool
            limits.restore_original_limits()
        torch.set_num_threads(before)


def _map(
    jobs: Sequence[tuple[Path, str]],
    *,
    spec: EmbedderSpec,
    embedder: Any,
    workers: int,
    use_denoise: bool,
    read_metadata: bool,
) -> Iterator[FileResult]:
    """Run :func:`process_file` over ``jobs`` on ``workers`` lanes; yields results as they finish.

    ``workers <= 1``: in this process, in order. Otherwise this process is one lane (it already
    holds the embedder and torch) and ``workers - 1`` spawned processes are the others: each
    process costs ~3 CPU-s to start (torch, librosa, numba caches), so on 2 cores one helper
    process beats two. The helper takes the largest files first, this process the smallest,
    so it comes back often to hand results to the writer.
    """
    if workers <= 1 or len(jobs) <= 1:
        emb = embedder if embedder is not None else spec.build()
        if jobs:
            warm_up()
        for path, digest in jobs:
            yield process_file(
                path=path, digest=digest, embedder=emb, use_denoise=use_denoise, read_metadata=read_metadata
            )
        return
    emb = embedder if embedder is not None else spec.build()
    queue = _largest_first(jobs)
    helpers = workers - 1
    ctx = multiprocessing.get_context("spawn")  # the parent holds a DB pool with threads: never fork
    with (
        _single_threaded(),
        ProcessPoolExecutor(
            max_workers=helpers, mp_context=ctx, initializer=_init_worker, initargs=(spec, os.getpid())
        ) as ex,
    ):
        pending: set[Future[FileResult]] = set()
        warm = False
        # A few jobs queued per helper so it never waits for this process to finish a file
        # (results are small: embeddings, descriptors, 10-fps chroma), but never more than are
        # left for this process, so two long files still go to two lanes.
        while queue or pending:
            while queue and len(pending) < min(3 * helpers, len(queue)):
                path, digest = queue.pop(0)
                pending.add(ex.submit(_work, path, digest, use_denoise, read_metadata))
            if not warm:  # after the first submit: the helpers start while this process warms up
                warm_up()
                warm = True
            done, pending = wait(pending, timeout=0, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
            if queue:
                path, digest = queue.pop()
                yield process_file(
                    path=path,
                    digest=digest,
                    embedder=emb,
                    use_denoise=use_denoise,
                    read_metadata=read_metadata,
                )
            elif pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()


# -- the parent side: plan, write, report ------------------------------------------------------


@dataclass
class IngestReport:
    added: list[int] = field(default_factory=list)
    replaced: list[int] = field(default_factory=list)
    #: Known content whose path (a moved file) or metadata (edited tags, sidecar) changed.
    updated: list[int] = field(default_factory=list)
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    segments: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    #: CPU seconds per analysis stage, summed over the lanes (see ``TrackAnalysis.cpu_s``).
    stage_cpu_s: dict[str, float] = field(default_factory=dict)

    def record(self, res: FileResult, outcome: str, track_id: int | None) -> None:
        """Count one file's outcome from :func:`store_result`."""
        a = res.analysis
        self.count(
            outcome, track_id, path=str(res.path), error=res.error,
            segments=len(a.segments) if a else 0, audio_seconds=a.duration_s if a else 0.0,
            cpu_s=a.cpu_s if a else {},
        )  # fmt: skip

    def count(
        self,
        outcome: str,
        track_id: int | None,
        *,
        path: str,
        error: str | None,
        segments: int,
        audio_seconds: float,
        cpu_s: dict[str, float],
    ) -> None:
        """Count one outcome from its figures (what a remote writer sends back instead of the analysis)."""
        if outcome == "failed":
            log.warning("skipped %s: %s", path, error)
            self.failed.append((path, error or "no analysis"))
        elif outcome == "unchanged":
            self.unchanged += 1
        else:
            assert track_id is not None
            (self.replaced if outcome == "replaced" else self.added).append(track_id)
            self.segments += segments
            self.audio_seconds += audio_seconds
            for k, v in cpu_s.items():
                self.stage_cpu_s[k] = self.stage_cpu_s.get(k, 0.0) + v

    def rate(self, elapsed: float) -> str:
        """The progress bar's postfix: tracks, tracks/s and realtime factor so far."""
        n = len(self.added) + len(self.replaced)
        return (
            f"{n} tracks, {n / max(elapsed, 1e-9):.2f} tracks/s, "
            f"{self.audio_seconds / max(elapsed, 1e-9):.0f}x realtime"
        )

    @property
    def realtime_factor(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "added": len(self.added),
            "replaced": len(self.replaced),
            "updated": len(self.updated),
            "unchanged": self.unchanged,
            "failed": [{"path": p, "error": e} for p, e in self.failed],
            "segments": self.segments,
            "audio_seconds": round(self.audio_seconds, 1),
            "wall_seconds": round(self.wall_seconds, 2),
            "realtime_factor": round(self.realtime_factor, 1),
            "stage_cpu_seconds": {k: round(v, 2) for k, v in self.stage_cpu_s.items()},
        }


def same_model(got: str, want: str) -> None:
    """Workers rebuild the embedder from a spec; refuse to store segments of another model."""
    if got != want:
        raise ConfigError(
            f"worker processes embedded with model {got} but this run uses {want}; "
            "pass the matching EmbedderSpec (checkpoint path) or use --workers 1"
        )


def progress_bar(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="track", desc=desc, disable=not enabled, dynamic_ncols=True)


@dataclass
class IngestPlan:
    """What a run must analyze: new or changed files, the old tracks a changed file replaces."""

    jobs: list[tuple[Path, str]] = field(default_factory=list)
    replace: dict[Path, list[int]] = field(default_factory=dict)
    unchanged: int = 0
    #: Known content whose path (a moved file) or metadata was updated while planning.
    updated: list[int] = field(default_factory=list)


def known_changes(known: tuple[Any, ...], *, path: Path, sidecar: dict[str, Any] | None) -> dict[str, Any]:
    """What to change on a stored track (``id, path, title, composer, work, era, year``) that has the
    content of ``path``: its path when the stored file is gone (moved; a second copy leaves it), and
    the metadata fields this file's tags and sidecar row state differently."""
    _, old_path, title, composer, work, era, year = known
    stored = {"title": title, "composer": composer, "work": work, "era": era, "year": year}
    changes = metadata_changes(stored, tags=read_tags(path), sidecar=sidecar, path=path)
    if str(path) != old_path and not Path(old_path).exists():
        changes["path"] = str(path)
    return changes


def plan_ingest(
    conn: psycopg.Connection, files: Sequence[Path], sidecar: dict[Path, dict[str, Any]] | None = None
) -> IngestPlan:
    """Hash every file; an already stored hash is not decoded again.

    Known content is "unchanged", or "updated" when the file moved (its new path is stored) or its
    tags or ``sidecar`` row say something else than the stored metadata (a re-ingest used to keep the
    old path, and the player failed).
    """
    plan = IngestPlan()
    for f in files:
        digest = content_hash(f)
        known = conn.execute(
            "SELECT id, path, title, composer, work, era, year FROM tracks WHERE content_hash = %s", (digest,)
        ).fetchone()
        if known:
            changes = known_changes(known, path=f, sidecar=(sidecar or {}).get(f.resolve()))
            if changes:
                update_track(conn, int(known[0]), changes)
                plan.updated.append(int(known[0]))
            else:
                plan.unchanged += 1
            continue
        old = [r[0] for r in conn.execute("SELECT id FROM tracks WHERE path = %s", (str(f),)).fetchall()]
        if old:
            plan.replace[f] = old
        plan.jobs.append((f, digest))
    return plan


def store_result(
    conn: psycopg.Connection,
    res: FileResult,
    *,
    model_version: str,
    sidecar: dict[Path, dict[str, Any]],
    replace_ids: Sequence[int],
) -> tuple[str, int | None]:
    """Write one analysed file as one track (one transaction, or a savepoint inside the caller's).

    Returns ``(outcome, track_id)``: outcome is "added", "replaced", "unchanged" (another run
    stored the same content meanwhile) or "failed" (``res.error``; nothing written).
    """
    if res.error or res.analysis is None:
        return "failed", None
    same_model(res.analysis.model_version, model_version)
    meta = merge(tags=res.tags, sidecar=sidecar.get(res.path.resolve()), path=res.path)
    tid = write_track(
        conn, content_hash=res.content_hash, path=str(res.path), meta=meta, analysis=res.analysis,
        replace_ids=list(replace_ids),
    )  # fmt: skip
    if tid is None:
        return "unchanged", None
    return ("replaced" if replace_ids else "added"), tid


def finish_ingest(
    conn: psycopg.Connection, report: IngestReport, *, model_version: str, calibrate_after: bool
) -> None:
    """After the writes: fresh planner statistics and the score calibration (autocommit ``conn``)."""
    from retrieval.calibration import calibrate

    if report.added or report.replaced:
        # Fresh statistics, so the planner keeps choosing the HNSW index as the table grows.
        conn.execute("ANALYZE segments")
        conn.execute("ANALYZE tracks")
    if calibrate_after and (report.added or report.replaced):
        with conn.transaction():
            calibrate(conn, model_version=model_version)


def ingest(
    *,
    db: Any,
    paths: Sequence[Path],
    embedder: Any = None,
    spec: EmbedderSpec | None = None,
    metadata_file: Path | None = None,
    workers: int = 2,
    use_denoise: bool = False,
    progress: bool = True,
    calibrate_after: bool = True,
) -> IngestReport:
    """Add ``paths`` (files or folders) to the library; see the module docstring for the guarantees.

    Pass ``embedder`` (used in-process when ``workers <= 1``) and/or ``spec`` (how worker
    processes build theirs); with neither, the shipped checkpoint (or, loudly, untrained weights).
    """
    t_start = time.perf_counter()
    if embedder is None and spec is None:
        embedder, spec = resolve_embedder(None)
    spec = spec or spec_for(embedder)
    model_version = embedder.model_version if embedder is not None else spec.build().model_version
    sidecar = load_sidecar(metadata_file) if metadata_file else {}
    files = find_audio_files(paths)
    report = IngestReport()
    with db.connection() as conn:
        plan = plan_ingest(conn, files, sidecar)
        conn.commit()
    report.unchanged, report.updated = plan.unchanged, plan.updated
    log.info("%d files: %d unchanged, %d to analyze", len(files), report.unchanged, len(plan.jobs))
    bar = progress_bar(len(plan.jobs), progress, "ingest")
    try:
        with autocommit(db) as conn:
            for res in _map(
                plan.jobs,
                spec=spec,
                embedder=embedder,
                workers=workers,
                use_denoise=use_denoise,
                read_metadata=True,
            ):
                bar.update(1)
                outcome, tid = store_result(
                    conn, res, model_version=model_version, sidecar=sidecar,
                    replace_ids=plan.replace.get(res.path, []),
                )  # fmt: skip
                report.record(res, outcome, tid)
                bar.set_postfix_str(report.rate(time.perf_counter() - t_start))
            finish_ingest(conn, report, model_version=model_version, calibrate_after=calibrate_after)
    finally:
        bar.close()
    report.wall_seconds = time.perf_counter() - t_start
    return report


def reindex(
    *, db: Any, embedder: Any, spec: EmbedderSpec | None = None, workers: int = 2, progress: bool = True
) -> IngestReport:
    """Re-embed every track with a segment whose model_version differs from ``embedder``'s, or without
    a stored melodic line (libraries ingested before migration 007).

    Audio is decoded again (no metadata re-read); each track's segments are swapped in one
    transaction. A track whose file is gone is reported as failed and left as it was.
    """
    from retrieval.calibration import calibrate

    t_start = time.perf_counter()
    version = embedder.model_version
    spec = spec or spec_for(embedder)
    report = IngestReport()
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT DISTINCT t.id, t.path, t.content_hash FROM tracks t JOIN segments s ON s.track_id = t.id"
            # melody IS NULL: ingested before migration 007 stored the melodic line (query by humming)
            " WHERE s.model_version <> %s OR s.melody IS NULL ORDER BY t.id",
            (version,),
        ).fetchall()
        report.unchanged = int(scalar(conn, "SELECT count(*) FROM tracks")) - len(rows)
        conn.commit()
    by_path = {Path(p): (tid, h) for tid, p, h in rows}
    jobs = [(Path(p), h) for _, p, h in rows]
    bar = progress_bar(len(jobs), progress, "reindex")
    try:
        with autocommit(db) as conn:
            for res in _map(
                jobs, spec=spec, embedder=embedder, workers=workers, use_denoise=False, read_metadata=False
            ):
                bar.update(1)
                if res.error or res.analysis is None:
                    report.failed.append((str(res.path), res.error or "no analysis"))
                    continue
                same_model(res.analysis.model_version, version)
                tid, _ = by_path[res.path]
                replace_segments(conn, track_id=tid, analysis=res.analysis)
                report.record(res, "replaced", tid)
            if report.replaced:
                with conn.transaction():
                    calibrate(conn, model_version=version)
    finally:
        bar.close()
    report.wall_seconds = time.perf_counter() - t_start
    return report
