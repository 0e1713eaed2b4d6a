"""``cadenza bench routes``: filtered-candidate routes side by side on pgvector 0.8, in one run.

For each size one synthetic clustered library (:mod:`bench.synthetic`, as the scale benchmark)
is loaded with its coarse cells (:mod:`retrieval.cells`), indexed with HNSW on ``vector`` and
with a second HNSW on the ``halfvec`` expression, and the four filters of the scale benchmark
are answered by each route of :func:`retrieval.nearest.nearest`:

* ``cells``: the k-means inverted file in SQL built for pgvector 0.6 (exact scan behind it);
* ``iterative strict`` / ``iterative relaxed``: ``hnsw.iterative_scan`` with ``max_scan_tuples``
  (exact scan behind it when the walk stops short of k tracks);
* ``relaxed, streamed``: the relaxed walk read through a cursor until k tracks are in;
* ``halfvec relaxed (streamed)``: the same walks over a half-precision index.

Recall@10 is over tracks against exact numpy ground truth of the allowed rows, latency is the
candidate stage as search calls it, and bytes per segment count what each route needs stored.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import pgbench_db
from bench.adapters import filtered_candidates, top_tracks
from bench.metrics import recall_at_k
from bench.report import Report, fmt, machine_of_sizes, md_table, percentiles
from bench.synthetic import SEGMENTS_PER_TRACK, make_library
from bench.synthetic_db import (
    MODEL_VERSION,
    K,
    exact_filtered_tracks,
    filter_cases,
    load_with_cells,
)

log = logging.getLogger(__name__)

HALFVEC_INDEX = "segments_embedding_halfvec_hnsw"
#: Filtered queries per filter and size (--quick: fewer).
QUERIES = 40
QUERIES_QUICK = 20
#: Recall every kept route must reach; the simplest within this factor of the fastest p50 wins.
RECALL_TARGET = 0.95
WITHIN_FASTEST = 1.2


def routes() -> list[tuple[str, bool, Any]]:
    """(name, iterative, IterativeScan) of each route measured, simplest first."""
    from retrieval.nearest import IterativeScan

    return [
        ("iterative relaxed", True, IterativeScan(order="relaxed_order")),
        ("iterative strict", True, IterativeScan(order="strict_order")),
        ("relaxed, ef 400, 100K tuples", True, IterativeScan(ef_search=400, max_scan_tuples=100_000)),
        ("relaxed, ef 1000, 100K tuples", True, IterativeScan(ef_search=1000, max_scan_tuples=100_000)),
        (
            "relaxed streamed, ef 400",
            True,
            IterativeScan(ef_search=400, max_scan_tuples=100_000, stream=True),
        ),
        (
            "halfvec relaxed, ef 400",
            True,
            IterativeScan(ef_search=400, max_scan_tuples=100_000, halfvec=True),
        ),
        ("cells (pgvector 0.6 route)", False, None),
    ]


def build_halfvec(db: Any) -> dict[str, float]:
    """The HNSW index over ``embedding::halfvec(128)``: build seconds and its bytes."""
    with db.connection() as conn:
        conn.autocommit = True
        build_s = pgbench_db.create_hnsw(
            conn, name=HALFVEC_INDEX, column="(embedding::halfvec(128)) halfvec_cosine_ops"
        )
        size = pgbench_db.fetch_one(conn, "SELECT pg_relation_size(%s::regclass)", (HALFVEC_INDEX,))[0]
    return {"build_s": build_s, "bytes": int(size)}


def storage(db: Any) -> dict[str, int]:
    """Bytes of the heap (+TOAST) and of each index that a route depends on."""
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_relation_size(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = 'segments'::regclass"
        ).fetchall()
        table = pgbench_db.fetch_one(conn, "SELECT pg_table_size('segments')")[0]
        centroids = pgbench_db.fetch_one(
            conn,
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " WHERE c.relkind = 'r' AND c.relname LIKE 'cell%%'",
        )[0]
    return {"table": int(table), "cell_tables": int(centroids), **{str(r[0]): int(r[1]) for r in rows}}


def bytes_per_segment(store: dict[str, int], n: int, *, name: str) -> float:
    """What the route needs per segment: the heap plus its indexes (the cell column is in the heap)."""
    base = store["table"] + store.get("segments_pkey", 0) + store.get("segments_track_idx", 0)
    if name.startswith("cells"):
        extra = store.get("segments_cell_idx", 0) + store["cell_tables"] + store[pgbench_db.HNSW_INDEX]
    elif name.startswith("halfvec"):
        extra = store[HALFVEC_INDEX]
    else:
        extra = store[pgbench_db.HNSW_INDEX]
    return (base + extra) / n


def run_size(*, n: int, n_queries: int, seed: int, workdir: Path) -> dict[str, Any]:
    lib = make_library(n_segments=n, seed=seed)
    home = Path(tempfile.mkdtemp(prefix=f"routes-{n}-", dir=workdir))
    res: dict[str, Any] = {"n_segments": n, "n_tracks": lib.n_tracks}
    db = pgbench_db.open_for_hnsw(home, res)
    try:
        vectors = load_with_cells(db, lib, n=n, seed=seed, res=res)
        log.info("routes %d: loaded in %.1f s; building HNSW (vector)", n, res["copy_s"])
        res["index"] = pgbench_db.build_hnsw(db)
        log.info("routes %d: HNSW built in %.1f s; building HNSW (halfvec)", n, res["index"]["build_s"])
        res["halfvec_index"] = build_halfvec(db)
        log.info("routes %d: halfvec HNSW built in %.1f s", n, res["halfvec_index"]["build_s"])
        with db.connection() as conn:
            conn.autocommit = True
            conn.execute("ANALYZE segments")
        res["storage"] = storage(db)

        queries, q_comp = lib.queries(n=n_queries, seed=seed + 1)
        seg_track = np.arange(n) // SEGMENTS_PER_TRACK
        rows = []
        for case in filter_cases(lib, q_comp=q_comp, seed=seed)[1:]:  # the four filters
            truth = exact_filtered_tracks(vectors, seg_track, queries, case.mask)
            allowed = float(np.mean([case.mask(i).mean() for i in range(min(n_queries, 20))]))
            for name, iterative, scan in routes():
                if name.startswith("cells") and not res["cells"]:  # below the size that has cells
                    continue

                def one(
                    i: int, q: np.ndarray, fs: list = case.filters, it: bool = iterative, sc: Any = scan
                ) -> Any:
                    return filtered_candidates(
                        db, vector=q, filters=fs[i], k=K, model_version=MODEL_VERSION, iterative=it, scan=sc,
                    )  # fmt: skip

                for i in range(min(3, n_queries)):  # warm the pages this route reads
                    one(i, queries[i])
                found = np.full((n_queries, K), -1, dtype=np.int64)
                times, paths = [], []
                for i, q in enumerate(queries):
                    t0 = time.perf_counter()
                    cand = one(i, q)
                    times.append((time.perf_counter() - t0) * 1000)
                    tracks = top_tracks([t - 1 for t in cand.track_ids], K)
                    found[i, : len(tracks)] = tracks
                    paths.append(cand.path)
                recall = recall_at_k(found=found, truth=truth)
                rows.append(
                    {
                        "filter": case.name,
                        "allowed_share": allowed,
                        "route": name,
                        "recall@10": recall,
                        **percentiles(times),
                        "paths": {p: paths.count(p) for p in sorted(set(paths))},
                        "bytes_per_segment": bytes_per_segment(res["storage"], n, name=name),
                    }
                )
                log.info(
                    "routes %d: %-28s %-32s recall %.3f p50 %.1f ms p95 %.1f ms %s",
                    n, case.name, name, recall, rows[-1]["p50"], rows[-1]["p95"], rows[-1]["paths"],
                )  # fmt: skip
        res["filtered"] = rows
    finally:
        db.close()
        shutil.rmtree(home, ignore_errors=True)
    return res


def choose(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per size: the simplest route (order of :func:`routes`) reaching RECALL_TARGET on every filter
    whose worst-filter p50 ratio to the fastest such route stays within WITHIN_FASTEST."""
    names = [r[0] for r in routes()]
    by_route: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_route.setdefault(r["route"], []).append(r)
    ok = {
        name: max(r["p50"] for r in rs)
        for name, rs in by_route.items()
        if min(r["recall@10"] for r in rs) >= RECALL_TARGET
    }
    if not ok:
        return {"route": None, "qualifying": {}}
    fastest = min(ok.values())
    for name in names:
        if name in ok and ok[name] <= WITHIN_FASTEST * fastest:
            return {"route": name, "worst_p50": ok[name], "fastest_worst_p50": fastest, "qualifying": ok}
    return {"route": None, "qualifying": ok}


