"""Search: query → filtered nearest segments (keeping k) → rerank → diversity → localize → match, likeness.

Filters must not cost results. pgvector's HNSW applies a WHERE clause *after* its beam
search, so a restrictive filter (e.g. "not this composer" on clustered data) returns too
few rows (FACTS.md). pgvector 0.8's iterative scan returns enough rows but not the right ones
there (bench/results/routes.md), so search does not use it (:data:`SEARCH_USES_ITERATIVE_SCAN`).
We therefore (1) on a library with coarse cells (:mod:`retrieval.cells`, ≥ 50K segments),
scan the filtered rows of the cells nearest the query, widening until several times k
distinct tracks are seen; (2) on a small library scan the filtered rows exactly; and (3)
whenever a route yields too few rows or distinct tracks, fall back to that exact scan
(unprepared statements, since psycopg's prepared plans ignore planner settings).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

from cadenza.db import autocommit, f16_array
from cadenza.errors import InputError
from cadenza.settings import LimitSettings
from encoder.features import FPS
from encoder.windowing import DEFAULT_WINDOWING
from retrieval import cells as cells_mod
from retrieval import context as context_mod
from retrieval import melody_search
from retrieval import query as query_mod
from retrieval.calibration import NOTHING_SIMILAR_BELOW, SAME_PASSAGE_MATCH, Calibration, load_calibration
from retrieval.descriptors import KEY_NAMES, key_index
from retrieval.likeness import likeness
from retrieval.localize import localize
from retrieval.rerank import Candidate, aspect_scores, moves, reason, score_candidates
from retrieval.store import heard_composers, model_mismatch, other_models
from retrieval.types import Aspects, Filters, Result, SearchRequest, SearchResponse, check_diversity

log = logging.getLogger(__name__)

MAX_K = 100
EF_SEARCH_MAX = 1000  # pgvector's upper bound for hnsw.ef_search
RERANK_POOL = 200
#: Added to the cosine distance of a transposed query probe (see :func:`_merge_probe`).
TRANSPOSED_PENALTY = 0.02

_COLUMNS = (
    "s.id, s.track_id, s.start_s, s.end_s, t.title, t.composer, t.work, t.era, t.path, t.duration_s,"
    " s.chroma_mean, s.chroma_seq, s.key_index, s.mode, s.key_confidence, s.tempo_bpm, s.loudness_db,"
    " s.brightness_hz, s.onset_density, s.valence, s.arousal, s.embedding"
)


def filter_sql(
    filters: Filters, *, model_version: str, extra_exclude: tuple[int, ...] = ()
) -> tuple[str, list[Any]]:
    """A WHERE clause (over ``segments s JOIN tracks t``) and its parameters."""
    where = ["s.model_version = %s"]
    params: list[Any] = [model_version]

    def lower(xs: tuple[str, ...]) -> list[str]:
        return [x.strip().lower() for x in xs if x and x.strip()]

    for col, inc, exc in (
        ("t.composer", filters.composers, filters.exclude_composers),
        ("t.work", filters.works, filters.exclude_works),
        ("t.era", filters.eras, filters.exclude_eras),
    ):
        if lower(inc):
            where.append(f"lower({col}) = ANY(%s)")
            params.append(lower(inc))
        if lower(exc):
            where.append(f"lower({col}) <> ALL(%s)")
            params.append(lower(exc))
    if filters.tracks:
        where.append("s.track_id = ANY(%s)")
        params.append(list(filters.tracks))
    excluded = sorted(set(filters.exclude_tracks) | set(extra_exclude))
    if excluded:
        where.append("s.track_id <> ALL(%s)")
        params.append(excluded)
    if filters.key:
        try:
            where.append("s.key_index = %s")
            params.append(key_index(filters.key))
        except ValueError:
            raise InputError(f"key {filters.key!r} is not a note name; use C, C#, Db … B") from None
    if filters.mode:
        if filters.mode not in ("major", "minor"):
            raise InputError(f"mode {filters.mode!r} must be 'major' or 'minor'")
        where.append("s.mode = %s")
        params.append(filters.mode)
    if filters.min_bpm is not None:
        where.append("s.tempo_bpm >= %s")
        params.append(float(filters.min_bpm))
    if filters.max_bpm is not None:
        where.append("s.tempo_bpm <= %s")
        params.append(float(filters.max_bpm))
    return " AND ".join(where), params


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
    rows: list[tuple[Any, ...]]
    path: str  # "hnsw" | "hnsw-iterative" | "hnsw-wide" | "cells" | "exact"


#: Up to this many segments, restrictive filters without cells use an exact scan (see ``nearest``).
EXACT_FILTER_MAX_ROWS = 300_000
#: Restrictive filters take the cell route when the model version's cells were trained on at
#: least this many segments (smaller libraries have none: see retrieval/cells.py).
CELL_ROUTE_MIN_ROWS = cells_mod.MIN_CELL_SEGMENTS
#: The cell route stops once it has seen this many times ``min_tracks`` distinct allowed tracks
#: AND probed CELL_PROBE_MARGIN times as many cells as the first ``min_tracks`` needed (see
#: ``_cell_route``; tuned on the synthetic 100K/1M libraries of bench/scale.py).
CELL_TRACK_MARGIN = 6
CELL_PROBE_MARGIN = 2.0
CELL_START_PROBES = 64
#: Past this share of the cells an exact scan of the filtered rows is as cheap and exact.
CELL_MAX_PROBE_SHARE = 0.3
#: Windows kept per track: one track cannot crowd the others out of the candidates.
PER_TRACK = 3


def _nearest_sql(where: str, *, halfvec: bool = False) -> str:
    """Nearest segments passing ``where``; parameters: query vector, *where's, query vector, limit."""
    order = "s.embedding::halfvec(128) <=> %s::halfvec(128)" if halfvec else "s.embedding <=> %s"
    return (
        f"SELECT {_COLUMNS}, s.embedding <=> %s AS dist FROM segments s JOIN tracks t ON t.id = s.track_id"
        f" WHERE {where} ORDER BY {order} LIMIT %s"
    )


