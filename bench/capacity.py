"""A capacity model for a large catalogue, computed from the measured JSON in bench/results.

``python -m bench.capacity`` reads what the benchmarks measured (bytes per segment, HNSW build
time and size, query latency at 10K / 100K / 1M segments from ``scale_1m.json``; ingest CPU
seconds per audio hour from ``ingest_speed.json``; encoder throughput from ``speed.json``; the
Ray pipeline's stage split from ``ray_ingest.json`` when present), fits each scaling law on the
smaller sizes, checks the fit against the largest measured size that it did not use, and only
then extrapolates (refitted on every size) to the catalogue asked for. It writes
``bench/results/capacity.{json,md}``; docs/SCALE.md explains the model and its limits.

Every number in the output is either a measurement (with its file) or arithmetic on
measurements; derived figures (halfvec sizes, a GPU's effect) say what they are derived from.
The laws and the plan are :mod:`bench.capacity_model`; this module reads the results and writes the report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.capacity_model import (
    EF_SEARCH,
    EMBEDDING_DIM,
    Catalogue,
    gpu_figures,
    ingest_figures,
    plan,
    scale_points,
    scaling_figures,
    validate,
)
from bench.report import RESULTS_DIR, Report, md_table


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _measured_sections(
    report: Report, points: list[dict[str, Any]], checks: list[dict[str, Any]], ingest: dict[str, Any]
) -> None:
    """Table 0, the measured inputs, and table 1, each law checked against a point it did not use."""
    report.section(
        "0. Measured inputs (scale_1m.json; synthetic clustered 128-d segments)",
        md_table(
            ["segments", "table B/seg", "HNSW B/seg", "all B/seg", "HNSW build s", f"HNSW p50 ms (ef {EF_SEARCH})",
             "its recall@10", "exact scan p50 ms", "search total p50 ms"],
            [(f"{p['n']:,}", f"{p['table_bytes_per_segment']:.0f}", f"{p['hnsw_bytes_per_segment']:.0f}",
              f"{p['all_bytes_per_segment']:.0f}", f"{p['build_s']:.1f}", f"{p['hnsw_p50_ms']:.2f}",
              f"{p['hnsw_recall']:.3f}", f"{p['exact_p50_ms']:.1f}",
              "—" if p["search_total_p50_ms"] is None else f"{p['search_total_p50_ms']:.1f}") for p in points],
        )
        + f"\n\nIngest (ingest_speed.json, {ingest['audio_hours'] * 60:.0f} min of audio, 2 lanes): "
        f"{ingest['cpu_s_per_audio_hour']:.1f} CPU-s per audio hour, of which the analysis stages "
        + ", ".join(f"{k} {v:.1f}" for k, v in ingest["stage_cpu_s_per_audio_hour"].items())
        + f"; encoder {ingest.get('encoder_windows_per_cpu_s', float('nan')):.0f} windows per CPU-s (speed.json).",
    )  # fmt: skip
    report.section(
        "1. Extrapolation checked against a measured point it did not use",
        md_table(
            ["quantity", "law", "fitted on", "predicted", "measured", "error %"],
            [(c["quantity"], c["law"], c["fitted_on"], f"{c['predicted']:.3g} {c['unit']}", f"{c['measured']:.3g} {c['unit']}", f"{c['error_pct']:+.0f}") for c in checks],
        ),
    )  # fmt: skip


def _gpu_rows(table: dict[str, Any]) -> list[tuple[str, str]]:
    """Table 4's rows for the encoder on a GPU (gpu_embed.json), when it was measured."""
    if "gpu" not in table:
        return []
    g = table["gpu"]
    return [
        (
            f"… with the embed stage on a GPU (measured on an {g['gpu_name']}, gpu_embed.json: a GPU call "
            f"still costs the CPU {g['cpu_share']:.3f} of a CPU thread's embedding)",
            f"{g['cores_for_days_with_gpu_embed']:.0f} cores + a GPU busy {g['gpu_busy_share_for_days']:.1%} of the time",
        ),
        (
            f"re-embedding every segment on one such GPU ({g['windows_per_s_best_batch']:,.0f} windows/s, best batch)",
            f"{g['reembed_gpu_hours']:.1f} GPU-hours",
        ),
    ]