def run_routes(
    *, sizes: list[int], out_dir: Path, quick: bool, seed: int = 0, workdir: Path | None = None
) -> Report:
    n_queries = QUERIES_QUICK if quick else QUERIES
    workdir = Path(workdir or tempfile.gettempdir())
    workdir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    report = Report(name="routes", title="Filtered-candidate routes on pgvector 0.8, side by side")
    for n in sizes:  # rewritten after each size: a long 1M build never loses the 100K table
        results.append(run_size(n=n, n_queries=n_queries, seed=seed, workdir=workdir))
        report = _report(results, n_queries=n_queries, seed=seed)
        report.write(out_dir)
    return report


def _report(results: list[dict[str, Any]], *, n_queries: int, seed: int) -> Report:
    report = Report(
        name="routes",
        title="Filtered-candidate routes on pgvector 0.8, side by side",
        machine=machine_of_sizes(results),
    )
    for r in results:
        r["choice"] = choose(r["filtered"])
    report.data = {"sizes": results, "queries": n_queries, "k": K, "seed": seed}
    report.notes += [
        f"One run: the same synthetic clustered library per size (as `bench scale`: tracks of {SEGMENTS_PER_TRACK} "
        f"segments), {n_queries} filtered queries per filter from new tracks of random composers, every route on "
        "the same queries. Recall@10 is over tracks against exact numpy top-10 of the allowed rows; latency is "
        "the candidate stage (`retrieval.nearest.nearest` via `bench.adapters.filtered_candidates`, over-fetch 100, "
        "k = 10 distinct tracks) after 3 warm-up queries.",
        "Routes: 'iterative …' is one `ORDER BY embedding <=> q LIMIT 100` with `hnsw.iterative_scan` at "
        "ef_search 100 and the given `hnsw.max_scan_tuples` (default 20,000), then the exact scan when the rows "
        "hold fewer than 10 tracks; 'streamed' reads the same walk through a server-side cursor in batches of "
        "100 until 10 tracks are in (at most 5,000 rows), then exact; 'halfvec' orders by an HNSW index on "
        "`embedding::halfvec(128)`; 'cells' is the k-means inverted file built for pgvector 0.6 (exact behind it). "
        "The 'paths' column counts which of them answered.",
        "Bytes/segment: heap (+TOAST, chroma included) + primary key + track index + the route's own index "
        "(cells: its B-tree and centroid tables as well as HNSW, which the unfiltered route still needs).",
        f"Choice rule: among routes whose recall@10 ≥ {RECALL_TARGET} on every filter, the simplest (table order) "
        f"whose worst-filter p50 is within {WITHIN_FASTEST:.0%} of the fastest such route's.",
        "The machine (2 cores) was shared with other work during the run (load average below): absolute times are pessimistic.",
    ]
    for r in results:
        n = r["n_segments"]
        report.sections.append(
            (
                f"{n:,} segments",
                "HNSW (vector) built in {:.0f} s, {:.0f} B/segment; halfvec HNSW {:.0f} s, {:.0f} B/segment.\n\n".format(
                    r["index"]["build_s"],
                    r["storage"][pgbench_db.HNSW_INDEX] / n,
                    r["halfvec_index"]["build_s"],
                    r["halfvec_index"]["bytes"] / n,
                )
                + md_table(
                    [
                        "filter",
                        "allowed",
                        "route",
                        "recall@10",
                        "p50 ms",
                        "p95 ms",
                        "answered by",
                        "bytes/segment",
                    ],
                    [
                        (
                            x["filter"],
                            f"{x['allowed_share']:.1%}",
                            x["route"],
                            f"{x['recall@10']:.3f}",
                            fmt(x["p50"]),
                            fmt(x["p95"]),
                            ", ".join(f"{k} {v}" for k, v in x["paths"].items()),
                            f"{x['bytes_per_segment']:.0f}",
                        )
                        for x in r["filtered"]
                    ],
                )
                + "\n\n"
                + _choice_line(r["choice"]),
            )
        )
    return report


def _choice_line(choice: dict[str, Any]) -> str:
    if choice.get("route") is None:
        return f"No route reached recall@10 ≥ {RECALL_TARGET} on every filter within the rule; qualifying: {choice['qualifying']}."
    return (
        f"Kept by the rule: **{choice['route']}** (worst-filter p50 {choice['worst_p50']:.1f} ms; fastest qualifying "
        f"{choice['fastest_worst_p50']:.1f} ms)."
    )