def _segment_estimate(conn: psycopg.Connection) -> float:
    """The planner's row estimate for segments (cheap: no scan); -1 before the first ANALYZE."""
    row = conn.execute("SELECT reltuples FROM pg_class WHERE oid = 'segments'::regclass").fetchone()
    return float(row[0]) if row else -1.0


def nearest(
    conn: psycopg.Connection,
    *,
    q: np.ndarray,
    where: str,
    params: list[Any],
    n: int,
    min_tracks: int,
    restrictive: bool,
    iterative: bool,
    model_version: str | None = None,
    cell_min_rows: int = CELL_ROUTE_MIN_ROWS,
    scan: IterativeScan = ITERATIVE_SCAN,
) -> NearestResult:
    """Up to ``n`` nearest segments matching ``where``, guaranteeing ≥ ``min_tracks`` distinct tracks when they exist.

    Routes: unfiltered → HNSW (then cells where the library has them, else a wider HNSW; then
    exact); restrictive with trained cells (see :mod:`retrieval.cells`) → the nearest cells,
    widened until enough tracks pass (then exact); restrictive on a small library → exact. ``model_version`` selects the cells
    (default: the first parameter of ``filter_sql``'s clause). ``conn`` must be in autocommit
    mode (each attempt is its own transaction so SET LOCAL is scoped).
    """
    if model_version is None and where.startswith("s.model_version = %s") and params:
        model_version = str(params[0])
    sql = _nearest_sql(where, halfvec=iterative and scan.halfvec)

    def enough(rows: list[tuple[Any, ...]]) -> bool:
        return len(rows) >= n and len({r[1] for r in rows}) >= min_tracks

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
        streamed = _stream_rows(
            conn, sql=sql, q=q, params=params, n=n, min_tracks=min_tracks, ef=iter_ef, scan=scan
        )
        if enough(streamed):
            return NearestResult(streamed, "hnsw-stream")
    elif iterative:
        attempts.append(("hnsw-iterative", n, iter_ef))
    elif restrictive and state is not None:
        found = _cell_route(conn, q=q, where=where, params=params, n=n, min_tracks=min_tracks, state=state)
        if found is not None:
            return NearestResult(found, "cells")
        return NearestResult(exact_per_track(conn, q=q, where=where, params=params, n=n), "exact")
    elif not (restrictive and _segment_estimate(conn) <= EXACT_FILTER_MAX_ROWS):
        attempts.append(("hnsw", n, max(40, min(n * (4 if restrictive else 1), EF_SEARCH_MAX))))
        # Unfiltered, HNSW found too few distinct tracks (one track's windows crowd the top
        # rows): where the library has cells they answer that cheaper than ef_search 1000.
        attempts.append(
            ("cells" if state is not None else "hnsw-wide", min(n * 4, EF_SEARCH_MAX), EF_SEARCH_MAX)
        )
    rows: list[tuple[Any, ...]] = []
    for name, limit, ef in attempts:
        if name == "cells" and state is not None:
            found = _cell_route(
                conn, q=q, where=where, params=params, n=n, min_tracks=min_tracks, state=state
            )
            if found is not None:
                return NearestResult(found, "cells")
            continue
        rows = _hnsw_rows(
            conn, sql=sql, q=q, params=params, limit=limit, ef=ef, scan=scan if iterative else None
        )
        if enough(rows):
            return NearestResult(rows, name)  # all of them: more candidates for the reranker
    return NearestResult(exact_per_track(conn, q=q, where=where, params=params, n=n), "exact")


