"""The candidate stage of search: up to n nearest segments through every filter, by the right route.

pgvector's HNSW applies a WHERE clause *after* its beam search, so a restrictive filter (e.g.
"not this composer" on clustered data) returns too few rows. pgvector 0.8's iterative scan
returns enough rows but not the right ones there (bench/results/routes.md), so search does not
use it (:data:`SEARCH_USES_ITERATIVE_SCAN`). :func:`nearest` therefore (1) on a library with
coarse cells (:mod:`retrieval.cells`, ≥ 50K segments) scans the filtered rows of the cells
nearest the query, widening until several times k distinct tracks are seen; (2) on a small
library scans the filtered rows exactly; and (3) whenever a route yields too few rows or
distinct tracks, falls back to that exact scan (unprepared statements, since psycopg's prepared
plans ignore planner settings). See :mod:`retrieval.track_scan`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

from retrieval import cells as cells_mod
from retrieval.harmony import Probe, block_similarity
from retrieval.segment_rows import SEGMENT_COLUMNS, SegmentRow, segment_rows
from retrieval.track_scan import NearestQuery, cell_route, exact_per_track

EF_SEARCH_MAX = 1000  # pgvector's upper bound for hnsw.ef_search
#: Added to the cosine distance of a transposed query probe (see :func:`merge_probe`).
TRANSPOSED_PENALTY = 0.02


@dataclass(frozen=True)
class IterativeScan:
    """How pgvector >= 0.8 keeps walking the HNSW graph until a filtered query has its rows.

    ``order``: ``relaxed_order`` (results may come slightly out of order; sorted afterwards) or
    ``strict_order``. ``max_scan_tuples`` bounds the walk (pgvector's default 20,000); past it the
    exact scan answers. ``stream``: read the walk through a server-side cursor until ``min_tracks``
    distinct tracks are in (one track's 60 windows can fill a fixed LIMIT on their own).
    ``halfvec``: order by the half-precision expression index (bench/routes.py builds it).
    """

    order: str = "relaxed_order"
    max_scan_tuples: int = 20_000
    stream: bool = False
    halfvec: bool = False
    ef_search: int | None = None  # None: the over-fetch n (at least 40)


#: The iterative scan, where one is used (bench/results/routes.md compares the alternatives).
ITERATIVE_SCAN = IterativeScan()
#: Whether search lets pgvector >= 0.8 answer filtered queries by an iterative HNSW scan. No:
#: on clustered embeddings the walk misses true neighbours that a filter leaves far from the
#: query ("exclude own composer" at 100K: recall@10 0.47-0.68 for every strict/relaxed/ef/
#: max_scan_tuples/halfvec variant), where the cells route and the exact scan reach >= 0.95
#: (bench/results/routes.md). The server's support is still recorded (Database.supports_iterative_scan).
SEARCH_USES_ITERATIVE_SCAN = False
#: A streamed iterative scan reads at most this many rows before the exact scan takes over.
STREAM_MAX_ROWS = 5_000


@dataclass
class NearestResult:
    rows: list[SegmentRow]
    path: str  # "hnsw" | "hnsw-iterative" | "hnsw-wide" | "cells" | "exact"


#: Up to this many segments, restrictive filters without cells use an exact scan (see ``nearest``).
EXACT_FILTER_MAX_ROWS = 300_000
#: Restrictive filters take the cell route when the model version's cells were trained on at
#: least this many segments (smaller libraries have none: see retrieval/cells.py).
CELL_ROUTE_MIN_ROWS = cells_mod.MIN_CELL_SEGMENTS


def _nearest_sql(where: str, *, halfvec: bool = False) -> str:
    """Nearest segments passing ``where``; parameters: query vector, *where's, query vector, limit."""
    order = "s.embedding::halfvec(128) <=> %s::halfvec(128)" if halfvec else "s.embedding <=> %s"
    return (
        f"SELECT {SEGMENT_COLUMNS}, s.embedding <=> %s AS dist FROM segments s JOIN tracks t ON t.id = s.track_id"
        f" WHERE {where} ORDER BY {order} LIMIT %s"
    )


def _segment_estimate(conn: psycopg.Connection) -> float:
    """The planner's row estimate for segments (cheap: no scan); -1 before the first ANALYZE."""
    row = conn.execute("SELECT reltuples FROM pg_class WHERE oid = 'segments'::regclass").fetchone()
    return float(row[0]) if row else -1.0


def nearest(
    conn: psycopg.Connection,
    query: NearestQuery,
    *,
    restrictive: bool,
    iterative: bool,
    model_version: str | None = None,
    cell_min_rows: int = CELL_ROUTE_MIN_ROWS,
    scan: IterativeScan = ITERATIVE_SCAN,
) -> NearestResult:
    """The ``query``'s segments: ≥ ``query.min_tracks`` distinct tracks whenever that many pass its filter.

    Routes: unfiltered → HNSW (then cells where the library has them, else a wider HNSW; then
    exact); restrictive with trained cells (see :mod:`retrieval.cells`) → the nearest cells,
    widened until enough tracks pass (then exact); restrictive on a small library → exact. ``model_version`` selects the cells
    (default: the first parameter of ``filter_sql``'s clause). ``conn`` must be in autocommit
    mode (each attempt is its own transaction so SET LOCAL is scoped).
    """
    if model_version is None and query.where.startswith("s.model_version = %s") and query.params:
        model_version = str(query.params[0])
    sql = _nearest_sql(query.where, halfvec=iterative and scan.halfvec)
    n = query.n
    state = cells_mod.cell_state(conn, model_version) if model_version and not iterative else None
    if state is not None and state.n_segments < cell_min_rows:
        state = None
    attempts: list[tuple[str, int, int]] = []
    # pgvector < 0.8 filters after the HNSW scan: on clustered data ("not this composer") even
    # ef_search 1000 missed true neighbours (bench scale: recall 0.61 at 100K), and a full set
    # of rows is no sign of the right ones. Restrictive filters therefore take the cell route
    # where cells exist, else up to EXACT_FILTER_MAX_ROWS segments an exact scan (bench
    # scale: p50 153 ms at 100K), and only beyond that HNSW with the exact scan behind it.
    iter_ef = min(scan.ef_search or max(40, n), EF_SEARCH_MAX)
    if iterative and scan.stream:
        streamed = _stream_rows(conn, query, sql=sql, ef=iter_ef, scan=scan)
        if query.enough(streamed):
            return NearestResult(streamed, "hnsw-stream")
    elif iterative:
        attempts.append(("hnsw-iterative", n, iter_ef))
    elif restrictive and state is not None:
        found = cell_route(conn, query, state=state)
        if found is not None:
            return NearestResult(found, "cells")
        return NearestResult(exact_per_track(conn, query), "exact")
    elif not (restrictive and _segment_estimate(conn) <= EXACT_FILTER_MAX_ROWS):
        attempts.append(("hnsw", n, max(40, min(n * (4 if restrictive else 1), EF_SEARCH_MAX))))
        # Unfiltered, HNSW found too few distinct tracks (one track's windows crowd the top
        # rows): where the library has cells they answer that cheaper than ef_search 1000.
        attempts.append(
            ("cells" if state is not None else "hnsw-wide", min(n * 4, EF_SEARCH_MAX), EF_SEARCH_MAX)
        )
    rows: list[SegmentRow] = []
    for name, limit, ef in attempts:
        if name == "cells" and state is not None:
            found = cell_route(conn, query, state=state)
            if found is not None:
                return NearestResult(found, "cells")
            continue
        rows = _hnsw_rows(conn, query, sql=sql, limit=limit, ef=ef, scan=scan if iterative else None)
        if query.enough(rows):
            return NearestResult(rows, name)  # all of them: more candidates for the reranker
    return NearestResult(exact_per_track(conn, query), "exact")


def _hnsw_rows(
    conn: psycopg.Connection,
    query: NearestQuery,
    *,
    sql: str,
    limit: int,
    ef: int,
    scan: IterativeScan | None,
) -> list[SegmentRow]:
    """One HNSW query of ``sql`` (``nearest``'s statement) at ``hnsw.ef_search = ef``; ``scan`` None: no iteration."""
    with conn.transaction():
        _set_scan(conn, ef=ef, scan=scan)
        rows = segment_rows(
            conn.execute(sql, [query.q, *query.params, query.q, limit], binary=True).fetchall()  # type: ignore[call-overload]
        )
    if scan is not None:
        rows.sort(key=lambda r: r.dist)  # relaxed order (or halfvec): slightly out of order
    return rows


def _set_scan(conn: psycopg.Connection, *, ef: int, scan: IterativeScan | None) -> None:
    conn.execute(f"SET LOCAL hnsw.ef_search = {int(ef)}")
    if scan is not None:
        if scan.order not in ("relaxed_order", "strict_order"):
            raise ValueError(f"unknown iterative scan order {scan.order!r}")
        conn.execute(f"SET LOCAL hnsw.iterative_scan = {scan.order}")
        conn.execute(f"SET LOCAL hnsw.max_scan_tuples = {int(scan.max_scan_tuples)}")


def _stream_rows(
    conn: psycopg.Connection, query: NearestQuery, *, sql: str, ef: int, scan: IterativeScan
) -> list[SegmentRow]:
    """Read an iterative HNSW scan in batches of ``n`` until ``n`` rows of ``min_tracks`` tracks are in.

    A server-side cursor keeps the graph walk where it stopped, so a query whose nearest track
    fills the first batch with its own windows reads on instead of paying for an exact scan.
    """
    rows: list[SegmentRow] = []
    with conn.transaction():
        _set_scan(conn, ef=ef, scan=scan)
        with conn.cursor(name="nearest_stream", binary=True) as cur:
            cur.execute(sql, [query.q, *query.params, query.q, STREAM_MAX_ROWS])  # type: ignore[call-overload]
            while batch := cur.fetchmany(query.n):
                rows.extend(segment_rows(batch))
                if query.enough(rows):
                    break
    rows.sort(key=lambda r: r.dist)
    return rows


def probe_nearest(conn: psycopg.Connection, query: NearestQuery, *, iterative: bool) -> NearestResult:
    """Best-effort extra candidates for a transposed query probe: one HNSW query, no fallback.

    The query's own probe (:func:`nearest`) already guarantees k tracks through every filter;
    a transposed probe only adds the moments that are nearer in another key, so one beam search
    (about 1 ms at 1M segments, bench scale) is enough and it never pays for the exact or cell
    routes a second and third time. A restrictive filter may leave it few rows: that is fine.
    """
    n = query.n
    rows = _hnsw_rows(
        conn, query, sql=_nearest_sql(query.where), limit=n, ef=max(40, min(n, EF_SEARCH_MAX)),
        scan=ITERATIVE_SCAN if iterative else None,
    )  # fmt: skip
    return NearestResult(rows, "hnsw-probe")


def merge_probe(
    found: NearestResult, probe: NearestResult, semis: int, probe_of: dict[int, int]
) -> NearestResult:
    """``found`` plus the rows of a transposed probe: per segment the smaller distance wins.

    A probe's distance carries TRANSPOSED_PENALTY, so the query's own key wins a near tie and
    the maximum over three probes does not lift the scores of unrelated moments much (the
    "nothing similar" calibration is fitted on one probe). ``probe_of`` records the winning
    probe's semitones per segment id (updated in place).
    """
    rows = {int(r.id): r for r in found.rows}
    for r in probe.rows:
        sid, dist = int(r.id), float(r.dist) + TRANSPOSED_PENALTY
        if sid not in rows or dist < float(rows[sid].dist):
            rows[sid] = r._replace(dist=dist)
            probe_of[sid] = semis
    return NearestResult(sorted(rows.values(), key=lambda r: r.dist), found.path)


#: The timbre probe reads at most this many nearest segments by timbre (pgvector's ef_search cap)
#: and keeps each track's best: a track's windows share its sound, so they crowd the top rows.
TIMBRE_PROBE_ROWS = 1000


def _timbre_sql(where: str) -> str:
    """Each track's segment nearest a timbre vector, best tracks first; the ``dist`` is still the embedding's.

    Parameters: timbre vector, *where's, timbre version, timbre vector, row limit, embedding, track limit.
    """
    return (
        "WITH near AS (SELECT s.id, s.track_id, s.timbre <=> %s AS td FROM segments s JOIN tracks t ON t.id = s.track_id"
        f" WHERE {where} AND s.timbre IS NOT NULL AND t.timbre_version = %s ORDER BY s.timbre <=> %s LIMIT %s),"
        " best AS (SELECT DISTINCT ON (track_id) id, td FROM near ORDER BY track_id, td)"
        f" SELECT {SEGMENT_COLUMNS}, s.embedding <=> %s AS dist FROM best JOIN segments s ON s.id = best.id"
        " JOIN tracks t ON t.id = s.track_id ORDER BY best.td LIMIT %s"
    )


def timbre_nearest(
    conn: psycopg.Connection,
    *,
    timbre: np.ndarray,
    timbre_version: str,
    embedding: np.ndarray,
    where: str,
    params: list[Any],
    n_tracks: int,
) -> NearestResult:
    """Candidates by sound: the best segment of each of up to ``n_tracks`` tracks nearest ``timbre``.

    A second candidate source next to the embedding's (:func:`nearest`), so a listener who
    weighs the sound aspect gets the library's other music of that sound even when the learned
    embedding ranks it far (the embedding ignores much of timbre). One HNSW walk over the
    timbre index (sql/008_timbre.sql), best effort like :func:`probe_nearest`: the embedding
    route already guarantees k tracks through every filter. Rows carry the *embedding*
    distance, so the reranker scores them like every other candidate.
    """
    t = np.asarray(timbre, dtype=np.float32)
    with conn.transaction():
        conn.execute(f"SET LOCAL hnsw.ef_search = {TIMBRE_PROBE_ROWS}")
        rows = segment_rows(
            conn.execute(  # type: ignore[call-overload]
                _timbre_sql(where),
                [
                    t,
                    *params,
                    timbre_version,
                    t,
                    TIMBRE_PROBE_ROWS,
                    np.asarray(embedding, np.float32),
                    int(n_tracks),
                ],
                prepare=False,
                binary=True,
            ).fetchall()
        )
    return NearestResult(rows, "timbre")


#: Each harmony probe reads this many nearest segments (a track's overlapping windows share their
#: chords, so they crowd the top rows: this many gave >= HARMONY_TRACKS distinct tracks).
HARMONY_PROBE_ROWS = 200


def _harmony_sql(where: str) -> str:
    """Segments nearest one harmony probe. Parameters: probe vector, *where's, probe vector, row limit."""
    return (
        "SELECT s.id, s.track_id, s.harmony <=> %s::halfvec AS hd FROM segments s JOIN tracks t ON t.id = s.track_id"
        f" WHERE {where} AND s.harmony IS NOT NULL ORDER BY s.harmony <=> %s::halfvec LIMIT %s"
    )


def harmony_nearest(
    conn: psycopg.Connection,
    *,
    probes: list[Probe],
    embedding: np.ndarray,
    where: str,
    params: list[Any],
    n_tracks: int,
) -> NearestResult:
    """Candidates by harmony: the best segment of each of up to ``n_tracks`` tracks nearest the query's
    chord sequence (:mod:`retrieval.harmony`), best first.

    A second candidate source next to the embedding's (:func:`nearest`), like :func:`timbre_nearest`:
    a clip through a phone line whose embedding lands far from its own recording is still found
    by its chords. One HNSW walk per probe over the harmony index (sql/009_harmony.sql), best
    effort; rows carry the *embedding* distance, so the reranker scores them like every other.
    """
    if not probes or n_tracks <= 0:
        return NearestResult([], "harmony")
    best: dict[int, tuple[float, int]] = {}  # track -> (block similarity, segment id)
    with conn.transaction():
        conn.execute(f"SET LOCAL hnsw.ef_search = {HARMONY_PROBE_ROWS}")
        for p in probes:
            v = np.asarray(p.vector, np.float32)
            got = conn.execute(  # type: ignore[call-overload]
                _harmony_sql(where), [v, *params, v, HARMONY_PROBE_ROWS], prepare=False, binary=True
            ).fetchall()
            for sid, tid, hd in got:
                sim = block_similarity(hd, p)
                if sim > best.get(int(tid), (-np.inf, 0))[0]:
                    best[int(tid)] = (sim, int(sid))
        top = sorted(best.values(), reverse=True)[:n_tracks]
        if not top:
            return NearestResult([], "harmony")
        rows = segment_rows(
            conn.execute(  # type: ignore[call-overload]
                f"SELECT {SEGMENT_COLUMNS}, s.embedding <=> %s AS dist FROM segments s"
                " JOIN tracks t ON t.id = s.track_id WHERE s.id = ANY(%s)",
                [np.asarray(embedding, np.float32), [sid for _, sid in top]],
                binary=True,
            ).fetchall()
        )
    order = {sid: i for i, (_, sid) in enumerate(top)}
    return NearestResult(sorted(rows, key=lambda r: order[int(r.id)]), "harmony")
