"""The report of ``cadenza bench scale``: notes, tables and plots from the per-size results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.query_stages import STAGES
from bench.report import Report, fmt, md_table, pyplot, save_plot
from bench.synthetic import SEGMENTS_PER_TRACK
from bench.synthetic_db import DEFAULT_EF, EXACT_QUERIES, K

#: Issue #4: query latency p50 ≤ 50 ms at 1M segments, without the LLM.
TARGET_P50_MS = 50.0


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


def plots(results: list[dict[str, Any]], out_dir: Path) -> list[str]:
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


def notes(
    results: list[dict[str, Any]], *, n_queries: int, filtered_queries: int, n_clips: int, model_version: str
) -> list[str]:
    """What was measured and how, for the report's notes."""
    return [
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
        f"Per-stage query latency: {n_clips} synthetic 10-s chord clips written as WAV, decoded with "
        f"`cadenza.audio.load_audio` and searched with the real `retrieval.search.search` (k {K}, defaults: "
        "one result per track, the query's key and ±1 semitone probes) on 1 torch thread after 2 warm-up "
        f"queries, embedded by {model_version}. The score calibration (`retrieval.calibration`) is "
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


def _size_table(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        at_def = next((u for u in r["unfiltered"] if u["ef_search"] == DEFAULT_EF), r["unfiltered"][0])
        rows.append(
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
    headers = [
        "segments", "COPY s", "HNSW build s", "HNSW MiB", "bytes/segment (heap+indexes)", "p50 ms", "p95 ms",
        "recall@10", "exact SQL scan p50 ms", "numpy exact ms",
    ]  # fmt: skip
    return md_table(headers, rows)


def _cell_rows(results: list[dict[str, Any]]) -> list[tuple]:
    keys = ("n_cells", "sample", "train_s", "assign_s", "cell_size_p50", "cell_size_p99")
    return [(r["n_segments"], *(r["cells"][k] for k in keys)) for r in results if r.get("cells")]


def _filter_table(results: list[dict[str, Any]]) -> str:
    rows = [
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
    headers = [
        "segments", "filter", "rows allowed", "recall@10 (tracks)", "p50 ms", "p95 ms", "route taken",
        "naive HNSW recall@10", "naive p50 ms", f"exact route p50 ms ({EXACT_QUERIES} q)",
    ]  # fmt: skip
    return md_table(headers, rows)


def sections(report: Report, results: list[dict[str, Any]]) -> None:
    """The report's tables, one section per aspect."""
    report.section("Per size (unfiltered at ef_search 40)", _size_table(results))
    cell_rows = _cell_rows(results)
    if cell_rows:
        headers = [
            "segments", "cells", "training sample", "k-means s", "assign all s", "segments/cell p50",
            "segments/cell p99",
        ]  # fmt: skip
        report.section(
            "Coarse cells (k-means on a sample, every segment assigned; sizes below 50K have none)",
            md_table(headers, cell_rows),
        )
    ef_rows = [
        (r["n_segments"], u["ef_search"], u["recall@10"], u["p50"], u["p95"])
        for r in results
        for u in r["unfiltered"]
    ]
    report.section(
        "Recall vs ef_search (unfiltered)",
        md_table(["segments", "ef_search", "recall@10", "p50 ms", "p95 ms"], ef_rows),
    )
    report.section("Filtered top-10 (real retrieval path vs naive HNSW WHERE)", _filter_table(results))
    report.section(
        "Query latency per stage through retrieval.search at each size (1 torch thread)",
        "p50 (p95) ms per stage; total = search's total + decode.\n\n" + stage_table(results),
    )