def _hnsw_rows(
    conn: psycopg.Connection,
    *,
    sql: str,
    q: np.ndarray,
    params: list[Any],
    limit: int,
    ef: int,
    scan: IterativeScan | None,
) -> list[tuple[Any, ...]]:
    """One HNSW query of ``sql`` (``nearest``'s statement) at ``hnsw.ef_search = ef``; ``scan`` None: no iteration."""
    with conn.transaction():
        _set_scan(conn, ef=ef, scan=scan)
        rows = conn.execute(sql, [q, *params, q, limit]).fetchall()  # type: ignore[call-overload]
    if scan is not None:
        rows.sort(key=lambda r: r[-1])  # relaxed order (or halfvec): slightly out of order
    return rows


def _set_scan(conn: psycopg.Connection, *, ef: int, scan: IterativeScan | None) -> None:
    conn.execute(f"SET LOCAL hnsw.ef_search = {int(ef)}")
    if scan is not None:
        if scan.order not in ("relaxed_order", "strict_order"):
            raise ValueError(f"unknown iterative scan order {scan.order!r}")
        conn.execute(f"SET LOCAL hnsw.iterative_scan = {scan.order}")
        conn.execute(f"SET LOCAL hnsw.max_scan_tuples = {int(scan.max_scan_tuples)}")


def _stream_rows(
    conn: psycopg.Connection,
    *,
    sql: str,
    q: np.ndarray,
    params: list[Any],
    n: int,
    min_tracks: int,
    ef: int,
    scan: IterativeScan,
) -> list[tuple[Any, ...]]:
    """Read an iterative HNSW scan in batches of ``n`` until ``n`` rows of ``min_tracks`` tracks are in.

    A server-side cursor keeps the graph walk where it stopped, so a query whose nearest track
    fills the first batch with its own windows reads on instead of paying for an exact scan.
    """
    rows: list[tuple[Any, ...]] = []
    with conn.transaction():
        _set_scan(conn, ef=ef, scan=scan)
        with conn.cursor(name="nearest_stream") as cur:
            cur.execute(sql, [q, *params, q, STREAM_MAX_ROWS])  # type: ignore[call-overload]
            while batch := cur.fetchmany(n):
                rows.extend(batch)
                if len(rows) >= n and len({r[1] for r in rows}) >= min_tracks:
                    break
    rows.sort(key=lambda r: r[-1])
    return rows


def probe_nearest(
    conn: psycopg.Connection, *, q: np.ndarray, where: str, params: list[Any], n: int, iterative: bool
) -> NearestResult:
    """Best-effort extra candidates for a transposed query probe: one HNSW query, no fallback.

    The query's own probe (:func:`nearest`) already guarantees k tracks through every filter;
    a transposed probe only adds the moments that are nearer in another key, so one beam search
    (about 1 ms at 1M segments, bench scale) is enough and it never pays for the exact or cell
    routes a second and third time. A restrictive filter may leave it few rows: that is fine.
    """
    sql = _nearest_sql(where)
    rows = _hnsw_rows(
        conn, sql=sql, q=q, params=params, limit=n, ef=max(40, min(n, EF_SEARCH_MAX)),
        scan=ITERATIVE_SCAN if iterative else None,
    )  # fmt: skip
    return NearestResult(rows, "hnsw-probe")


