"""Library storage: one transaction per track, segments via COPY ... FORMAT BINARY.

All SQL that writes the library lives here. A track, its segments and its chroma are
written in ONE transaction, so a crash or kill mid-ingest never leaves a partial track.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector import HalfVector

from cadenza.db import f16_array, f16_bytes, scalar
from cadenza.errors import ModelMismatch, NotFound
from encoder.features import FPS
from retrieval.analysis import TrackAnalysis
from retrieval.cells import assign_cells
from retrieval.harmony import segment_harmony

SEGMENT_COLUMNS = (
    "track_id", "start_s", "end_s", "embedding", "model_version", "chroma_mean", "chroma_seq", "key_index",
    "mode", "key_confidence", "tempo_bpm", "loudness_db", "brightness_hz", "onset_density", "valence", "arousal",
    "cell", "melody", "timbre", "harmony",
)  # fmt: skip
SEGMENT_TYPES = (
    "int8", "float4", "float4", "vector", "text", "float4[]", "bytea", "int2",
    "text", "float4", "float4", "float4", "float4", "float4", "float4", "float4",
    "int4", "bytea", "vector", "halfvec",
)  # fmt: skip
#: Descriptor columns read back for reranking (stored per segment).
DESCRIPTOR_COLUMNS = (
    "key_index", "mode", "key_confidence", "tempo_bpm", "loudness_db", "brightness_hz", "onset_density",
    "valence", "arousal",
)  # fmt: skip


def _segment_rows(track_id: int, analysis: TrackAnalysis, cells: list[int | None]) -> list[tuple[Any, ...]]:
    # Harmony vectors come from the track's chroma here, on the one path every ingest (pool, Ray,
    # reindex) writes through, so no lane computes or ships them separately.
    harmony = segment_harmony(analysis.chroma, [s.start_s for s in analysis.segments])
    rows = []
    for s, cell, h in zip(analysis.segments, cells, harmony, strict=True):
        d = s.descriptors
        rows.append(
            (
                track_id, s.start_s, s.end_s, s.embedding, analysis.model_version, [float(v) for v in d["chroma_mean"]],
                f16_bytes(s.chroma_seq), d["key_index"], d["mode"], d["key_confidence"], d["tempo_bpm"],
                d["loudness_db"], d["brightness_hz"], d["onset_density"], d["valence"], d["arousal"], cell,
                None if s.melody is None else f16_bytes(s.melody),
                s.timbre, None if h is None else HalfVector(h),
            )
        )  # fmt: skip
    return rows


def copy_segments(conn: psycopg.Connection, track_id: int, analysis: TrackAnalysis) -> int:
    """Bulk-write a track's segments with binary COPY (caller holds the transaction).

    Each segment gets its nearest cell when its model version has cells (retrieval/cells.py),
    computed before the COPY so the row is written once (a later UPDATE would re-insert it
    into the HNSW index).
    """
    cells = assign_cells(
        conn, model_version=analysis.model_version, embeddings=[s.embedding for s in analysis.segments]
    )
    rows = _segment_rows(track_id, analysis, cells)
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY segments ({', '.join(SEGMENT_COLUMNS)}) FROM STDIN WITH (FORMAT BINARY)") as copy,
    ):
        copy.set_types(list(SEGMENT_TYPES))
        for row in rows:
            copy.write_row(row)
    return len(rows)


def track_timbre(analysis: TrackAnalysis) -> np.ndarray | None:
    """The track's sound (sql/012_track_timbre.sql): the mean of its segments' timbre vectors, or None."""
    vecs = [s.timbre for s in analysis.segments if s.timbre is not None]
    return np.mean(vecs, axis=0).astype(np.float32) if vecs else None


def write_chroma(conn: psycopg.Connection, track_id: int, analysis: TrackAnalysis, fps: float = FPS) -> None:
    band = None if analysis.band_chroma is None else f16_bytes(analysis.band_chroma)
    conn.execute(
        "INSERT INTO track_chroma (track_id, fps, n_frames, chroma, band_chroma) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (track_id) DO UPDATE SET fps = EXCLUDED.fps, n_frames = EXCLUDED.n_frames,"
        " chroma = EXCLUDED.chroma, band_chroma = EXCLUDED.band_chroma",
        (track_id, fps, len(analysis.chroma), f16_bytes(analysis.chroma), band),
    )


def write_track(
    conn: psycopg.Connection,
    *,
    content_hash: str,
    path: str,
    meta: dict[str, Any],
    analysis: TrackAnalysis,
    replace_ids: list[int] | tuple[int, ...] = (),
) -> int | None:
    """Insert a track with its segments and chroma in one transaction; None if the hash is already there.

    ``replace_ids``: tracks (the old version of a changed file) deleted in the same transaction.
    """
    with conn.transaction():
        for old in replace_ids:
            conn.execute("DELETE FROM tracks WHERE id = %s", (old,))
        row = conn.execute(
            "INSERT INTO tracks (content_hash, path, title, composer, work, era, year, duration_s, tags, model_version,"
            " timbre_version, timbre) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (content_hash) DO NOTHING RETURNING id",
            (
                content_hash,
                path,
                meta.get("title", ""),
                meta.get("composer", ""),
                meta.get("work", ""),
                meta.get("era", ""),
                meta.get("year"),
                max(analysis.duration_s, 1e-3),
                json.dumps({k: v for k, v in meta.items() if k in ("genre", "album", "artist")}),
                analysis.model_version,
                analysis.timbre_version,
                track_timbre(analysis),
            ),  # fmt: skip
        ).fetchone()
        if row is None:
            return None
        track_id = int(row[0])
        copy_segments(conn, track_id, analysis)
        write_chroma(conn, track_id, analysis)
    return track_id


def update_track(conn: psycopg.Connection, track_id: int, changes: dict[str, Any]) -> None:
    """Set a known track's ``path`` and/or metadata fields (title, composer, work, era, year)."""
    allowed = ("path", "title", "composer", "work", "era", "year")
    cols = [c for c in allowed if c in changes]
    if not cols:
        return
    conn.execute(
        "UPDATE tracks SET " + ", ".join(f"{c} = %s" for c in cols) + ", updated_at = now() WHERE id = %s",
        (*(changes[c] for c in cols), track_id),
    )


