"""``cadenza bench scale``: HNSW build, size, latency and (filtered) recall at library sizes.

For each size a fresh embedded PostgreSQL is started in a temporary folder, tuned
(maintenance_work_mem / shared_buffers via ALTER SYSTEM + restart), loaded with a synthetic
clustered library (:mod:`bench.synthetic`) by COPY BINARY, and indexed with HNSW. Then:

* unfiltered top-10: latency p50/p95 and recall@10 against exact numpy search, for several
  ``hnsw.ef_search`` values (recall-vs-ef plot);
* filtered top-10 (exclude the query's composer — the hard case —, include one era, a key,
  and all three together) through the REAL retrieval function (coarse cells from 50K
  segments, exact scan below and as the fallback), against exact filtered ground truth; the
  naive ``WHERE … ORDER BY embedding <=> q`` on HNSW and the exact route alone are measured
  next to it;
* query latency per stage (decode … localize, total) of the whole ``retrieval.search.search``
  on 10-s WAV chord clips embedded by the real checkpoint (:mod:`bench.query_stages`);
* build time, index size, bytes per segment; latency-vs-size plot over all sizes run.
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
from bench.adapters import top_tracks
from bench.metrics import exact_top_k, recall_at_k
from bench.query_stages import STAGES, chord_clips
from bench.report import Report, machine_of_sizes, percentiles
from bench.scale_report import notes, plots, sections
from bench.synthetic import SEGMENTS_PER_TRACK, SyntheticLibrary, make_library
from bench.synthetic_db import (
    DEFAULT_EF,
    EXACT_QUERIES,
    MODEL_VERSION,
    K,
    exact_filtered_tracks,
    exact_route_ms,
    filter_cases,
    load_with_cells,
    naive_tracks,
    retrieval_filtered_fn,
    search_stages,
    timed_knn,
)

log = logging.getLogger(__name__)

EF_SEARCH = (10, 20, 40, 80, 160, 320)
#: Audio queries timed through the whole of retrieval.search at each size (--quick: fewer).
STAGE_QUERIES = 30
STAGE_QUERIES_QUICK = 12


# --- one size -----------------------------------------------------------------------------


def _load_and_index(db: Any, lib: SyntheticLibrary, *, n: int, seed: int, res: dict[str, Any]) -> np.ndarray:
    """Cells, COPY and HNSW for ``lib`` in ``db``; their figures go into ``res``. Returns the vectors."""
    log.info("scale %d: loading %d segments of %d tracks", n, n, lib.n_tracks)
    vectors = load_with_cells(db, lib, n=n, seed=seed, res=res)
    log.info("scale %d: cells %s", n, res["cells"] or "none (below the product's threshold)")
    log.info("scale %d: COPY took %.1f s; building HNSW", n, res["copy_s"])
    res["index"] = pgbench_db.build_hnsw(db)
    log.info(
        "scale %d: HNSW built in %.1f s (%.1f MB)",
        n,
        res["index"]["build_s"],
        res["index"]["hnsw_bytes"] / 1e6,
    )
    return vectors


def _unfiltered(
    db: Any, *, queries: np.ndarray, vectors: np.ndarray, ef_values: tuple[int, ...], res: dict[str, Any]
) -> None:
    """Recall and latency of HNSW top-10 per ef_search, the exact SQL scan and numpy's exact search."""
    n_queries = len(queries)
    # In blocks of 25 queries: a [Q, N] similarity matrix at 1M rows would need GBs.
    truth = np.concatenate(
        [exact_top_k(queries=queries[i : i + 25], library=vectors, k=K) for i in range(0, n_queries, 25)]
    )
    t0 = time.perf_counter()
    for q in queries[: min(50, n_queries)]:
        _ = exact_top_k(queries=q[None], library=vectors, k=K)
    res["numpy_exact_ms"] = (time.perf_counter() - t0) * 1000 / min(50, n_queries)

    unfiltered = []
    with db.connection() as conn:
        timed_knn(conn, queries=queries[:20], ef=DEFAULT_EF)  # warm the cache
        for ef in ef_values:
            found, times = timed_knn(conn, queries=queries, ef=ef)
            unfiltered.append(
                {"ef_search": ef, "recall@10": recall_at_k(found=found, truth=truth), **percentiles(times)}
            )
        conn.execute("SET enable_indexscan = off")
        _found, times = timed_knn(conn, queries=queries[: min(30, n_queries)], ef=DEFAULT_EF)
        res["exact_scan_sql"] = percentiles(times)
        conn.execute("RESET enable_indexscan")
    res["unfiltered"] = unfiltered