def _track_scan(
    conn: psycopg.Connection,
    *,
    q: np.ndarray,
    where: str,
    params: list[Any],
    limit: int,
    cells: list[int] | None,
) -> list[tuple[int, float]]:
    """(track, best distance) of the ``limit`` tracks whose best allowed segment is nearest, best first.

    With ``cells``, only the rows of those cells are scanned.

    One hash aggregate over narrow rows: no sort of the scanned rows, so an exact scan of 1M
    rows needs no temporary files (the windowed sort of full rows took 1.6 s at 1M).
    """
    cond = "s.cell = ANY(%s::int4[]) AND " if cells is not None else ""
    sql = (
        "SELECT s.track_id, min(s.embedding <=> %s) AS d FROM segments s JOIN tracks t ON t.id = s.track_id"
        f" WHERE {cond}{where} GROUP BY s.track_id ORDER BY d LIMIT %s"
    )
    args = [q, *([cells] if cells is not None else []), *params, limit]
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


def _rows_of_tracks(
    conn: psycopg.Connection, *, q: np.ndarray, where: str, params: list[Any], tracks: list[int], n: int
) -> list[tuple[Any, ...]]:
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
            f" JOIN tracks t ON t.id = s.track_id WHERE s.track_id = ANY(%s) AND {where}) y) x"
            f" WHERE rn <= {PER_TRACK} ORDER BY dist LIMIT %s",
            [q, tracks, *params, n],
            prepare=False,
        ).fetchall()
    ]
    return conn.execute(  # type: ignore[no-any-return]
        f"SELECT {_COLUMNS}, s.embedding <=> %s AS dist FROM segments s JOIN tracks t ON t.id = s.track_id"
        " WHERE s.id = ANY(%s) ORDER BY dist",
        [q, ids],
        prepare=False,
    ).fetchall()


def exact_per_track(
    conn: psycopg.Connection, *, q: np.ndarray, where: str, params: list[Any], n: int
) -> list[tuple[Any, ...]]:
    """Exact: the best :data:`PER_TRACK` windows of the nearest tracks over ALL filtered rows."""
    tracks = [t for t, _ in _track_scan(conn, q=q, where=where, params=params, limit=n, cells=None)]
    return _rows_of_tracks(conn, q=q, where=where, params=params, tracks=tracks, n=n)


def _cell_route(
    conn: psycopg.Connection,
    *,
    q: np.ndarray,
    where: str,
    params: list[Any],
    n: int,
    min_tracks: int,
    state: cells_mod.CellState,
) -> list[tuple[Any, ...]] | None:
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
    want = CELL_TRACK_MARGIN * max(1, min_tracks)
    limit = max(n, want)
    max_probes = max(1, min(state.n_cells, int(np.ceil(state.n_cells * CELL_MAX_PROBE_SHARE))))
    order = [
        int(r[0])
        for r in conn.execute(
            "SELECT cell FROM cell_centroids WHERE model_version = %s ORDER BY centroid <=> %s LIMIT %s",
            (state.model_version, q, max_probes),
            prepare=False,
        ).fetchall()
    ]
    best: dict[int, float] = {}
    done, probes, first_k = 0, min(len(order), CELL_START_PROBES), 0
    while done < len(order):
        # Per round the best `limit` tracks of the new cells suffice: the overall best `limit`
        # are among the union of each round's best `limit`.
        for tid, d in _track_scan(
            conn, q=q, where=where, params=params, limit=limit, cells=order[done:probes]
        ):
            best[tid] = min(d, best.get(tid, d))
        done = probes
        if not first_k and len(best) >= min_tracks:
            first_k = probes
        if len(best) >= want and first_k and probes >= min(len(order), CELL_PROBE_MARGIN * first_k):
            tracks = sorted(best, key=best.__getitem__)[:n]
            return _rows_of_tracks(conn, q=q, where=where, params=params, tracks=tracks, n=n)
        if probes >= 0.1 * state.n_cells and len(best) * len(order) / probes < want:
            return None  # a very selective filter: even all the allowed cells will not hold enough tracks
        if len(best) < want:  # cells hold ~1 track each: grow by the shortfall, 2×–16× a round
            grow = float(np.clip(1.5 * want / max(len(best), 1), 2.0, 16.0))
        else:
            grow = CELL_PROBE_MARGIN * first_k / probes
        probes = min(len(order), int(np.ceil(probes * grow)))
    return None


