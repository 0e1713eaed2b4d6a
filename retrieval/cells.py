"""Coarse cells (an inverted file in plain SQL) so filtered search stays fast on a large library.

pgvector 0.6 filters *after* its HNSW beam search, so a filter that removes the query's own
neighbourhood ("not this composer") finds too few rows; an exact scan is right but costs
~1.6 s at 1M segments. Instead every segment carries a ``cell``: the nearest of ~N/64
k-means centroids (spherical, trained on a sample per model version). A filtered search
orders the centroids by distance to the query and scans only the nearest cells' rows
(btree on ``segments.cell``), widening until enough distinct tracks pass the filter
(:func:`retrieval.nearest.nearest`).

Maintenance, per model version:

* new segments get the nearest existing centroid when they are written
  (:func:`assign_cells`, called by :func:`retrieval.store.copy_segments`);
* :func:`maintain_cells` (re)trains when the library has no cells yet and reached
  :data:`MIN_CELL_SEGMENTS`, or grew :data:`RETRAIN_GROWTH` times past the size the cells were
  trained on — call it once after a bulk import; :func:`train_cells` retrains unconditionally
  (``cadenza reindex``). Libraries below :data:`MIN_CELL_SEGMENTS` need no cells: an exact
  scan of their filtered rows is fast.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import psycopg
from pgvector import Vector

from cadenza.db import Database, autocommit

log = logging.getLogger(__name__)

#: Segments per cell the training aims at. Small cells (about one track's worth of windows)
#: order far better than sqrt(N)-sized ones: at 100K synthetic segments, probing until 40
#: allowed tracks were seen gave "exclude own composer" recall@10 0.98 with 64-row cells
#: against 0.88 with 250-row cells for the same rows scanned.
CELL_SIZE = 64
MAX_CELLS = 16_384
#: Below this many segments of a model version no cells are trained (the exact scan is fast).
MIN_CELL_SEGMENTS = 50_000
#: Retrain when the library grew this many times past the size the cells were trained on.
RETRAIN_GROWTH = 2.0
SAMPLE_PER_CELL = 24
MAX_SAMPLE = 400_000
KMEANS_ITERS = 8
#: Each segment is compared with the fine centroids of its nearest few coarse groups.
ASSIGN_COARSE = 3
FETCH_CHUNK = 50_000


@dataclass
class CellState:
    model_version: str
    n_cells: int
    n_segments: int  # segments of the model version when trained
    moved: int = 0  # segments whose cell the last training changed


# --- pure k-means ------------------------------------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def nearest_centroid(*, x: np.ndarray, centroids: np.ndarray, chunk: int = 16_384) -> np.ndarray:
    """Index of the most cosine-similar centroid per row: ``x [N, d]``, ``centroids [C, d]`` (unit) → ``[N]``."""
    out = np.empty(len(x), dtype=np.int64)
    for lo in range(0, len(x), chunk):
        out[lo : lo + chunk] = np.argmax(x[lo : lo + chunk] @ centroids.T, axis=1)
    return out


def spherical_kmeans(*, x: np.ndarray, k: int, iters: int = KMEANS_ITERS, seed: int = 0) -> np.ndarray:
    """``k`` unit centroids of unit rows ``x [N, d]`` → ``[k, d]`` float32 (k ≤ N).

    Empty clusters are re-seeded from the rows farthest from their centroid, so every
    centroid ends up owning rows.
    """
    rng = np.random.default_rng(seed)
    k = max(1, min(k, len(x)))
    cent = x[rng.choice(len(x), size=k, replace=False)].copy()
    for _ in range(iters):
        sims = x @ cent.T if k * len(x) <= 50_000_000 else None
        assign = np.argmax(sims, axis=1) if sims is not None else nearest_centroid(x=x, centroids=cent)
        sums = np.zeros_like(cent)
        np.add.at(sums, assign, x)
        counts = np.bincount(assign, minlength=k)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            own = np.einsum("ij,ij->i", x, cent[assign])
            sums[empty] = x[np.argsort(own)[: len(empty)]]
        cent = _unit(sums)
    return cent


def train_centroids(*, x: np.ndarray, n_cells: int, seed: int = 0) -> np.ndarray:
    """Two-level spherical k-means: ``x [N, d]`` → about ``n_cells`` unit centroids ``[C, d]``.

    A flat k-means with 16K centroids costs ~1e12 flops per pass on a 300K-row sample; a
    coarse k-means (√C groups) followed by one inside each group costs ~2√C/C of that and
    orders cells almost as well.
    """
    x = _unit(np.asarray(x, dtype=np.float32))
    n_cells = max(1, min(n_cells, len(x)))
    n_coarse = max(1, int(round(math.sqrt(n_cells))))
    coarse = spherical_kmeans(x=x, k=n_coarse, seed=seed)
    group = nearest_centroid(x=x, centroids=coarse)
    parts = []
    for g in range(len(coarse)):
        rows = x[group == g]
        if len(rows) == 0:
            continue
        k = max(1, int(round(n_cells * len(rows) / len(x))))
        parts.append(spherical_kmeans(x=rows, k=k, seed=seed + 1 + g))
    return np.concatenate(parts).astype(np.float32)


@dataclass
class CellIndex:
    """Fine centroids plus their coarse grouping, for fast bulk assignment."""

    centroids: np.ndarray  # [C, d] unit
    coarse: np.ndarray  # [G, d] unit
    members: list[np.ndarray]  # per coarse group: indices into centroids

    @classmethod
    def build(cls, centroids: np.ndarray, *, seed: int = 0) -> CellIndex:
        n_coarse = max(1, int(round(math.sqrt(len(centroids)))))
        coarse = spherical_kmeans(x=centroids, k=n_coarse, seed=seed)
        owner = nearest_centroid(x=centroids, centroids=coarse)
        return cls(centroids, coarse, [np.flatnonzero(owner == g) for g in range(len(coarse))])

    def assign(self, x: np.ndarray) -> np.ndarray:
        """Nearest fine centroid among those of the :data:`ASSIGN_COARSE` nearest groups → ``[N]``."""
        x = _unit(np.asarray(x, dtype=np.float32))
        m = min(ASSIGN_COARSE, len(self.coarse))
        near = np.argsort(-(x @ self.coarse.T), axis=1)[:, :m]  # [N, m]
        best = np.full(len(x), -np.inf, dtype=np.float32)
        out = np.zeros(len(x), dtype=np.int64)
        for g, members in enumerate(self.members):
            rows = np.flatnonzero((near == g).any(axis=1))
            if len(rows) == 0 or len(members) == 0:
                continue
            sims = x[rows] @ self.centroids[members].T
            j = np.argmax(sims, axis=1)
            s = sims[np.arange(len(rows)), j]
            better = s > best[rows]
            best[rows[better]] = s[better]
            out[rows[better]] = members[j[better]]
        return out


def cells_for(n_segments: int) -> int:
    """How many cells a library of ``n_segments`` gets (~:data:`CELL_SIZE` segments each)."""
    return int(np.clip(n_segments // CELL_SIZE, 1, MAX_CELLS))


def sample_size(*, n_segments: int, n_cells: int) -> int:
    """Rows k-means trains on: :data:`SAMPLE_PER_CELL` per cell, at least 10K, at most :data:`MAX_SAMPLE`."""
    return min(n_segments, max(SAMPLE_PER_CELL * n_cells, 10_000), MAX_SAMPLE)


def fit_cells(*, x: np.ndarray, n_cells: int, seed: int = 0) -> CellIndex:
    """A sample of embeddings ``x [S, d]`` → the trained :class:`CellIndex` (centroids + groups)."""
    return CellIndex.build(train_centroids(x=x, n_cells=n_cells, seed=seed), seed=seed)


# --- the database ------------------------------------------------------------------------------


def cell_state(conn: psycopg.Connection, model_version: str) -> CellState | None:
    """The trained cells of ``model_version`` (None when there are none)."""
    row = conn.execute(
        "SELECT n_cells, n_segments FROM cell_training WHERE model_version = %s", (model_version,)
    ).fetchone()
    return CellState(model_version, int(row[0]), int(row[1])) if row else None


#: A new segment's cell: the nearest fine centroid among those of its ASSIGN_COARSE nearest
#: groups (the rule of :meth:`CellIndex.assign`), ~3·√C distances instead of C.
_ASSIGN_SQL = (
    "(SELECT c.cell FROM cell_centroids c WHERE c.model_version = %(mv)s AND c.grp IN"
    " (SELECT g.grp FROM cell_groups g WHERE g.model_version = %(mv)s ORDER BY g.centroid <=> {v}"
    f" LIMIT {ASSIGN_COARSE}) ORDER BY c.centroid <=> {{v}} LIMIT 1)"
)


def assign_cells(
    conn: psycopg.Connection, *, model_version: str, embeddings: list[np.ndarray]
) -> list[int | None]:
    """The cell of each embedding under ``model_version``'s centroids (all None when it has none)."""
    if not embeddings or cell_state(conn, model_version) is None:
        return [None] * len(embeddings)
    rows = conn.execute(
        "SELECT " + _ASSIGN_SQL.format(v="e.v") + " FROM unnest(%(vs)s::vector[]) WITH ORDINALITY AS e(v, i)"
        " ORDER BY e.i",
        {"mv": model_version, "vs": [Vector(np.asarray(e, dtype=np.float32)) for e in embeddings]},
    ).fetchall()
    return [None if r[0] is None else int(r[0]) for r in rows]


