"""Per-track scans of the filtered rows: exact over all of them, or over the cells nearest the query.

HNSW cannot answer "the best window of each allowed track" and loses rows a restrictive filter
drops after its beam search; these scans can. Both return whole :class:`SegmentRow` records, at
most :data:`PER_TRACK` per track, nearest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg

from retrieval.cells import CellState
from retrieval.segment_rows import SEGMENT_COLUMNS, SegmentRow, segment_rows

#: The cell route stops once it has seen this many times ``min_tracks`` distinct allowed tracks
#: AND probed CELL_PROBE_MARGIN times as many cells as the first ``min_tracks`` needed (see
#: :func:`cell_route`; tuned on the synthetic 100K/1M libraries of bench/scale.py).
CELL_TRACK_MARGIN = 6
CELL_PROBE_MARGIN = 2.0
CELL_START_PROBES = 64
#: Past this share of the cells an exact scan of the filtered rows is as cheap and exact.
CELL_MAX_PROBE_SHARE = 0.3
#: Windows kept per track: one track cannot crowd the others out of the candidates.
PER_TRACK = 3


@dataclass(frozen=True)
class NearestQuery:
    """One candidate lookup: up to ``n`` segments nearest ``q`` that pass ``where`` (a WHERE clause
    over ``segments s JOIN tracks t``, :func:`retrieval.filters.filter_sql`, with its ``params``),
    from at least ``min_tracks`` distinct tracks where that many pass."""

    q: np.ndarray
    where: str
    params: Sequence[object]
    n: int
    min_tracks: int = 1

    def enough(self, rows: Sequence[SegmentRow]) -> bool:
        """Whether ``rows`` answer it: ``n`` rows from ``min_tracks`` distinct tracks."""
        return len(rows) >= self.n and len({r.track_id for r in rows}) >= self.min_tracks


def _track_scan(
    conn: psycopg.Connection, query: NearestQuery, *, limit: int, cells: list[int] | None
) -> list[tuple[int, float]]:
    """(track, best distance) of the ``limit`` tracks whose best allowed segment is nearest, best first.

    With ``cells``, only the rows of those cells are scanned.

    One hash aggregate over narrow rows: no sort of the scanned rows, so an exact scan of 1M
    rows needs no temporary files (the windowed sort of full rows took 1.6 s at 1M).
    """
    cond = "s.cell = ANY(%s::int4[]) AND " if cells is not None else ""
    sql = (
        "SELECT s.track_id, min(s.embedding <=> %s) AS d FROM segments s JOIN tracks t ON t.id = s.track_id"
        f" WHERE {cond}{query.where} GROUP BY s.track_id ORDER BY d LIMIT %s"
    )
    args = [query.q, *([cells] if cells is not None else []), *query.params, limit]
    with conn.transaction():
        if cells is None:
            # Exact: HNSW cannot answer "best per track"; keep the planner off index scans anyway.
            conn.execute("SET LOCAL enable_indexscan = off")
        else:
            # A few thousand rows: starting parallel workers costs more than it saves (and far
            # more on a busy machine, where they start late).
            conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            # From ~25 % of the rows the planner prefers a seq scan of ALL segments (measured at
            # 100K); at 1M the cells' few percent must come through their index.
            conn.execute("SET LOCAL enable_seqscan = off")
        rows = conn.execute(sql, args, prepare=False).fetchall()  # type: ignore[call-overload]
    return [(int(r[0]), float(r[1])) for r in rows]


def _rows_of_tracks(conn: psycopg.Connection, query: NearestQuery, tracks: list[int]) -> list[SegmentRow]:
    """The best :data:`PER_TRACK` allowed segments of each of ``tracks`` (full rows), nearest first, at most ``n``.

    Two statements: the window over narrow rows picks the ids, then the full rows come by
    primary key (joined in one statement, the planner chose a seq scan of all segments).
    """
    if not tracks:
        return []
    ids = [
        int(r[0])
        for r in conn.execute(  # type: ignore[call-overload]
            "SELECT id FROM (SELECT id, dist, row_number() OVER (PARTITION BY track_id ORDER BY dist) AS rn FROM"
            " (SELECT s.id, s.track_id, s.embedding <=> %s AS dist FROM segments s"
            f" JOIN tracks t ON t.id = s.track_id WHERE s.track_id = ANY(%s) AND {query.where}) y) x"
            f" WHERE rn <= {PER_TRACK} ORDER BY dist LIMIT %s",
            [query.q, tracks, *query.params, query.n],
            prepare=False,
        ).fetchall()
    ]
    return segment_rows(
        conn.execute(  # type: ignore[call-overload]
            f"SELECT {SEGMENT_COLUMNS}, s.embedding <=> %s AS dist FROM segments s JOIN tracks t ON t.id = s.track_id"
            " WHERE s.id = ANY(%s) ORDER BY dist",
            [query.q, ids],
            prepare=False,
            binary=True,
        ).fetchall()
    )


def exact_per_track(conn: psycopg.Connection, query: NearestQuery) -> list[SegmentRow]:
    """Exact: the best :data:`PER_TRACK` windows of the nearest tracks over ALL filtered rows."""
    tracks = [t for t, _ in _track_scan(conn, query, limit=query.n, cells=None)]
    return _rows_of_tracks(conn, query, tracks)


def cell_route(conn: psycopg.Connection, query: NearestQuery, *, state: CellState) -> list[SegmentRow] | None:
    """Scan the allowed rows of the cells nearest ``q``, widening until the answer is trustworthy.

    Stops when (a) at least ``CELL_TRACK_MARGIN × min_tracks`` distinct allowed tracks were
    seen and (b) the probed cells reach ``CELL_PROBE_MARGIN`` times as far as the first
    ``min_tracks`` tracks needed. Either rule alone was fragile on the synthetic 1M library
    ("exclude own composer": 0.84 when the first probe already held enough tracks); together
    they adapt to where the allowed rows start. Each round scans only the newly added cells
    (a track keeps its best distance over rounds). None when that needs more than
    :data:`CELL_MAX_PROBE_SHARE` of the cells: the caller then scans exactly, which keeps the
    k-results guarantee.
    """
    n, min_tracks = query.n, query.min_tracks
    want = CELL_TRACK_MARGIN * max(1, min_tracks)
    limit = max(n, want)
    max_probes = max(1, min(state.n_cells, int(np.ceil(state.n_cells * CELL_MAX_PROBE_SHARE))))
    order = [
        int(r[0])
        for r in conn.execute(
            "SELECT cell FROM cell_centroids WHERE model_version = %s ORDER BY centroid <=> %s LIMIT %s",
            (state.model_version, query.q, max_probes),
            prepare=False,
        ).fetchall()
    ]
    best: dict[int, float] = {}
    done, probes, first_k = 0, min(len(order), CELL_START_PROBES), 0
    while done < len(order):
        # Per round the best `limit` tracks of the new cells suffice: the overall best `limit`
        # are among the union of each round's best `limit`.
        for tid, d in _track_scan(conn, query, limit=limit, cells=order[done:probes]):
            best[tid] = min(d, best.get(tid, d))
        done = probes
        if not first_k and len(best) >= min_tracks:
            first_k = probes
        if len(best) >= want and first_k and probes >= min(len(order), CELL_PROBE_MARGIN * first_k):
            tracks = sorted(best, key=best.__getitem__)[:n]
            return _rows_of_tracks(conn, query, tracks)
        if probes >= 0.1 * state.n_cells and len(best) * len(order) / probes < want:
            return None  # a very selective filter: even all the allowed cells will not hold enough tracks
        if len(best) < want:  # cells hold ~1 track each: grow by the shortfall, 2×–16× a round
            grow = float(np.clip(1.5 * want / max(len(best), 1), 2.0, 16.0))
        else:
            grow = CELL_PROBE_MARGIN * first_k / probes
        probes = min(len(order), int(np.ceil(probes * grow)))
    return None
