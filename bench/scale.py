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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench import pgbench_db
from bench.adapters import Candidates, filtered_candidates, top_tracks
from bench.metrics import exact_top_k, recall_at_k
from bench.query_stages import STAGES, AsModelVersion, chord_clips, measure_stages
from bench.report import (
    Report,
    db_versions,
    fmt,
    machine_info,
    md_table,
    percentiles,
    pyplot,
    save_plot,
)
from bench.synthetic import (
    ERAS,
    SEGMENT_HOP_S,
    SEGMENTS_PER_TRACK,
    TRACK_CHROMA_FPS,
    TRACK_SECONDS,
    SyntheticLibrary,
    make_library,
)

log = logging.getLogger(__name__)

EF_SEARCH = (10, 20, 40, 80, 160, 320)
DEFAULT_EF = 40
MODEL_VERSION = "bench-synthetic"
K = 10
KEYS = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
COPY_CHUNK = 20_000
#: Filtered queries per filter also timed through the exact route, for comparison (slow at 1M).
EXACT_QUERIES = 10
#: Audio queries timed through the whole of retrieval.search at each size (--quick: fewer).
STAGE_QUERIES = 30
STAGE_QUERIES_QUICK = 12
#: Issue #4: query latency p50 ≤ 50 ms at 1M segments, without the LLM.
TARGET_P50_MS = 50.0


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


def exact_route_ms(db, *, queries: np.ndarray, filters: list, n: int = 100) -> list[float]:
    """Latency of retrieval's exact filtered route (best 3 windows of the nearest tracks) per query."""
    from cadenza.db import autocommit
    from retrieval.filters import filter_sql
    from retrieval.track_scan import exact_per_track

    times = []
    with autocommit(db) as conn:
        for q, f in zip(queries, filters, strict=False):
            where, params = filter_sql(f, model_version=MODEL_VERSION)
            t0 = time.perf_counter()
            exact_per_track(conn, q=np.asarray(q, dtype=np.float32), where=where, params=params, n=n)
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


def stage_table(results: list[dict[str, Any]]) -> str:
    """One row per size: p50 (p95) ms of each stage, the candidate routes, the stages' data."""
    rows = []
    for r in results:
        qs = r["query_stages"]
        st = qs["stages"]
        rows.append(
            (
                r["n_segments"],
                *(f"{fmt(st[s]['p50'])} ({fmt(st[s]['p95'])})" for s in STAGES),
                ", ".join(f"{k} {v}" for k, v in qs["routes"].items()),
                f"{qs['progression_share']:.0%} / {qs['localized_share']:.0%}",
            )
        )
    return md_table(
        [
            "segments",
            *STAGES,
            "candidate route",
            "results with progression / localization score",
        ],
        rows,
    )


def stage_target_note(results: list[dict[str, Any]]) -> str:
    """Total p50 through search at the largest size against issue #4's ≤ 50 ms (no LLM)."""
    top = max(results, key=lambda r: r["n_segments"])
    total = top["query_stages"]["stages"]["total"]
    verdict = "meets" if total["p50"] <= TARGET_P50_MS else "does NOT meet"
    where = (
        "" if top["n_segments"] >= 1_000_000 else " (the target is set at 1M; this run stopped short of it)"
    )
    return (
        f"Query through retrieval.search at {top['n_segments']:,} segments: total p50 {total['p50']:.1f} ms "
        f"(p95 {total['p95']:.1f} ms), decode included — it {verdict} the ≤ {TARGET_P50_MS:.0f} ms p50 target "
        f"without the LLM{where}."
    )