def n_segments(conn: psycopg.Connection, model_version: str) -> int:
    row = conn.execute("SELECT count(*) FROM segments WHERE model_version = %s", (model_version,)).fetchone()
    return int(row[0]) if row else 0


def _fetch_embeddings(conn: psycopg.Connection, ids: np.ndarray) -> np.ndarray:
    """Embeddings of segment ``ids`` (sorted, unique) → ``[len(ids), d]`` float32, in id order."""
    out: list[np.ndarray] = []
    with conn.cursor(binary=True) as cur:  # binary: no text parsing of 128 floats per row
        for lo in range(0, len(ids), FETCH_CHUNK):
            chunk = ids[lo : lo + FETCH_CHUNK].tolist()
            cur.execute("SELECT embedding FROM segments WHERE id = ANY(%s) ORDER BY id", (chunk,))
            out.extend(r[0].to_numpy() for r in cur.fetchall())
    return np.asarray(out, dtype=np.float32)


def train_cells(
    conn: psycopg.Connection,
    *,
    model_version: str,
    n_cells: int | None = None,
    seed: int = 0,
    rebuild_share: float = 0.1,
) -> CellState | None:
    """(Re)train ``model_version``'s cells and (re)assign every segment; ``conn`` in autocommit mode.

    Deterministic for a given set of segments (seeded sample and k-means), so retraining an
    unchanged library rewrites no segment. Rewriting a segment's ``cell`` re-inserts it into
    the HNSW index (~0.6 ms per row at 100K), so when more than ``rebuild_share`` of the rows
    change, the HNSW index is dropped, the table rewritten compactly (CLUSTER, else the old row
    versions double it) and the index rebuilt (~110 s at 1M), all in the same transaction —
    searches wait for it. Returns the new state (None when the model version has no segments).
    """
    t0 = time.perf_counter()
    ids = np.asarray(
        [
            r[0]
            for r in conn.execute(
                "SELECT id FROM segments WHERE model_version = %s ORDER BY id", (model_version,)
            )
        ],
        dtype=np.int64,
    )
    if len(ids) == 0:
        drop_cells(conn, model_version=model_version)
        return None
    n_cells = int(n_cells or cells_for(len(ids)))
    rng = np.random.default_rng([seed, len(ids)])
    n_sample = sample_size(n_segments=len(ids), n_cells=n_cells)
    sample_ids = np.sort(rng.choice(ids, size=n_sample, replace=False))
    index = fit_cells(x=_fetch_embeddings(conn, sample_ids), n_cells=n_cells, seed=seed)
    centroids = index.centroids
    log.info(
        "cells %s: %d centroids trained on %d of %d segments",
        model_version,
        len(centroids),
        n_sample,
        len(ids),
    )

    # Assign first: a COPY in progress blocks every other statement on the connection.
    cells = np.empty(len(ids), dtype=np.int64)
    for lo in range(0, len(ids), FETCH_CHUNK):
        cells[lo : lo + FETCH_CHUNK] = index.assign(_fetch_embeddings(conn, ids[lo : lo + FETCH_CHUNK]))
    with conn.transaction():
        conn.execute(
            "CREATE TEMP TABLE new_cells (id bigint PRIMARY KEY, cell integer NOT NULL) ON COMMIT DROP"
        )
        with (
            conn.cursor() as cur,
            cur.copy("COPY new_cells (id, cell) FROM STDIN WITH (FORMAT BINARY)") as cp,
        ):
            cp.set_types(["int8", "int4"])
            for i, c in zip(ids.tolist(), cells.tolist(), strict=True):
                cp.write_row((i, c))
        changed = int(
            conn.execute(
                "SELECT count(*) FROM new_cells n JOIN segments s ON s.id = n.id WHERE s.cell IS DISTINCT FROM n.cell"
            ).fetchone()[0]  # type: ignore[index]
        )
        rewrite = changed > rebuild_share * len(ids)
        hnsw = _hnsw_indexes(conn) if rewrite else []
        for name, _ in hnsw:
            conn.execute(f'DROP INDEX "{name}"')
        if changed:
            conn.execute(
                "UPDATE segments s SET cell = n.cell FROM new_cells n WHERE s.id = n.id AND s.cell IS DISTINCT FROM n.cell"
            )
        if rewrite:
            # The UPDATE left a dead version of every moved row (the table doubled: 75 → 149 MB at
            # 100K). With the HNSW index gone, rewrite the table compactly, in track order.
            conn.execute("SET LOCAL maintenance_work_mem = '1GB'")
            if conn.execute("SELECT to_regclass('segments_track_idx')").fetchone() != (None,):
                conn.execute("CLUSTER segments USING segments_track_idx")
        if hnsw:
            # The build needs the graph in memory: at the default 64 MB a 1M-row build took ~18 min.
            for _, definition in hnsw:
                conn.execute(definition)  # type: ignore[call-overload]
        write_centroids(conn, model_version=model_version, index=index, n_segments=len(ids))
    if changed:
        conn.execute("ANALYZE segments")
    state = CellState(model_version, len(centroids), len(ids), changed)
    log.info(
        "cells %s: %d cells, %d of %d segments moved%s in %.1f s", model_version, len(centroids), changed,
        len(ids), " (HNSW rebuilt)" if hnsw else "", time.perf_counter() - t0,
    )  # fmt: skip
    return state