def _merge_probe(
    found: NearestResult, probe: NearestResult, semis: int, probe_of: dict[int, int]
) -> NearestResult:
    """``found`` plus the rows of a transposed probe: per segment the smaller distance wins.

    A probe's distance carries TRANSPOSED_PENALTY, so the query's own key wins a near tie and
    the maximum over three probes does not lift the scores of unrelated moments much (the
    "nothing similar" calibration is fitted on one probe). ``probe_of`` records the winning
    probe's semitones per segment id (updated in place).
    """
    rows = {int(r[0]): r for r in found.rows}
    for r in probe.rows:
        sid, dist = int(r[0]), float(r[-1]) + TRANSPOSED_PENALTY
        if sid not in rows or dist < float(rows[sid][-1]):
            rows[sid] = (*r[:-1], dist)
            probe_of[sid] = semis
    return NearestResult(sorted(rows.values(), key=lambda r: r[-1]), found.path)


def _candidate(r: tuple[Any, ...]) -> Candidate:
    (sid, tid, start, end, title, composer, work, era, path, duration, cmean, cseq, key, mode, kconf, tempo, loud,
     bright, dens, val, aro, emb, dist) = r  # fmt: skip
    return Candidate(
        segment_id=int(sid), track_id=int(tid), start_s=float(start), end_s=float(end), emb_sim=1.0 - float(dist),
        title=title, composer=composer, work=work, era=era, path=path,
        chroma_mean=np.asarray(cmean, dtype=np.float64), chroma_seq=f16_array(cseq), embedding=emb.to_numpy(),
        descriptors={
            "key_index": key, "key": KEY_NAMES[key] if key is not None else None, "mode": mode,
            "key_confidence": kconf, "tempo_bpm": tempo, "loudness_db": loud, "brightness_hz": bright,
            "onset_density": dens, "valence": val, "arousal": aro, "duration_s": float(duration),
        },
    )  # fmt: skip


ROUTES = ("auto", "melody", "audio")


def _sung(request: SearchRequest, info: dict[str, Any], timings: dict[str, float]) -> Any:
    """The query's tune when ``request`` goes the melody route (see :mod:`retrieval.melody_search`), else None.

    A cheap test first (the salience pitch's harmonic share, ~10 ms), so a clip of several
    instruments never pays for the pitch tracker; then PESTO decides. InputError when
    ``route="melody"`` is forced on a clip with too little tune in it.
    """
    if request.route not in ROUTES:
        raise InputError(f"route must be one of {', '.join(ROUTES)}, got {request.route!r}")
    if request.audio is None or request.moments or request.minus or request.route == "audio":
        return None
    t0 = time.perf_counter()
    y = melody_search.melody_clip(audio=request.audio, start_s=request.start_s, duration_s=request.duration_s)
    if request.route == "auto" and melody_search.quick_share(y=y) < melody_search.SINGLE_VOICE_MIN_SHARE:
        timings["pitch"] = (time.perf_counter() - t0) * 1000
        return None
    sung = melody_search.sung_query(y=y)
    timings["pitch"] = (time.perf_counter() - t0) * 1000
    info["melody"] = sung.to_json()
    if request.route == "melody" and not sung.enough_tune:
        raise InputError(
            "there is too little tune in the clip to search by melody; hum or whistle at least a few notes"
        )
    return sung if request.route == "melody" or sung.single_voice else None


