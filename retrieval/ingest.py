"""Ingestion: files/folders → decoded, leveled, embedded, described segments in PostgreSQL.

Idempotent by content hash: an unchanged file is skipped before decoding; a changed file at
a known path replaces its old track in the same transaction; every track is one
transaction, so a killed run leaves no partial track and a rerun finishes the job. The
decode → features → embed work is a pure per-file map run in a process pool; only the
parent process writes (binary COPY).
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

import numpy as np
import psycopg

from cadenza.audio import AUDIO_EXTENSIONS, content_hash, load_audio
from cadenza.errors import CadenzaError, ConfigError, InputError
from retrieval.analysis import TrackAnalysis, analyze_audio, warm_up
from retrieval.metadata import load_sidecar, merge, read_tags
from retrieval.store import replace_segments, scalar, write_track

log = logging.getLogger(__name__)

INGEST_EXTENSIONS = frozenset({".mp3", ".wav", ".flac", ".ogg", ".opus", ".m4a", ".aac"})
#: A whole file quieter than this (RMS, dBFS) is silence: indexing it only adds moments that match nothing.
SILENT_FILE_DBFS = -60.0
assert INGEST_EXTENSIONS <= AUDIO_EXTENSIONS


@dataclass(frozen=True)
class EmbedderSpec:
    """How a worker process gets its embedder: a checkpoint folder, or untrained weights (seed)."""

    checkpoint: Path | None = None
    untrained_seed: int | None = None

    def build(self) -> Any:
        from encoder.embed import Embedder

        if self.untrained_seed is not None:
            return Embedder.untrained(seed=self.untrained_seed)
        return Embedder.load(self.checkpoint)


def resolve_embedder(checkpoint: Path | None) -> tuple[Any, EmbedderSpec]:
    """The product's embedder: the checkpoint, or — loudly — untrained weights when none is shipped."""
    from encoder.embed import Embedder

    try:
        emb = Embedder.load(checkpoint)
        return emb, EmbedderSpec(checkpoint=checkpoint)
    except ConfigError as exc:
        log.warning(
            "NO TRAINED ENCODER (%s). Falling back to UNTRAINED random weights: results will be poor. "
            "Run `cadenza train` and re-run `cadenza reindex`.",
            exc,
        )
        return Embedder.untrained(seed=0), EmbedderSpec(untrained_seed=0)


def spec_for(embedder: Any) -> EmbedderSpec:
    """A spec that rebuilds ``embedder`` in a worker: untrained seed N, else the shipped checkpoint."""
    version = str(embedder.model_version)
    if version.startswith("untrained-seed"):
        return EmbedderSpec(untrained_seed=int(version.removeprefix("untrained-seed")))
    return EmbedderSpec(checkpoint=None)


@contextmanager
def autocommit(db: Any) -> Iterator[psycopg.Connection]:
    """A pool connection in autocommit mode, so each ``conn.transaction()`` is a real COMMIT."""
    with db.connection() as conn:
        conn.commit()
        prev = conn.autocommit
        conn.autocommit = True
        try:
            yield conn
        finally:
            conn.autocommit = prev


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


def _one_thread() -> Any:
    """Limit BLAS pools to one thread (numpy's OpenBLAS would start one per core per process).

    Only BLAS: torch's OpenMP pool is set with ``torch.set_num_threads``, and restoring an OpenMP
    limit here would undo the caller's torch setting.

    Returns the threadpoolctl limiter (keep it alive; ``restore_original_limits()`` undoes it), or
    None when threadpoolctl (a dependency of librosa's scikit-learn) is missing.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with librosa
        return None
    return threadpool_limits(limits=1, user_api="blas")


def _fast_exit() -> None:
    """A worker's last atexit hook: leave without tearing down torch/numba (≈ 1–2 s per process)."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _init_worker(spec: EmbedderSpec) -> None:
    import atexit

    import torch

    # One thread per process: N processes × N threads on N cores only adds switching.
    torch.set_num_threads(1)
    _WORKER["limits"] = _one_thread()
    _WORKER["embedder"] = spec.build()
    warm_up()
    # Registered last, so it runs first at exit: the pool has collected every result by then.
    atexit.register(_fast_exit)


@dataclass
class FileResult:
    path: Path
    content_hash: str
    tags: dict[str, Any] = field(default_factory=dict)
    analysis: TrackAnalysis | None = None
    error: str | None = None


def process_file(
    *, path: Path, digest: str, embedder: Any, use_denoise: bool = False, read_metadata: bool = True
) -> FileResult:
    """Decode, level, featurize, embed and describe one file. Errors become ``FileResult.error``."""
    t0, c0 = time.perf_counter(), time.thread_time()
    try:
        y = load_audio(path=path)
        t1, c1 = time.perf_counter(), time.thread_time()
        if y.size and float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) < 10 ** (SILENT_FILE_DBFS / 20):
            return FileResult(path, digest, error=f"{path.name} is silent; nothing to index")
        analysis = analyze_audio(y=y, embedder=embedder, use_denoise=use_denoise)
        analysis.seconds_decode = t1 - t0
        analysis.cpu_s["decode"] = c1 - c0
        if not analysis.segments:
            return FileResult(
                path, digest, error=f"{path.name} is shorter than 5 s of audio; nothing to index"
            )
        tags = read_tags(path) if read_metadata else {}
        return FileResult(path, digest, tags=tags, analysis=analysis)
    except CadenzaError as exc:
        return FileResult(path, digest, error=str(exc))


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
    limits = _one_thread()
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
            max_workers=helpers, mp_context=ctx, initializer=_init_worker, initargs=(spec,)
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
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    segments: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    #: CPU seconds per analysis stage, summed over the lanes (see ``TrackAnalysis.cpu_s``).
    stage_cpu_s: dict[str, float] = field(default_factory=dict)

    def _add(self, analysis: TrackAnalysis) -> None:
        self.segments += len(analysis.segments)
        self.audio_seconds += analysis.duration_s
        for k, v in analysis.cpu_s.items():
            self.stage_cpu_s[k] = self.stage_cpu_s.get(k, 0.0) + v

    @property
    def realtime_factor(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "added": len(self.added),
            "replaced": len(self.replaced),
            "unchanged": self.unchanged,
            "failed": [{"path": p, "error": e} for p, e in self.failed],
            "segments": self.segments,
            "audio_seconds": round(self.audio_seconds, 1),
            "wall_seconds": round(self.wall_seconds, 2),
            "realtime_factor": round(self.realtime_factor, 1),
            "stage_cpu_seconds": {k: round(v, 2) for k, v in self.stage_cpu_s.items()},
        }