def _hnsw_indexes(conn: psycopg.Connection) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        " AND tablename = 'segments' AND indexdef ILIKE '%% USING hnsw %%'"
    ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def write_centroids(
    conn: psycopg.Connection, *, model_version: str, index: CellIndex, n_segments: int
) -> None:
    for table in ("cell_centroids", "cell_groups", "cell_training"):
        conn.execute(f"DELETE FROM {table} WHERE model_version = %s", (model_version,))  # type: ignore[call-overload]
    group_of = np.zeros(len(index.centroids), dtype=np.int64)
    for g, members in enumerate(index.members):
        group_of[members] = g
    with conn.cursor() as cur:
        with cur.copy(
            "COPY cell_groups (model_version, grp, centroid) FROM STDIN WITH (FORMAT BINARY)"
        ) as cp:
            cp.set_types(["text", "int4", "vector"])
            for g, c in enumerate(index.coarse):
                cp.write_row((model_version, g, Vector(c)))
        with cur.copy(
            "COPY cell_centroids (model_version, cell, grp, centroid) FROM STDIN WITH (FORMAT BINARY)"
        ) as cp:
            cp.set_types(["text", "int4", "int4", "vector"])
            for i, c in enumerate(index.centroids):
                cp.write_row((model_version, i, int(group_of[i]), Vector(c)))
    conn.execute(
        "INSERT INTO cell_training (model_version, n_cells, n_segments) VALUES (%s, %s, %s)",
        (model_version, len(index.centroids), n_segments),
    )