def search(
    *,
    db: Any,
    embedder: Any,
    request: SearchRequest,
    min_clip_s: float = LimitSettings.min_clip_seconds,
    max_clip_s: float = LimitSettings.max_clip_seconds,
) -> SearchResponse:
    """Run one search (see the module docstring). Raises InputError / NotFound for bad requests."""
    t_all = time.perf_counter()
    if not 1 <= request.k <= MAX_K:
        raise InputError(f"k must be between 1 and {MAX_K}, got {request.k}")
    check_diversity(request.diversity)
    aspects = (request.aspects or Aspects()).validated()
    timings: dict[str, float] = {}
    with autocommit(db) as conn:
        built = query_mod.build(
            conn, request=request, embedder=embedder, min_clip_s=min_clip_s, max_clip_s=max_clip_s
        )
        timings.update(built.timings_ms)
        info = dict(built.info)
        info["model_version"] = embedder.model_version
        if built.nothing_reason:
            info["nothing_reason"] = built.nothing_reason
            timings["total"] = (time.perf_counter() - t_all) * 1000
            return SearchResponse(query=info, results=[], nothing_similar=True, timings_ms=_round(timings))

        t0 = time.perf_counter()
        where, params = filter_sql(
            request.filters, model_version=embedder.model_version, extra_exclude=built.exclude_tracks
        )
        sung = _sung(request, info, timings)
        if sung is not None:
            t0 = time.perf_counter()
            hits = melody_search.search_melody(
                conn, sung=sung, where=where, params=params, k=request.k, one_per_track=request.one_per_track
            )
            info.update(hits.info)
            timings["search"] = (time.perf_counter() - t0) * 1000
            timings["total"] = (time.perf_counter() - t_all) * 1000
            return SearchResponse(
                query=info,
                results=hits.results,
                nothing_similar=hits.nothing_similar,
                timings_ms=_round(timings),
            )
        info["route"] = "audio"
        n = min(max(10 * request.k, 100), EF_SEARCH_MAX)
        iterative = SEARCH_USES_ITERATIVE_SCAN and bool(getattr(db, "supports_iterative_scan", False))
        found = nearest(
            conn, q=built.profile.embedding, where=where, params=params, n=n,
            min_tracks=request.k if request.one_per_track else 1,
            restrictive=request.filters.active or bool(built.exclude_tracks),
            iterative=iterative, model_version=embedder.model_version,
        )  # fmt: skip
        probe_of: dict[int, int] = {}  # segment id -> semitones of the probe that found it
        for semis, q in built.profile.transposed:
            # A passage in another key ranks near the top of its probe or not at all: 3k rows do.
            probe = probe_nearest(
                conn, q=q, where=where, params=params, n=min(n, max(3 * request.k, 30)), iterative=iterative
            )
            found = _merge_probe(found, probe, semis, probe_of)
        if not found.rows and (others := other_models(conn, embedder.model_version)):
            # Not "nothing similar": a reindex under this running server left it on an old model.
            raise model_mismatch(embedder.model_version, others)
        # Play history is read only when its switch is on: off, nothing of it reaches the ranking.
        heard = (
            frozenset(heard_composers(conn, request.listener_id))
            if request.listener_id and request.context.history
            else None
        )
        cal = load_calibration(conn, model_version=embedder.model_version)
        timings["search"] = (time.perf_counter() - t0) * 1000

        t0 = time.perf_counter()
        # The reranker sees the best RERANK_POOL rows by embedding (plenty for k ≤ 100 after NMS).
        pool = [
            _candidate(r) for r in sorted(found.rows, key=lambda r: r[-1])[: max(RERANK_POOL, 5 * request.k)]
        ]
        applied = context_mod.apply(request, heard=heard)
        cands = score_candidates(
            candidates=pool, query=built.profile, aspects=aspects, tempo_factor=request.tempo_factor,
            **applied.rerank_kwargs(),
        )  # fmt: skip
        for c in pool:
            if probe_of.get(c.segment_id):
                c.components["query_transposed"] = float(probe_of[c.segment_id])
        matches = _matches(cands, built, cal)
        same = frozenset(sid for sid, m in matches.items() if m >= SAME_PASSAGE_MATCH)
        scored = cands
        cands, chosen = context_mod.rank(
            pool,
            k=request.k,
            one_per_track=request.one_per_track,
            diversity=request.diversity,
            same_passage=same,
        )
        moved = moves(ranked=cands, chosen=chosen)
        liked = _likeness(scored, chosen, same, n_tracks=_track_count(conn))
        timings["rerank"] = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        info["context"] = context_mod.report(
            request=request, applied=applied, pool=pool, shown=chosen, same_passage=same
        )
        timings["context"] = (time.perf_counter() - t0) * 1000

        t0 = time.perf_counter()
        tids = sorted({c.track_id for c in chosen})
        chroma_rows = (
            conn.execute(
                "SELECT track_id, chroma FROM track_chroma WHERE track_id = ANY(%s)", (tids,)
            ).fetchall()
            if tids
            else []
        )
        chromas = {int(t): f16_array(b) for t, b in chroma_rows}
        timings["localize"] = 0.0
        results = _results(chosen, built, chromas, matches, liked, moved)
        timings["localize"] = (time.perf_counter() - t0) * 1000

    top_conf = results[0].match if results else 0.0
    nothing = not results or top_conf < NOTHING_SIMILAR_BELOW
    info.update({"ann": found.path, "candidates": len(found.rows), "calibrated": cal is not None})
    info["diversity"] = request.diversity
    info["aspects"] = {"sound": aspects.sound, "harmony": aspects.harmony, "rhythm": aspects.rhythm,
                       "melody": aspects.melody}  # fmt: skip
    info["key_probes"] = [0, *(s for s, _ in built.profile.transposed)]  # semitones the query was searched at
    if heard:  # a listener who has played something (the rate is 1 by definition otherwise)
        info["discovery_rate"] = (
            round(float(np.mean([r.composer.lower() not in heard for r in results])), 3) if results else 0.0
        )
    if nothing:
        info["nothing_reason"] = "no library moment stands out from the rest for this query"
    timings["total"] = (time.perf_counter() - t_all) * 1000
    return SearchResponse(query=info, results=results, nothing_similar=nothing, timings_ms=_round(timings))