def relink_plan(rows: list[tuple[int, str]], *, old_dir: Path, new_dir: Path) -> list[tuple[int, str, str]]:
    """(id, old path, new path) for each stored track under ``old_dir``, moved under ``new_dir``."""
    plan = []
    for tid, path in rows:
        p = Path(path)
        if p.is_relative_to(old_dir):
            plan.append((int(tid), path, str(new_dir / p.relative_to(old_dir))))
    return plan


def replace_segments(conn: psycopg.Connection, *, track_id: int, analysis: TrackAnalysis) -> int:
    """Re-embedding: swap a track's segments and chroma in one transaction (metadata untouched)."""
    with conn.transaction():
        conn.execute("DELETE FROM segments WHERE track_id = %s", (track_id,))
        n = copy_segments(conn, track_id, analysis)
        write_chroma(conn, track_id, analysis)
        conn.execute(
            "UPDATE tracks SET model_version = %s, timbre_version = %s, timbre = %s, updated_at = now() WHERE id = %s",
            (analysis.model_version, analysis.timbre_version, track_timbre(analysis), track_id),
        )
    return n


@dataclass
class TrackInfo:
    id: int
    path: str
    title: str
    composer: str
    work: str
    era: str
    year: int | None
    duration_s: float
    n_segments: int
    model_version: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def list_tracks(conn: psycopg.Connection) -> list[TrackInfo]:
    rows = conn.execute(
        "SELECT t.id, t.path, t.title, t.composer, t.work, t.era, t.year, t.duration_s,"
        " (SELECT count(*) FROM segments s WHERE s.track_id = t.id), t.model_version"
        " FROM tracks t ORDER BY lower(t.composer), lower(t.title), t.id"
    ).fetchall()
    return [TrackInfo(*r) for r in rows]


