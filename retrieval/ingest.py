"""Ingestion: files/folders → decoded, leveled, embedded, described segments in PostgreSQL.

Idempotent by content hash: an unchanged file is skipped before decoding; a changed file at
a known path replaces its old track in the same transaction; every track is one
transaction, so a killed run leaves no partial track and a rerun finishes the job.

The run is four steps in four modules, data flowing one way: plan (retrieval/ingest_plan.py:
which files need analysis), map (retrieval/ingest_pool.py: decode → features → embed, a pure
per-file map in a process pool), store (retrieval/ingest_store.py: one transaction per track,
binary COPY, only this process writes) and report (retrieval/ingest_report.py). The Ray
pipeline (retrieval/ray_ingest.py) shares plan, store and report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from cadenza.db import Database, autocommit, scalar
from encoder.embed import EmbedderSpec, resolve_embedder, spec_for
from encoder.protocols import MomentEmbedder
from encoder.timbre import shipped_timbre
from retrieval.calibration import calibrate
from retrieval.ingest_plan import find_audio_files, plan_ingest
from retrieval.ingest_pool import map_files
from retrieval.ingest_report import IngestReport, progress_bar
from retrieval.ingest_store import finish_ingest, same_model, store_result
from retrieval.metadata import load_sidecar
from retrieval.store import fill_harmony, harmony_missing, replace_segments

log = logging.getLogger(__name__)

__all__ = ["IngestReport", "find_audio_files", "ingest", "reindex"]


def ingest(
    *,
    db: Database,
    paths: Sequence[Path],
    embedder: MomentEmbedder | None = None,
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
    if spec is None:
        embedder, spec = resolve_embedder(None) if embedder is None else (embedder, spec_for(embedder))
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
            for res in map_files(
                plan.jobs,
                spec=spec,
                embedder=embedder,
                workers=workers,
                use_denoise=use_denoise,
                read_metadata=True,
            ):
                bar.update(1)
                c0 = time.thread_time()
                outcome, tid = store_result(
                    conn, res, model_version=model_version, sidecar=sidecar,
                    replace_ids=plan.replace.get(res.path, []),
                )  # fmt: skip
                report.record(res, outcome, tid)
                report.add_cpu("write", time.thread_time() - c0)
                bar.set_postfix_str(report.rate(time.perf_counter() - t_start))
            finish_ingest(conn, report, model_version=model_version, calibrate_after=calibrate_after)
    finally:
        bar.close()
    report.wall_seconds = time.perf_counter() - t_start
    return report


def reindex(
    *,
    db: Database,
    embedder: MomentEmbedder,
    spec: EmbedderSpec | None = None,
    workers: int = 2,
    progress: bool = True,
) -> IngestReport:
    """Re-embed every track with a segment whose model_version differs from ``embedder``'s, without
    a stored melodic line (libraries ingested before migration 007), or without timbre vectors of
    the shipped timbre model (before migration 008, or fitted anew: encoder/timbre.py), or without
    the phone band's chroma (before migration 009). Segments
    without a harmony vector (before migration 009) get it from the stored chroma first, with no
    audio decoded.

    Audio is decoded again (no metadata re-read); each track's segments are swapped in one
    transaction. A track whose file is gone is reported as failed and left as it was.
    """
    t_start = time.perf_counter()
    version = embedder.model_version
    timbre_version = shipped_timbre().version
    spec = spec or spec_for(embedder)
    report = IngestReport()
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT DISTINCT t.id, t.path, t.content_hash FROM tracks t JOIN segments s ON s.track_id = t.id"
            " LEFT JOIN track_chroma c ON c.track_id = t.id"
            # melody IS NULL: ingested before migration 007 stored the melodic line (query by humming);
            # timbre_version: before migration 008 stored the timbre vectors, or by another timbre model;
            # band_chroma IS NULL: before migration 009 stored the phone band's chroma
            " WHERE s.model_version <> %s OR s.melody IS NULL OR t.timbre_version IS DISTINCT FROM %s"
            " OR c.band_chroma IS NULL ORDER BY t.id",
            (version, timbre_version),
        ).fetchall()
        report.unchanged = int(scalar(conn, "SELECT count(*) FROM tracks")) - len(rows)
        conn.commit()
    by_path = {Path(p): (tid, h) for tid, p, h in rows}
    jobs = [(Path(p), h) for _, p, h in rows]
    with autocommit(db) as conn:  # from the stored chroma, before the re-embedding (which writes its own)
        missing = harmony_missing(conn)
        fill_bar = progress_bar(len(missing), progress and bool(missing), "harmony vectors")
        for tid in missing:
            report.harmony_filled += fill_harmony(conn, tid)
            fill_bar.update(1)
        fill_bar.close()
    bar = progress_bar(len(jobs), progress, "reindex")
    try:
        with autocommit(db) as conn:
            for res in map_files(
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
