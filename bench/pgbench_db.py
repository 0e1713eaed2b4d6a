"""A throw-away embedded PostgreSQL for benchmarks: start, tune, bulk-load, index, measure.

The scale benchmark never touches the user's library: it starts a fresh embedded PostgreSQL in a
temporary folder, applies Cadenza's own migrations (so the schema and queries are the real
ones), raises the memory settings an HNSW build needs (ALTER SYSTEM + restart) and loads
rows with ``COPY ... FORMAT BINARY``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import db_versions
from cadenza.db import Database, open_database
from cadenza.settings import Settings

log = logging.getLogger(__name__)

HNSW_INDEX = "segments_embedding_hnsw"
#: pgvector's defaults, as in sql/001_init.sql.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
#: The segment columns :func:`copy_segments` writes, with their COPY BINARY types.
SEGMENT_COPY_COLUMNS = (
    ("id", "int8"),
    ("track_id", "int8"),
    ("start_s", "float4"),
    ("end_s", "float4"),
    ("embedding", "vector"),
    ("model_version", "text"),
    ("chroma_mean", "float4[]"),
    ("chroma_seq", "bytea"),
    ("key_index", "int2"),
    ("mode", "text"),
    ("cell", "int4"),
)


def keep_lock_files_for_the_run() -> None:
    """Point ``XDG_RUNTIME_DIR`` at a folder that lives as long as the benchmark process.

    The embedded server keeps lock files there for the whole process; cadenza.db would point it
    into the first temporary database's folder, which is deleted while the process still runs.
    """
    run_dir = Path(tempfile.gettempdir()) / f"cadenza-bench-run-{os.getuid()}"
    run_dir.mkdir(mode=0o700, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(run_dir))


def fetch_one(conn: Any, sql: str, params: tuple = ()) -> tuple:
    """The one row a query must return."""
    row = conn.execute(sql, params).fetchone()
    if row is None:
        raise RuntimeError(f"no row from {sql!r}")
    return tuple(row)


def open_temp_database(home: Path, *, pool_max: int = 4) -> Database:
    """A fresh (or reused) embedded server under ``home``, migrated."""
    settings = Settings.from_env({"CADENZA_HOME": str(home), "CADENZA_DB_POOL_MAX": str(pool_max)})
    return open_database(settings)


def ingest_folder(
    db: Database, folder: Path, *, embedder: Any, spec: Any, metadata_file: Path | None, workers: int = 2
) -> Any:
    """The product's own ingest of ``folder`` into ``db``, without a progress bar; returns its report."""
    from retrieval.ingest import ingest  # torch and the analysis stack: only when a benchmark ingests

    return ingest(
        db=db, paths=[folder], embedder=embedder, spec=spec, metadata_file=metadata_file, workers=workers,
        progress=False,
    )  # fmt: skip


def tune_and_restart(db: Database, home: Path, *, maintenance_work_mem: str, shared_buffers: str) -> Database:
    """Raise memory settings with ALTER SYSTEM and restart the embedded server; returns the new handle."""
    with db.connection() as conn:
        conn.autocommit = True
        conn.execute(f"ALTER SYSTEM SET maintenance_work_mem = '{maintenance_work_mem}'")
        conn.execute(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}'")
        # One core is for the benchmark's own numpy work; parallel build workers would fight it.
        conn.execute("ALTER SYSTEM SET max_parallel_maintenance_workers = 1")
    db.close()  # stops the server this process started
    new = open_temp_database(home)
    with new.connection() as conn:
        got = fetch_one(conn, "SHOW maintenance_work_mem")[0]
        sb = fetch_one(conn, "SHOW shared_buffers")[0]
    log.info("embedded PostgreSQL restarted: maintenance_work_mem=%s shared_buffers=%s", got, sb)
    return new


def open_for_hnsw(home: Path, res: dict[str, Any]) -> Database:
    """A fresh embedded server under ``home`` with the memory a large HNSW build needs; its
    PostgreSQL and pgvector versions go into ``res``."""
    db = open_temp_database(home)
    try:
        db = tune_and_restart(db, home, maintenance_work_mem="2GB", shared_buffers="1GB")
        with db.connection() as conn:
            res["postgres"], res["pgvector"] = db_versions(conn)
    except BaseException:
        db.close()
        raise
    return db


def drop_hnsw(db: Database) -> None:
    with db.connection() as conn:
        conn.execute(f"DROP INDEX IF EXISTS {HNSW_INDEX}")
        conn.commit()


