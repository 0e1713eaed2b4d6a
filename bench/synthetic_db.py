"""The synthetic library in a benchmark database: loading it, its cells, filter cases and exact truth.

Shared by ``bench scale``, ``bench routes`` and ``bench speed``: rows are COPYed in as ingest
would write them (:mod:`bench.synthetic` makes them), queries go through HNSW or the real
retrieval functions, and the ground truth is exact numpy search over the same rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench import pgbench_db
from bench.adapters import Candidates, filtered_candidates, top_tracks
from bench.query_stages import AsModelVersion, measure_stages
from bench.synthetic import (
    ERAS,
    SEGMENT_HOP_S,
    SEGMENTS_PER_TRACK,
    TRACK_CHROMA_FPS,
    TRACK_SECONDS,
    SyntheticLibrary,
)

#: The model version the synthetic rows are written under.
MODEL_VERSION = "bench-synthetic"
K = 10
#: The ef_search the headline rows use (pgvector's default is 40).
DEFAULT_EF = 40
#: Filtered queries per filter also timed through the exact route, for comparison (slow at 1M).
EXACT_QUERIES = 10
KEYS = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
COPY_CHUNK = 20_000


# --- loading ------------------------------------------------------------------------------


def load_library(db, lib: SyntheticLibrary, *, cells: np.ndarray | None = None) -> dict[str, float]:
    """COPY the synthetic tracks, their chroma and segments in (with each segment's cell, if given).

    Rows carry what ingest stores and search reads: each segment its chroma mean and 2-fps
    chroma sequence (the reranker's harmony and progression terms), each track its 10-fps
    chroma (localization), so a search over them does every stage's real work. Returns seconds.
    """
    pgbench_db.drop_hnsw(db)  # loading into an indexed table would build the graph row by row
    t0 = time.perf_counter()
    with db.connection() as conn:
        rows = [
            (
                t + 1,
                f"synthetic-{lib.seed}-{t}",
                f"/synthetic/{t}.wav",
                f"Track {t}",
                f"Composer {int(lib.track_composer[t])}",
                f"Work {t}",
                ERAS[int(lib.composer_era[lib.track_composer[t]])],
                float(TRACK_SECONDS),
                MODEL_VERSION,
            )
            for t in range(lib.n_tracks)
        ]
        pgbench_db.copy_tracks(conn, rows)
        pgbench_db.copy_track_chroma(
            conn, ((t + 1, TRACK_CHROMA_FPS, lib.track_chroma(t)) for t in range(lib.n_tracks))
        )
        conn.commit()
        for lo in tqdm(range(0, lib.n_segments, COPY_CHUNK), desc="COPY segments", unit="chunk", leave=False):
            hi = min(lib.n_segments, lo + COPY_CHUNK)
            track = lib.segment_track(start=lo, stop=hi)
            chroma_mean, chroma_seq = lib.segment_chroma(start=lo, stop=hi)
            pgbench_db.copy_segments(
                conn,
                ids=np.arange(lo, hi) + 1,
                track_ids=track + 1,
                starts=(np.arange(lo, hi) % SEGMENTS_PER_TRACK) * SEGMENT_HOP_S,
                vectors=lib.segment_vectors(start=lo, stop=hi),
                key_index=lib.track_key[track],
                mode=["minor" if m else "major" for m in lib.track_mode[track]],
                model_version=MODEL_VERSION,
                chroma_mean=chroma_mean,
                chroma_seq=chroma_seq,
                cells=None if cells is None else cells[lo:hi],
            )
            conn.commit()
        conn.execute("SELECT setval('tracks_id_seq', %s)", (lib.n_tracks,))
        conn.execute("SELECT setval('segments_id_seq', %s)", (lib.n_segments,))
        conn.commit()
    return {"copy_s": time.perf_counter() - t0}


# --- queries ------------------------------------------------------------------------------


def _knn_sql(*, where: str = "") -> str:
    return (
        "SELECT s.id FROM segments s JOIN tracks t ON t.id = s.track_id "
        f"{'WHERE ' + where if where else ''} ORDER BY s.embedding <=> %s LIMIT {K}"
    )


def timed_knn(
    conn, *, queries: np.ndarray, ef: int, where: str = "", params=()
) -> tuple[np.ndarray, list[float]]:
    """HNSW top-10 per query at ``ef_search``; returns (ids ``[Q, 10]`` 0-based, -1 = none; ms list)."""
    from pgvector import Vector

    conn.execute(f"SET hnsw.ef_search = {int(ef)}")
    sql = _knn_sql(where=where)
    out = np.full((len(queries), K), -1, dtype=np.int64)
    times = []
    for i, q in enumerate(queries):
        p = params[i] if params else ()
        t0 = time.perf_counter()
        rows = conn.execute(sql, (*p, Vector(q)), prepare=False).fetchall()
        times.append((time.perf_counter() - t0) * 1000)
        ids = [r[0] - 1 for r in rows]
        out[i, : len(ids)] = ids
    return out, times


class FilterCase:
    """One filter: its name, the retrieval Filters per query, the SQL WHERE (naive) and a numpy mask."""

    def __init__(
        self, name: str, filters: list, where: str, params: list, masks: Callable[[int], np.ndarray]
    ):
        self.name, self.filters, self.where, self.params, self.mask = name, filters, where, params, masks


def filter_cases(lib: SyntheticLibrary, *, q_comp: np.ndarray, seed: int) -> list[FilterCase]:
    """Exclude-own-composer, include-era, key, and all three, for each query."""
    from retrieval.types import Filters

    rng = np.random.default_rng([seed, 7])
    seg_track = np.arange(lib.n_segments) // SEGMENTS_PER_TRACK
    seg_comp = lib.track_composer[seg_track]
    seg_era = lib.composer_era[seg_comp]
    seg_key = lib.track_key[seg_track]
    seg_mode = lib.track_mode[seg_track]
    n = len(q_comp)
    eras = rng.integers(len(ERAS), size=n)
    keys = rng.integers(12, size=n)
    modes = rng.integers(2, size=n)
    mode_name = ["major", "minor"]
    cases = [
        FilterCase(
            "none (search's unfiltered route)",
            [Filters() for _ in q_comp],
            "TRUE",
            [() for _ in q_comp],
            lambda i: np.ones(lib.n_segments, dtype=bool),
        ),
        FilterCase(
            "exclude own composer",
            [Filters(exclude_composers=(f"Composer {int(c)}",)) for c in q_comp],
            "lower(t.composer) <> lower(%s)",
            [(f"Composer {int(c)}",) for c in q_comp],
            lambda i: seg_comp != q_comp[i],
        ),
        FilterCase(
            "include one era",
            [Filters(eras=(ERAS[int(e)],)) for e in eras],
            "t.era = %s",
            [(ERAS[int(e)],) for e in eras],
            lambda i: seg_era == eras[i],
        ),
        FilterCase(
            "key + mode",
            [Filters(key=KEYS[int(k)], mode=mode_name[int(m)]) for k, m in zip(keys, modes, strict=True)],
            "s.key_index = %s AND s.mode = %s",
            [(int(k), mode_name[int(m)]) for k, m in zip(keys, modes, strict=True)],
            lambda i: (seg_key == keys[i]) & (seg_mode == modes[i]),
        ),
        FilterCase(
            "exclude composer + era + key",
            [
                Filters(
                    exclude_composers=(f"Composer {int(c)}",),
                    eras=(ERAS[int(e)],),
                    key=KEYS[int(k)],
                    mode=mode_name[int(m)],
                )
                for c, e, k, m in zip(q_comp, eras, keys, modes, strict=True)
            ],
            "lower(t.composer) <> lower(%s) AND t.era = %s AND s.key_index = %s AND s.mode = %s",
            [
                (f"Composer {int(c)}", ERAS[int(e)], int(k), mode_name[int(m)])
                for c, e, k, m in zip(q_comp, eras, keys, modes, strict=True)
            ],
            lambda i: (
                (seg_comp != q_comp[i]) & (seg_era == eras[i]) & (seg_key == keys[i]) & (seg_mode == modes[i])
            ),
        ),
    ]
    return cases


def exact_filtered_tracks(
    lib_vectors: np.ndarray, seg_track: np.ndarray, queries: np.ndarray, mask_fn: Callable[[int], np.ndarray]
) -> np.ndarray:
    """Exact top-10 TRACKS per query (a track scores its best allowed segment) → ``[Q, 10]`` 0-based.

    Search returns one result per track, so filtered recall is measured over tracks.
    ``seg_track`` must be sorted (segments of a track are contiguous).
    """
    bounds = np.flatnonzero(np.r_[True, seg_track[1:] != seg_track[:-1]])
    out = np.full((len(queries), K), -1, dtype=np.int64)
    for i, q in enumerate(queries):
        sims = np.where(mask_fn(i), lib_vectors @ q, -np.inf)
        best = np.maximum.reduceat(sims, bounds)
        top = np.argsort(-best)[:K]
        top = top[np.isfinite(best[top])]
        out[i, : len(top)] = seg_track[bounds[top]]
    return out


def naive_tracks(
    conn, *, queries: np.ndarray, case: FilterCase, limit: int
) -> tuple[np.ndarray, list[float]]:
    """``WHERE … ORDER BY embedding <=> q LIMIT n`` on HNSW at ef_search = n, no fallback → top-10 tracks."""
    from pgvector import Vector

    conn.execute(f"SET hnsw.ef_search = {int(limit)}")
    sql = (
        "SELECT s.track_id FROM segments s JOIN tracks t ON t.id = s.track_id "
        f"WHERE {case.where} ORDER BY s.embedding <=> %s LIMIT {int(limit)}"
    )
    out = np.full((len(queries), K), -1, dtype=np.int64)
    times = []
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        rows = conn.execute(sql, (*case.params[i], Vector(q)), prepare=False).fetchall()
        times.append((time.perf_counter() - t0) * 1000)
        tracks = top_tracks([r[0] - 1 for r in rows], K)
        out[i, : len(tracks)] = tracks
    return out, times


def retrieval_filtered_fn() -> Callable[..., Candidates]:
    """The real filtered-candidate stage of :mod:`retrieval.search` (see :mod:`bench.adapters`)."""
    return filtered_candidates


def train_cells_for(vectors: np.ndarray, *, seed: int) -> tuple[np.ndarray | None, Any, dict[str, float]]:
    """Cells as the product trains them (retrieval/cells.py), for a library of ``vectors [N, 128]``.

    Computed before the COPY so each row is written once with its cell, as an insert into a
    library that has cells does (a later UPDATE of 1M rows would double the table). Returns
    (cell per segment or None below the product's threshold, the CellIndex, timings).
    """
    from retrieval import cells as cells_mod

    n = len(vectors)
    if n < cells_mod.MIN_CELL_SEGMENTS:
        return None, None, {}
    t0 = time.perf_counter()
    n_cells = cells_mod.cells_for(n)
    rng = np.random.default_rng([seed, 3])
    sample = rng.choice(n, size=cells_mod.sample_size(n_segments=n, n_cells=n_cells), replace=False)
    index = cells_mod.fit_cells(x=vectors[np.sort(sample)], n_cells=n_cells, seed=seed)
    t1 = time.perf_counter()
    cells = np.concatenate([index.assign(vectors[lo : lo + 50_000]) for lo in range(0, n, 50_000)])
    sizes = np.bincount(cells, minlength=len(index.centroids))
    info = {
        "n_cells": len(index.centroids),
        "sample": len(sample),
        "train_s": t1 - t0,
        "assign_s": time.perf_counter() - t1,
        "cell_size_p50": float(np.median(sizes)),
        "cell_size_p99": float(np.percentile(sizes, 99)),
    }
    return cells, index, info


def load_with_cells(db: Any, lib: SyntheticLibrary, *, n: int, seed: int, res: dict[str, Any]) -> np.ndarray:
    """Cells trained as the product trains them, the COPY with each row's cell, the centroids stored.

    Their figures (``cells``, ``copy_s``) go into ``res``; returns the segment vectors.
    """
    vectors = lib.segment_vectors(start=0, stop=n)
    cells, cell_index, res["cells"] = train_cells_for(vectors, seed=seed)
    res.update(load_library(db, lib, cells=cells))
    if cell_index is not None:
        from retrieval.cells import write_centroids

        with db.connection() as conn:
            write_centroids(conn, model_version=MODEL_VERSION, index=cell_index, n_segments=n)
            conn.commit()
    return vectors


def exact_route_ms(db, *, queries: np.ndarray, filters: list, n: int = 100) -> list[float]:
    """Latency of retrieval's exact filtered route (best 3 windows of the nearest tracks) per query."""
    from cadenza.db import autocommit
    from retrieval.filters import filter_sql
    from retrieval.track_scan import NearestQuery, exact_per_track

    times = []
    with autocommit(db) as conn:
        for q, f in zip(queries, filters, strict=False):
            where, params = filter_sql(f, model_version=MODEL_VERSION)
            t0 = time.perf_counter()
            exact_per_track(conn, NearestQuery(np.asarray(q, dtype=np.float32), where, params, n))
            times.append((time.perf_counter() - t0) * 1000)
    return times


def search_stages(db, *, embedder: Any, clips: list[Path], warmup: int = 2) -> dict[str, Any]:
    """Per-stage latency of the whole ``retrieval.search.search`` over the synthetic library in ``db``.

    The real ``embedder`` embeds each audio query; :class:`~bench.query_stages.AsModelVersion`
    lets search read the rows written under :data:`MODEL_VERSION`. The score calibration is
    measured first, as ingest does after adding tracks: search would otherwise measure it
    inside the first query.
    """
    from cadenza.db import autocommit
    from retrieval.calibration import calibrate

    t0 = time.perf_counter()
    with autocommit(db) as conn, conn.transaction():
        calibrate(conn, model_version=MODEL_VERSION)
    calibrate_s = time.perf_counter() - t0
    measured = measure_stages(
        db=db, embedder=AsModelVersion(embedder, MODEL_VERSION), clips=clips, k=K, warmup=warmup
    )
    return {**measured, "calibrate_s": calibrate_s}