def _node_rows(table: dict[str, Any]) -> list[tuple[str, str]]:
    """Table 4's rows for full nodes of the measured size (ingest_scaling.json), when it was measured."""
    if "node" not in table:
        return []
    rows: list[tuple[str, str]] = []
    nd = table["node"]
    eff = ", ".join(f"{n}: {e:.2f}" for n, e in nd["efficiency"].items())
    rows.append(
        (
            f"… on full {nd['cores']}-core nodes (ingest_scaling.json: per-lane efficiency by lanes {eff})",
            f"{nd['cores_for_days_full_nodes']:.0f} cores",
        )
    )
    if "cores_for_days_full_nodes_gpu" in nd:
        rows.append(
            (
                f"… the same nodes with the encoder on a GPU (measured: {nd['gpu_factor']:.2f} of the CPU per audio "
                f"hour, {nd['gpu_speedup']:.2f}× the throughput of {nd['largest']} lanes)",
                f"{nd['cores_for_days_full_nodes_gpu']:.0f} cores + a GPU per node of {nd['cores']} cores",
            )
        )
    return rows


def _plan_sections(report: Report, table: dict[str, Any], cat: Catalogue) -> None:
    """Tables 2–4: storage, shards and index, ingest for the catalogue."""
    st, sh, ing = table["storage"], table["shards"], table["ingest"]
    report.section(
        "2. Storage",
        md_table(
            ["", "vector(128)", "halfvec(128) (derived)"],
            [
                ("table (heap + TOAST) GiB", f"{st['vector']['table_gib']:,.0f}", f"{st['halfvec']['table_gib']:,.0f}"),
                ("HNSW index GiB", f"{st['vector']['hnsw_gib']:,.0f}", f"{st['halfvec']['hnsw_gib']:,.0f}"),
                ("other indexes GiB", f"{st['vector']['other_indexes_gib']:,.0f}", f"{st['halfvec']['other_indexes_gib']:,.0f}"),
                ("track_chroma GiB (10-fps chroma per track; from the schema)", f"{st['vector']['track_chroma_gib']:,.0f}", f"{st['halfvec']['track_chroma_gib']:,.0f}"),
                ("total GiB", f"{st['vector']['total_gib']:,.0f}", f"{st['halfvec']['total_gib']:,.0f}"),
            ],
        ),
    )  # fmt: skip
    report.section(
        "3. Shards and index",
        md_table(
            ["measure", "value"],
            [
                ("segments per shard / shards", f"{sh['segments_per_shard']:,.0f} / {sh['shards']}"),
                ("HNSW per shard, vector / halfvec GiB", f"{sh['hnsw_gib_per_shard_vector']:.1f} / {sh['hnsw_gib_per_shard_halfvec']:.1f}"),
                (f"shards whose index fits {cat.node_index_gib:g} GiB of RAM on one node", sh["shards_per_node_by_ram"]),
                ("HNSW build per shard, hours on 2 cores (c·n·ln n from 100K + 1M)", f"{sh['hnsw_build_hours_per_shard_2_cores']:.1f}"),
                ("HNSW build, all shards one after another on one 2-core machine, hours", f"{sh['hnsw_build_hours_all_shards_2_cores']:.0f}"),
                ("HNSW query p50 per shard (one shard's share of a fan-out)", f"{sh['hnsw_query_p50_ms_per_shard']:.2f} ms; {sh['hnsw_query_law']}"),
            ],
        ),
    )  # fmt: skip
    rows = [
        ("audio hours", f"{table['catalogue']['audio_hours']:,.0f}"),
        ("ingest CPU-s per audio hour (measured, pool, 2 cores)", f"{ing['cpu_s_per_audio_hour']:.1f}"),
        ("ingest CPU-hours for the catalogue", f"{ing['cpu_hours']:,.0f}"),
        (f"cores to ingest it in {cat.ingest_days:g} days", f"{ing['cores_for_days']:.0f}"),
        (
            "… counting only the per-track stages (start-up amortized away)",
            f"{ing['cores_for_days_stages_only']:.0f}",
        ),
        (
            "… if the embed stage moves to a GPU (derived)",
            f"{ing['cores_for_days_if_embedding_moves_to_gpu']:.0f} cores + the GPU",
        ),
        ("encoder-only CPU-hours (speed.json windows per CPU-s)", f"{ing['embedding_cpu_hours']:,.0f}"),
    ]
    rows += _gpu_rows(table) + _node_rows(table)
    if "ray" in table:
        if table["ray"].get("command_ray_over_pool") is not None:
            rows.append(
                (
                    "`cadenza ingest --ray` / `cadenza ingest` throughput, whole commands (ray_ingest.json)",
                    f"{table['ray']['command_ray_over_pool']:.2f}",
                )
            )
        rows.append(
            (
                "Ray / pool throughput on one machine, in one process (ray_ingest.json)",
                f"{table['ray']['ray_over_pool_throughput']:.2f}",
            )
        )
        if table["ray"]["ray_over_pool_steady"] is not None:
            rows.append(
                (
                    "… at the steady rate (start-up, tail and finish left out)",
                    f"{table['ray']['ray_over_pool_steady']:.2f}",
                )
            )
    report.section("4. Ingest", md_table(["measure", "value"], rows))