# --- one size -----------------------------------------------------------------------------


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
    db = pgbench_db.open_temp_database(home)
    try:
        db = pgbench_db.tune_and_restart(db, home, maintenance_work_mem="2GB", shared_buffers="1GB")
        with db.connection() as conn:
            res["postgres"], res["pgvector"] = db_versions(conn)
        vectors = lib.segment_vectors(start=0, stop=n)
        cells, cell_index, res["cells"] = train_cells_for(vectors, seed=seed)
        log.info("scale %d: cells %s", n, res["cells"] or "none (below the product's threshold)")
        log.info("scale %d: loading %d segments of %d tracks", n, n, lib.n_tracks)
        res.update(load_library(db, lib, cells=cells))
        if cell_index is not None:
            from retrieval.cells import write_centroids

            with db.connection() as conn:
                write_centroids(conn, model_version=MODEL_VERSION, index=cell_index, n_segments=n)
                conn.commit()
        log.info("scale %d: COPY took %.1f s; building HNSW", n, res["copy_s"])
        res["index"] = pgbench_db.build_hnsw(db)
        log.info(
            "scale %d: HNSW built in %.1f s (%.1f MB)",
            n,
            res["index"]["build_s"],
            res["index"]["hnsw_bytes"] / 1e6,
        )
        queries, q_comp = lib.queries(n=n_queries, seed=seed + 1)
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
                    {
                        "ef_search": ef,
                        "recall@10": recall_at_k(found=found, truth=truth),
                        **percentiles(times),
                    }
                )
            conn.execute("SET enable_indexscan = off")
            _found, times = timed_knn(conn, queries=queries[: min(30, n_queries)], ef=DEFAULT_EF)
            res["exact_scan_sql"] = percentiles(times)
            conn.execute("RESET enable_indexscan")
        res["unfiltered"] = unfiltered

        fq, fcomp = queries[:filtered_queries], q_comp[:filtered_queries]
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
        res["filtered"] = rows

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
    from retrieval.ingest import resolve_embedder

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
        for n in sizes:
            results.append(
                run_size(
                    n=n,
                    n_queries=n_queries,
                    seed=seed,
                    workdir=workdir,
                    ef_values=ef_values,
                    filtered_queries=filtered_queries,
                    embedder=embedder,
                    clips=clips,
                )
            )
    finally:
        shutil.rmtree(clip_dir, ignore_errors=True)
    pg = results[0].get("postgres") if results else None
    pv = results[0].get("pgvector") if results else None
    report = Report(
        name="scale",
        title="Scale: pgvector HNSW on a synthetic clustered library",
        machine=machine_info(postgres=pg, pgvector=pv),
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
    report.notes += [
        f"Synthetic 128-d unit vectors clustered composer → track ({SEGMENTS_PER_TRACK} segments) → segment; "
        f"{n_queries} unfiltered and {filtered_queries} filtered queries per size from new tracks of random composers.",
        "Recall is against exact cosine top-10 computed with numpy over the same rows (filtered: over the rows the filter allows).",
        "Filtered queries go through the real retrieval filtered-candidate function (`retrieval.nearest.nearest`: "
        "restrictive filters scan the nearest coarse cells from 50K segments up — cells trained by `retrieval.cells` "
        "and written with each row —, an exact scan of the filtered rows below that and as the fallback; "
        "unfiltered queries use HNSW). "
        "Search returns one result per track, so filtered recall@10 is over tracks (a track scores its best allowed segment); "
        "'naive HNSW' is `WHERE … ORDER BY embedding <=> q LIMIT 100` at ef_search 100 without fallback, and "
        f"'exact route' the exact filtered scan on the first {EXACT_QUERIES} queries, for comparison.",
        f"Per-stage query latency: {len(clips)} synthetic 10-s chord clips written as WAV, decoded with "
        f"`cadenza.audio.load_audio` and searched with the real `retrieval.search.search` (k {K}, defaults: "
        "one result per track, the query's key and ±1 semitone probes) on 1 torch thread after 2 warm-up "
        f"queries, embedded by {embedder.model_version}. The score calibration (`retrieval.calibration`) is "
        "measured beforehand, as ingest does.",
        "Rows carry what ingest stores and search reads: random chroma per segment (mean and 2-fps sequence) and "
        "per track (10 fps), so rerank and localize do their real work (their scores mean nothing); "
        "bytes/segment include the chroma sequence. "
        "The real query embeddings do not come from the synthetic clusters, so the candidate route and its cost "
        "can differ from a real library of that size; the route taken is in the table.",
        "Targets: unfiltered p50 ≤ 50 ms at 1M (no LLM); filtered recall@10 ≥ 0.95.",
        stage_target_note(results),
        "The machine is shared with a corpus build and a training run (see load average below): absolute times are pessimistic.",
    ]
    size_rows = []
    for r in results:
        at_def = next((u for u in r["unfiltered"] if u["ef_search"] == DEFAULT_EF), r["unfiltered"][0])
        size_rows.append(
            (
                r["n_segments"],
                r["copy_s"],
                r["index"]["build_s"],
                r["index"]["hnsw_bytes"] / 2**20,
                r["index"]["bytes_per_segment"],
                at_def["p50"],
                at_def["p95"],
                at_def["recall@10"],
                r["exact_scan_sql"]["p50"],
                r["numpy_exact_ms"],
            )
        )
    report.section(
        "Per size (unfiltered at ef_search 40)",
        md_table(
            [
                "segments",
                "COPY s",
                "HNSW build s",
                "HNSW MiB",
                "bytes/segment (heap+indexes)",
                "p50 ms",
                "p95 ms",
                "recall@10",
                "exact SQL scan p50 ms",
                "numpy exact ms",
            ],
            size_rows,
        ),
    )
    ef_rows = [
        (r["n_segments"], u["ef_search"], u["recall@10"], u["p50"], u["p95"])
        for r in results
        for u in r["unfiltered"]
    ]
    cell_rows = [
        (
            r["n_segments"],
            r["cells"]["n_cells"],
            r["cells"]["sample"],
            r["cells"]["train_s"],
            r["cells"]["assign_s"],
            r["cells"]["cell_size_p50"],
            r["cells"]["cell_size_p99"],
        )
        for r in results
        if r.get("cells")
    ]
    if cell_rows:
        report.section(
            "Coarse cells (k-means on a sample, every segment assigned; sizes below 50K have none)",
            md_table(
                [
                    "segments",
                    "cells",
                    "training sample",
                    "k-means s",
                    "assign all s",
                    "segments/cell p50",
                    "segments/cell p99",
                ],
                cell_rows,
            ),
        )
    report.section(
        "Recall vs ef_search (unfiltered)",
        md_table(["segments", "ef_search", "recall@10", "p50 ms", "p95 ms"], ef_rows),
    )
    f_rows = [
        (
            r["n_segments"],
            f["filter"],
            f["allowed_share"],
            f["recall@10"],
            f["latency_p50"],
            f["latency_p95"],
            ", ".join(f"{k} {v}" for k, v in f["routes"].items()),
            f["naive_hnsw_recall@10"],
            f["naive_hnsw_p50"],
            f.get("exact_route_p50", float("nan")),
        )
        for r in results
        for f in r["filtered"]
    ]
    report.section(
        "Filtered top-10 (real retrieval path vs naive HNSW WHERE)",
        md_table(
            [
                "segments",
                "filter",
                "rows allowed",
                "recall@10 (tracks)",
                "p50 ms",
                "p95 ms",
                "route taken",
                "naive HNSW recall@10",
                "naive p50 ms",
                f"exact route p50 ms ({EXACT_QUERIES} q)",
            ],
            f_rows,
        ),
    )
    report.section(
        "Query latency per stage through retrieval.search at each size (1 torch thread)",
        "p50 (p95) ms per stage; total = search's total + decode.\n\n" + stage_table(results),
    )
    report.plots += _plots(results, out_dir)
    report.write(out_dir)
    return report


def _plots(results: list[dict[str, Any]], out_dir: Path) -> list[str]:
    plt = pyplot()
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        ef = [u["ef_search"] for u in r["unfiltered"]]
        ax.plot(
            ef, [u["recall@10"] for u in r["unfiltered"]], marker="o", label=f"{r['n_segments']:,} segments"
        )
    ax.set_xscale("log")
    ax.set_xlabel("hnsw.ef_search")
    ax.set_ylabel("recall@10 vs exact")
    ax.set_title("HNSW recall vs ef_search (unfiltered)")
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(str(save_plot(fig, out_dir / "scale_recall_vs_ef.png")))

    fig, ax = plt.subplots(figsize=(9, 4.5))
    ns = [r["n_segments"] for r in results]
    all_ef = sorted({u["ef_search"] for r in results for u in r["unfiltered"]})
    for ef in {DEFAULT_EF, all_ef[-1]} & set(all_ef):
        pts = [(r["n_segments"], u["p50"]) for r in results for u in r["unfiltered"] if u["ef_search"] == ef]
        if len(pts) == len(results):
            ax.plot(*zip(*pts, strict=True), marker="o", label=f"HNSW top-10 p50, ef_search {ef}")
    ax.plot(
        ns, [r["exact_scan_sql"]["p50"] for r in results], marker="s", ls="--", label="exact SQL scan p50"
    )
    for name in sorted({f["filter"] for r in results for f in r["filtered"]}):
        pts = [
            (r["n_segments"], f["latency_p50"]) for r in results for f in r["filtered"] if f["filter"] == name
        ]
        ax.plot(*zip(*pts, strict=True), marker="^", ls=":", label=f"search candidates p50: {name}")
    ax.axhline(50, color="red", lw=0.8, label="target p50 50 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("library size (segments)")
    ax.set_ylabel("latency ms")
    ax.set_title("Top-10 latency vs library size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    paths.append(str(save_plot(fig, out_dir / "scale_latency_vs_size.png")))
    return paths