def _filtered(
    db: Any, lib: SyntheticLibrary, *, vectors: np.ndarray, fq: np.ndarray, fcomp: np.ndarray, seed: int
) -> list[dict[str, Any]]:
    """Per filter case: the real retrieval route against exact filtered truth, naive HNSW and the exact route."""
    n = len(vectors)
    filtered_fn = retrieval_filtered_fn()
    seg_track = np.arange(n) // SEGMENTS_PER_TRACK
    rows = []
    for case in filter_cases(lib, q_comp=fcomp, seed=seed):
        ftruth = exact_filtered_tracks(vectors, seg_track, fq, case.mask)
        found = np.full((len(fq), K), -1, dtype=np.int64)
        times, routes = [], []
        for i, q in enumerate(fq):
            t0 = time.perf_counter()
            cand = filtered_fn(db, vector=q, filters=case.filters[i], k=K, model_version=MODEL_VERSION)
            times.append((time.perf_counter() - t0) * 1000)
            tracks = top_tracks([t - 1 for t in cand.track_ids], K)
            found[i, : len(tracks)] = tracks
            routes.append(cand.path)
        with db.connection() as conn:
            naive, ntimes = naive_tracks(conn, queries=fq, case=case, limit=100)
        etimes = exact_route_ms(db, queries=fq[:EXACT_QUERIES], filters=case.filters[:EXACT_QUERIES])
        allowed_share = float(np.mean([case.mask(i).mean() for i in range(min(len(fq), 20))]))
        rows.append(
            {
                "filter": case.name,
                "allowed_share": allowed_share,
                "recall@10": recall_at_k(found=found, truth=ftruth),
                **{f"latency_{k}": v for k, v in percentiles(times).items()},
                "routes": {r: routes.count(r) for r in sorted(set(routes))},
                "naive_hnsw_recall@10": recall_at_k(found=naive, truth=ftruth),
                "naive_hnsw_p50": percentiles(ntimes)["p50"],
                "exact_route_p50": percentiles(etimes)["p50"],
            }
        )
        log.info(
            "scale %d: filter %-30s recall %.3f p50 %.1f ms routes %s",
            n, case.name, rows[-1]["recall@10"], rows[-1]["latency_p50"], rows[-1]["routes"],
        )  # fmt: skip
    return rows


def run_size(
    *,
    n: int,
    n_queries: int,
    seed: int,
    workdir: Path,
    ef_values: tuple[int, ...],
    filtered_queries: int,
    embedder: Any,
    clips: list[Path],
) -> dict[str, Any]:
    lib = make_library(n_segments=n, seed=seed)
    home = Path(tempfile.mkdtemp(prefix=f"scale-{n}-", dir=workdir))
    res: dict[str, Any] = {"n_segments": n, "n_tracks": lib.n_tracks, "n_composers": lib.n_composers}
    db = pgbench_db.open_for_hnsw(home, res)
    try:
        vectors = _load_and_index(db, lib, n=n, seed=seed, res=res)
        queries, q_comp = lib.queries(n=n_queries, seed=seed + 1)
        _unfiltered(db, queries=queries, vectors=vectors, ef_values=ef_values, res=res)
        res["filtered"] = _filtered(
            db,
            lib,
            vectors=vectors,
            fq=queries[:filtered_queries],
            fcomp=q_comp[:filtered_queries],
            seed=seed,
        )
        res["query_stages"] = search_stages(db, embedder=embedder, clips=clips)
        st = res["query_stages"]["stages"]
        log.info(
            "scale %d: search per stage p50 %s; routes %s",
            n, ", ".join(f"{s} {st[s]['p50']:.1f}" for s in STAGES), res["query_stages"]["routes"],
        )  # fmt: skip
    finally:
        db.close()
        shutil.rmtree(home, ignore_errors=True)
    return res


# --- the command ----------------------------------------------------------------------------


def run_scale(
    *,
    sizes: list[int],
    out_dir: Path,
    quick: bool,
    seed: int = 0,
    workdir: Path | None = None,
    checkpoint: Path | None = None,
) -> Report:
    from encoder.embed import resolve_embedder

    n_queries = 100 if quick else 300
    filtered_queries = 40 if quick else 100
    ef_values = (10, 40, 160) if quick else EF_SEARCH
    workdir = Path(workdir or tempfile.gettempdir())
    workdir.mkdir(parents=True, exist_ok=True)
    embedder, _spec = resolve_embedder(checkpoint)
    clip_dir = Path(tempfile.mkdtemp(prefix="scale-queries-", dir=workdir))
    results = []
    try:
        clips = chord_clips(n=STAGE_QUERIES_QUICK if quick else STAGE_QUERIES, out_dir=clip_dir, seed=seed)
        per_size: dict[str, Any] = {
            "n_queries": n_queries, "seed": seed, "workdir": workdir, "ef_values": ef_values,
            "filtered_queries": filtered_queries, "embedder": embedder, "clips": clips,
        }  # fmt: skip
        results = [run_size(n=n, **per_size) for n in sizes]
    finally:
        shutil.rmtree(clip_dir, ignore_errors=True)
    report = Report(
        name="scale",
        title="Scale: pgvector HNSW on a synthetic clustered library",
        machine=machine_of_sizes(results),
    )
    report.data = {
        "sizes": results,
        "queries": n_queries,
        "filtered_queries": filtered_queries,
        "k": K,
        "seed": seed,
        "stage_queries": len(clips),
        "model_version": embedder.model_version,
    }
    report.notes += notes(
        results, n_queries=n_queries, filtered_queries=filtered_queries, n_clips=len(clips),
        model_version=embedder.model_version,
    )  # fmt: skip
    sections(report, results)
    report.plots += plots(results, out_dir)
    report.write(out_dir)
    return report