def _matches(cands: list[Candidate], built: Any, cal: Calibration | None) -> dict[int, float]:
    """Per candidate segment: the calibrated probability that it is the query's passage."""
    if cal is None:  # fewer than two tracks: no distribution to compare with; be modest
        return {c.segment_id: float(np.clip(c.emb_sim, 0.0, 1.0)) * 0.5 for c in cands}
    mu = cal.query_mean(built.profile.embedding)
    return {c.segment_id: cal.confidence(score=c.emb_sim, query_mean=mu) for c in cands}


def _track_count(conn: psycopg.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM tracks").fetchone()[0])  # type: ignore[index]


def _likeness(
    scored: list[Candidate], chosen: list[Candidate], same: frozenset[int], *, n_tracks: int
) -> dict[int, float]:
    """Per chosen segment: its likeness (retrieval.likeness) among the other tracks scored for this query."""
    best: dict[int, float] = {}
    same_tracks = {c.track_id for c in scored if c.segment_id in same}
    for c in scored:  # best first: the first row of a track is its best
        if c.track_id not in same_tracks:
            best.setdefault(c.track_id, c.score)
    n = max(n_tracks - len(same_tracks) - 1, 1)
    out: dict[int, float] = {}
    for c in chosen:
        if c.segment_id in same or c.track_id in same_tracks:
            out[c.segment_id] = 100.0
            continue
        others = np.array([v for t, v in best.items() if t != c.track_id])
        out[c.segment_id] = likeness(score=c.score, other_best=others, n_tracks=n)
    return out


def _results(
    chosen: list[Candidate],
    built: Any,
    chromas: dict[int, np.ndarray],
    matches: dict[int, float],
    liked: dict[int, float],
    moved: list[tuple[int, str]],
) -> list[Result]:
    q_len = len(built.chroma10) / FPS if len(built.chroma10) else DEFAULT_WINDOWING.window_s
    out = []
    for rank, (c, (n_moved, why)) in enumerate(zip(chosen, moved, strict=True), start=1):
        start, loc_score = c.start_s, 0.0
        chroma = chromas.get(c.track_id)
        if chroma is not None and len(chroma) and len(built.chroma10):
            start, loc_score = localize(
                query_chroma=built.chroma10, track_chroma=chroma, approx_start_s=c.start_s, shift=c.key_shift
            )
        duration = float(c.descriptors.get("duration_s") or c.end_s)
        comps = dict(c.components)
        comps["localization"] = round(loc_score, 4)
        out.append(
            Result(
                rank=rank, segment_id=c.segment_id, track_id=c.track_id, title=c.title, composer=c.composer,
                work=c.work, era=c.era, path=c.path, start=round(float(start), 2),
                end=round(float(min(start + q_len, duration)), 2), score=round(c.score, 4),
                match=round(matches[c.segment_id], 3), likeness=round(liked[c.segment_id], 1),
                components=comps, aspects=aspect_scores(c.components),
                descriptors={k: v for k, v in c.descriptors.items() if k != "duration_s"},
                key_shift=c.key_shift, reason=reason(c), moved=n_moved, moved_reason=why,
            )
        )  # fmt: skip
    return out


def _round(t: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in t.items()}