def run_capacity(
    *, results: Path = RESULTS_DIR, out_dir: Path = RESULTS_DIR, cat: Catalogue | None = None
) -> Report:
    cat = cat or Catalogue()
    scale = _load(results, "scale_1m")
    ingest_raw = _load(results, "ingest_speed")
    if scale is None or ingest_raw is None:
        missing = [n for n, d in (("scale_1m", scale), ("ingest_speed", ingest_raw)) if d is None]
        raise SystemExit(
            f"bench.capacity: missing {', '.join(m + '.json' for m in missing)} in {results}; run those benchmarks first"
        )
    points = scale_points(scale)
    checks = validate(points)
    ingest = ingest_figures(ingest_raw, _load(results, "speed"))
    table = plan(
        cat, points, ingest, _load(results, "ray_ingest"), gpu_figures(_load(results, "gpu_embed")),
        scaling_figures(_load(results, "ingest_scaling")),
    )  # fmt: skip
    report = Report(
        name="capacity",
        title=f"Capacity model: {cat.tracks / 1e6:g}M tracks, {cat.segments / 1e9:.2f}B segments",
    )
    report.machine = scale["machine"]
    report.data = {
        "points": points,
        "checks": checks,
        "ingest": ingest,
        "plan": table,
        "catalogue": cat.__dict__,
    }
    report.notes += [
        "Computed by `python -m bench.capacity` from bench/results/scale_1m.json (10K / 100K / 1M synthetic segments, "
        "PostgreSQL 16 + pgvector 0.6.2, 2 cores), ingest_speed.json and speed.json; see docs/SCALE.md for the reasoning.",
        "Each law is first fitted without the largest measured size and checked against it (table 1); the plan "
        "then uses every size.",
        f"halfvec figures are derived, not measured: the measured vector bytes minus {4 * EMBEDDING_DIM - 2 * EMBEDDING_DIM} "
        "bytes a segment in the heap and again in the HNSW element.",
        "The '(derived)' GPU row is the measured ingest CPU without the embed stage; the measured GPU rows keep "
        "the CPU that a GPU embedding call still spends (gpu_embed.json, when present).",
    ]
    _measured_sections(report, points, checks, ingest)
    _plan_sections(report, table, cat)
    report.write(out_dir)
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.capacity``: the capacity table from bench/results (a second; no database)."""
    p = argparse.ArgumentParser(prog="python -m bench.capacity", description=main.__doc__)
    p.add_argument("--tracks", type=int, default=Catalogue.tracks)
    p.add_argument("--track-seconds", type=float, default=Catalogue.track_seconds)
    p.add_argument(
        "--days", type=float, default=Catalogue.ingest_days, help="ingest the catalogue within this many days"
    )
    p.add_argument("--segments-per-shard", type=int, default=Catalogue.segments_per_shard)
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help="where the measured JSON is")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    cat = Catalogue(
        tracks=args.tracks, track_seconds=args.track_seconds, ingest_days=args.days,
        segments_per_shard=args.segments_per_shard,
    )  # fmt: skip
    print(run_capacity(results=args.results, out_dir=args.out, cat=cat).to_markdown())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