def drop_cells(conn: psycopg.Connection, *, model_version: str) -> None:
    """Forget ``model_version``'s cells (its segments' ``cell`` is cleared too)."""
    with conn.transaction():
        conn.execute(
            "UPDATE segments SET cell = NULL WHERE model_version = %s AND cell IS NOT NULL", (model_version,)
        )
        for table in ("cell_centroids", "cell_groups", "cell_training"):
            conn.execute(f"DELETE FROM {table} WHERE model_version = %s", (model_version,))  # type: ignore[call-overload]


def maintain_cells(
    db: Database, *, model_version: str, min_segments: int = MIN_CELL_SEGMENTS, force: bool = False
) -> CellState | None:
    """Keep ``model_version``'s cells fit for its library; call once after a bulk import or reindex.

    Trains when there are no cells and the library has ``min_segments`` segments, retrains
    when it grew :data:`RETRAIN_GROWTH` times past the trained size (or ``force``), and
    otherwise only gives segments still without a cell their nearest centroid. Cells of model
    versions that no longer have segments are removed. Returns the state (None: no cells).
    """
    with autocommit(db) as conn:
        conn.execute(
            "DELETE FROM cell_training c WHERE NOT EXISTS (SELECT 1 FROM segments s WHERE s.model_version = c.model_version)"
        )
        for table in ("cell_centroids", "cell_groups"):
            conn.execute(  # type: ignore[call-overload]
                f"DELETE FROM {table} x WHERE NOT EXISTS"
                " (SELECT 1 FROM cell_training c WHERE c.model_version = x.model_version)"
            )
        state = cell_state(conn, model_version)
        n = n_segments(conn, model_version)
        if (
            force
            or (state is None and n >= min_segments)
            or (state and n >= RETRAIN_GROWTH * state.n_segments)
        ):
            return train_cells(conn, model_version=model_version)
        if state is not None:
            cur = conn.execute(
                "UPDATE segments s SET cell = "
                + _ASSIGN_SQL.format(v="s.embedding")
                + " WHERE s.model_version = %(mv)s AND s.cell IS NULL",
                {"mv": model_version},
            )
            if cur.rowcount:
                log.info("cells %s: %d segments without a cell assigned", model_version, cur.rowcount)
        return state
