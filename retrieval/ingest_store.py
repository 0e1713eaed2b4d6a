"""Ingestion's writes: one analysed file as one track, and what follows the writes.

``store_result`` writes one track in one transaction (or a savepoint inside the caller's), so a
killed run never leaves part of a track; ``finish_ingest`` refreshes planner statistics and the
score calibration. Shared by the process pool (retrieval/ingest.py) and Ray's writer actors
(retrieval/ray_ingest.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from cadenza.errors import ConfigError
from retrieval.calibration import calibrate
from retrieval.ingest_report import IngestReport
from retrieval.ingest_steps import FileResult
from retrieval.metadata import merge
from retrieval.store import write_track


def same_model(got: str, want: str) -> None:
    """Workers rebuild the embedder from a spec; refuse to store segments of another model."""
    if got != want:
        raise ConfigError(
            f"worker processes embedded with model {got} but this run uses {want}; "
            "pass the matching EmbedderSpec (checkpoint path) or use --workers 1"
        )


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
    if report.added or report.replaced:
        # Fresh statistics, so the planner keeps choosing the HNSW index as the table grows.
        conn.execute("ANALYZE segments")
        conn.execute("ANALYZE tracks")
    if calibrate_after and (report.added or report.replaced):
        with conn.transaction():
            calibrate(conn, model_version=model_version)