def stale_track_count(conn: psycopg.Connection, model_version: str) -> int:
    """Tracks with a segment embedded by another model than ``model_version`` (search skips those)."""
    return int(
        scalar(
            conn,
            "SELECT count(DISTINCT track_id) FROM segments WHERE model_version <> %s",
            (model_version,),
        )
    )


def other_models(conn: psycopg.Connection, model_version: str) -> list[str]:
    """The models the library is embedded by, when none of it is by ``model_version``; else []."""
    if scalar(conn, "SELECT EXISTS (SELECT 1 FROM segments WHERE model_version = %s)", (model_version,)):
        return []
    rows = conn.execute("SELECT DISTINCT model_version FROM tracks ORDER BY 1").fetchall()
    return [str(r[0]) for r in rows if r[0] and r[0] != model_version]


def model_mismatch(model_version: str, others: list[str]) -> ModelMismatch:
    return ModelMismatch(
        f"the library was embedded by another model ({', '.join(others)}) than the one this server runs "
        f"({model_version}), so nothing can be matched; an operator should restart the server so it "
        "loads the library's model"
    )


def remove_track(conn: psycopg.Connection, track_id: int) -> TrackInfo:
    """Delete a track, its segments, chroma and plays (cascade). NotFound if there is no such track."""
    with conn.transaction():
        row = conn.execute(
            "SELECT t.id, t.path, t.title, t.composer, t.work, t.era, t.year, t.duration_s,"
            " (SELECT count(*) FROM segments s WHERE s.track_id = t.id), t.model_version FROM tracks t WHERE id = %s",
            (track_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no track with id {track_id}; run `cadenza library` to see the ids")
        conn.execute("DELETE FROM tracks WHERE id = %s", (track_id,))
    return TrackInfo(*row)


def track_chroma(conn: psycopg.Connection, track_id: int) -> np.ndarray:
    """The stored 10-fps chroma ``[T, 12]`` float32 of a track (empty when missing)."""
    row = conn.execute("SELECT chroma FROM track_chroma WHERE track_id = %s", (track_id,)).fetchone()
    return f16_array(row[0] if row else None)


def harmony_missing(conn: psycopg.Connection) -> list[int]:
    """Tracks with a segment that has no harmony vector (stored before migration 009, or a silent window)."""
    rows = conn.execute("SELECT DISTINCT track_id FROM segments WHERE harmony IS NULL ORDER BY 1").fetchall()
    return [int(r[0]) for r in rows]


def fill_harmony(conn: psycopg.Connection, track_id: int) -> int:
    """Write the missing harmony vectors of a track's segments from its stored chroma (no audio
    decoded), in one transaction; the number written (a silent window stays NULL)."""
    with conn.transaction():
        chroma = track_chroma(conn, track_id)
        rows = conn.execute(
            "SELECT id, start_s FROM segments WHERE track_id = %s AND harmony IS NULL ORDER BY id",
            (track_id,),
        ).fetchall()
        got = [(v, int(sid)) for (sid, _), v in zip(rows, segment_harmony(chroma, [r[1] for r in rows]), strict=True)
               if v is not None]  # fmt: skip
        if got:
            with conn.cursor() as cur:
                cur.executemany("UPDATE segments SET harmony = %s::halfvec WHERE id = %s", got)
    return len(got)


def record_play(conn: psycopg.Connection, *, listener_id: str, track_id: int) -> None:
    conn.execute("INSERT INTO plays (listener_id, track_id) VALUES (%s, %s)", (listener_id, track_id))


def heard_composers(conn: psycopg.Connection, listener_id: str) -> set[str]:
    rows = conn.execute(
        "SELECT DISTINCT lower(t.composer) FROM plays p JOIN tracks t ON t.id = p.track_id WHERE p.listener_id = %s",
        (listener_id,),
    ).fetchall()
    return {r[0] for r in rows if r[0]}