def create_hnsw(
    conn: Any, *, name: str, column: str, m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION
) -> float:
    """``CREATE INDEX name ON segments USING hnsw (column)`` on an autocommit connection; its seconds."""
    t0 = time.perf_counter()
    conn.execute(
        f"CREATE INDEX {name} ON segments USING hnsw ({column}) "
        f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)})"
    )
    return time.perf_counter() - t0


def build_hnsw(
    db: Database, *, m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION
) -> dict[str, float]:
    """(Re)build the segments HNSW index; returns build seconds and sizes in bytes."""
    drop_hnsw(db)
    with db.connection() as conn:
        conn.autocommit = True
        build_s = create_hnsw(
            conn, name=HNSW_INDEX, column="embedding vector_cosine_ops", m=m, ef_construction=ef_construction
        )
        conn.execute("ANALYZE tracks")
        conn.execute("ANALYZE segments")
    return {"build_s": build_s, **sizes(db)}


def sizes(db: Database) -> dict[str, float]:
    """Bytes of the segments heap (+TOAST), its HNSW index, all its indexes, and rows."""
    with db.connection() as conn:
        row = fetch_one(
            conn,
            "SELECT pg_table_size('segments'), pg_indexes_size('segments'), "
            "coalesce((SELECT pg_relation_size(oid) FROM pg_class WHERE relname = %s), 0), "
            "(SELECT count(*) FROM segments)",
            (HNSW_INDEX,),
        )
    table, indexes, hnsw, n = (int(x) for x in row)
    return {
        "table_bytes": table,
        "all_indexes_bytes": indexes,
        "hnsw_bytes": hnsw,
        "rows": n,
        "bytes_per_segment": (table + indexes) / max(n, 1),
        "hnsw_bytes_per_segment": hnsw / max(n, 1),
    }


def copy_tracks(conn, rows: list[tuple]) -> None:
    """Rows of (id, content_hash, path, title, composer, work, era, duration_s, model_version)."""
    cols = "id, content_hash, path, title, composer, work, era, duration_s, model_version"
    with conn.cursor() as cur, cur.copy(f"COPY tracks ({cols}) FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "text", "text", "text", "text", "text", "text", "float4", "text"])
        for r in rows:
            copy.write_row(r)


def copy_segments(
    conn,
    *,
    ids: np.ndarray,
    track_ids: np.ndarray,
    starts: np.ndarray,
    vectors: np.ndarray,
    key_index: np.ndarray,
    mode: list[str],
    model_version: str,
    chroma_mean: np.ndarray | None = None,
    chroma_seq: np.ndarray | None = None,
    cells: np.ndarray | None = None,
) -> None:
    """Bulk-load segments with COPY BINARY (the embedding as pgvector's binary ``vector``).

    ``chroma_mean [n, 12]`` (default flat) and ``chroma_seq [n, T, 12]`` float16 (default none)
    as ingest stores them; ``cells``: each segment's cell (retrieval/cells.py), written with
    the row like an insert does.
    """
    from pgvector import Vector

    from cadenza.db import f16_bytes

    flat = [1.0 / 12] * 12
    cols = ", ".join(c for c, _ in SEGMENT_COPY_COLUMNS)
    with conn.cursor() as cur, cur.copy(f"COPY segments ({cols}) FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types([t for _, t in SEGMENT_COPY_COLUMNS])
        for i in range(len(ids)):
            copy.write_row(
                (
                    int(ids[i]),
                    int(track_ids[i]),
                    float(starts[i]),
                    float(starts[i]) + 10.0,
                    Vector(vectors[i]),
                    model_version,
                    flat if chroma_mean is None else chroma_mean[i].tolist(),
                    None if chroma_seq is None else f16_bytes(chroma_seq[i]),
                    int(key_index[i]),
                    mode[i],
                    None if cells is None else int(cells[i]),
                )
            )


def copy_track_chroma(conn, rows: Iterable[tuple[int, float, np.ndarray]]) -> None:
    """Rows of (track id, fps, chroma ``[frames, 12]``), stored as ingest does (float16 little-endian)."""
    from cadenza.db import f16_bytes

    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY track_chroma (track_id, fps, n_frames, chroma) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(["int8", "float4", "int4", "bytea"])
        for track_id, fps, chroma in rows:
            copy.write_row((int(track_id), float(fps), len(chroma), f16_bytes(chroma)))