def _same_model(got: str, want: str) -> None:
    """Workers rebuild the embedder from a spec; refuse to store segments of another model."""
    if got != want:
        raise ConfigError(
            f"worker processes embedded with model {got} but this run uses {want}; "
            "pass the matching EmbedderSpec (checkpoint path) or use --workers 1"
        )


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="track", desc=desc, disable=not enabled, dynamic_ncols=True)


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
    from retrieval.calibration import calibrate

    t_start = time.perf_counter()
    if embedder is None and spec is None:
        embedder, spec = resolve_embedder(None)
    spec = spec or spec_for(embedder)
    model_version = embedder.model_version if embedder is not None else spec.build().model_version
    sidecar = load_sidecar(metadata_file) if metadata_file else {}
    files = find_audio_files(paths)
    report = IngestReport()
    jobs: list[tuple[Path, str]] = []
    replace: dict[Path, list[int]] = {}
    with db.connection() as conn:
        for f in files:
            digest = content_hash(f)
            if conn.execute("SELECT 1 FROM tracks WHERE content_hash = %s", (digest,)).fetchone():
                report.unchanged += 1
                continue
            old = [r[0] for r in conn.execute("SELECT id FROM tracks WHERE path = %s", (str(f),)).fetchall()]
            if old:
                replace[f] = old
            jobs.append((f, digest))
        conn.commit()
    log.info("%d files: %d unchanged, %d to analyze", len(files), report.unchanged, len(jobs))
    bar = _progress(len(jobs), progress, "ingest")
    try:
        with autocommit(db) as conn:
            for res in _map(
                jobs,
                spec=spec,
                embedder=embedder,
                workers=workers,
                use_denoise=use_denoise,
                read_metadata=True,
            ):
                bar.update(1)
                if res.error or res.analysis is None:
                    log.warning("skipped %s: %s", res.path, res.error)
                    report.failed.append((str(res.path), res.error or "no analysis"))
                    continue
                _same_model(res.analysis.model_version, model_version)
                meta = merge(tags=res.tags, sidecar=sidecar.get(res.path.resolve()), path=res.path)
                old = replace.get(res.path, [])
                tid = write_track(
                    conn, content_hash=res.content_hash, path=str(res.path), meta=meta, analysis=res.analysis,
                    replace_ids=old,
                )  # fmt: skip
                if tid is None:
                    report.unchanged += 1  # another run wrote the same content meanwhile
                    continue
                (report.replaced if old else report.added).append(tid)
                report._add(res.analysis)
                elapsed = time.perf_counter() - t_start
                bar.set_postfix_str(
                    f"{len(report.added) + len(report.replaced)} tracks, "
                    f"{(len(report.added) + len(report.replaced)) / max(elapsed, 1e-9):.2f} tracks/s, "
                    f"{report.audio_seconds / max(elapsed, 1e-9):.0f}x realtime"
                )
            if report.added or report.replaced:
                # Fresh statistics, so the planner keeps choosing the HNSW index as the table grows.
                conn.execute("ANALYZE segments")
                conn.execute("ANALYZE tracks")
            if calibrate_after and (report.added or report.replaced):
                with conn.transaction():
                    calibrate(conn, model_version=model_version)
    finally:
        bar.close()
    report.wall_seconds = time.perf_counter() - t_start
    return report


def reindex(
    *, db: Any, embedder: Any, spec: EmbedderSpec | None = None, workers: int = 2, progress: bool = True
) -> IngestReport:
    """Re-embed every track with a segment whose model_version differs from ``embedder``'s.

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
            " WHERE s.model_version <> %s ORDER BY t.id",
            (version,),
        ).fetchall()
        report.unchanged = int(scalar(conn, "SELECT count(*) FROM tracks")) - len(rows)
        conn.commit()
    by_path = {Path(p): (tid, h) for tid, p, h in rows}
    jobs = [(Path(p), h) for _, p, h in rows]
    bar = _progress(len(jobs), progress, "reindex")
    try:
        with autocommit(db) as conn:
            for res in _map(
                jobs, spec=spec, embedder=embedder, workers=workers, use_denoise=False, read_metadata=False
            ):
                bar.update(1)
                if res.error or res.analysis is None:
                    report.failed.append((str(res.path), res.error or "no analysis"))
                    continue
                _same_model(res.analysis.model_version, version)
                tid, _ = by_path[res.path]
                replace_segments(conn, track_id=tid, analysis=res.analysis)
                report.replaced.append(tid)
                report._add(res.analysis)
            if report.replaced:
                with conn.transaction():
                    calibrate(conn, model_version=version)
    finally:
        bar.close()
    report.wall_seconds = time.perf_counter() - t_start
    return report
