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
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import RESULTS_DIR, Report, md_table

#: pgvector stores ``vector(d)`` as 4 bytes a dimension + an 8-byte header, ``halfvec(d)`` as 2 + 8.
VECTOR_HEADER_BYTES = 8
EMBEDDING_DIM = 128
#: track_chroma: 12 pitch classes as float16 at 10 fps for the whole track (retrieval/store.py).
TRACK_CHROMA_BYTES_PER_S = 12 * 2 * 10
#: The ef_search whose latency the model quotes (the HNSW route's setting in the scale benchmark).
EF_SEARCH = 40
GIB = 1024**3


@dataclass(frozen=True)
class Catalogue:
    """What to plan for."""

    tracks: int = 10_000_000
    #: Mean track length; 10-s windows every 2 s give (L - 10) / 2 + 1 segments a track.
    track_seconds: float = 200.0
    #: Ingest the whole catalogue within this many days.
    ingest_days: float = 7.0
    #: Segments a shard (or partition) holds; its HNSW index should fit the node's RAM.
    segments_per_shard: int = 50_000_000
    #: Node RAM available for the index (page cache + shared_buffers).
    node_index_gib: float = 96.0

    @property
    def segments_per_track(self) -> float:
        return max(1.0, (self.track_seconds - 10.0) / 2.0 + 1.0)

    @property
    def segments(self) -> float:
        return self.tracks * self.segments_per_track

    @property
    def audio_hours(self) -> float:
        return self.tracks * self.track_seconds / 3600.0


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def power_fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """``y = a · n^b`` through the points (least squares in log-log); returns (a, b)."""
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(y) for _, y in points]
    if len(points) == 1:
        return points[0][1] / points[0][0], 1.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return math.exp(my - b * mx), b


def nlogn_fit(points: list[tuple[float, float]]) -> float:
    """``y = c · n · ln n`` (HNSW build work: n inserts, each a ~log n graph search); returns c."""
    return sum(y / (n * math.log(n)) for n, y in points) / len(points)


def _check(
    name: str, predicted: float, measured: float, unit: str, fitted_on: str, law: str
) -> dict[str, Any]:
    return {
        "quantity": name,
        "law": law,
        "fitted_on": fitted_on,
        "predicted": predicted,
        "measured": measured,
        "error_pct": 100.0 * (predicted - measured) / measured,
        "unit": unit,
    }


def scale_points(scale: dict[str, Any]) -> list[dict[str, Any]]:
    """Per measured size: segments, bytes, build seconds, unfiltered HNSW p50 at ``EF_SEARCH``, exact scan p50."""
    out = []
    for s in scale["results"]["sizes"]:
        hnsw = next(u for u in s["unfiltered"] if u["ef_search"] == EF_SEARCH)
        out.append(
            {
                "n": s["n_segments"],
                "table_bytes_per_segment": s["index"]["table_bytes"] / s["n_segments"],
                "hnsw_bytes_per_segment": s["index"]["hnsw_bytes_per_segment"],
                "all_bytes_per_segment": s["index"]["bytes_per_segment"],
                "build_s": s["index"]["build_s"],
                "hnsw_p50_ms": hnsw["p50"],
                "hnsw_recall": hnsw["recall@10"],
                "exact_p50_ms": s["exact_scan_sql"]["p50"],
                "search_total_p50_ms": (s.get("query_stages") or {})
                .get("stages", {})
                .get("total", {})
                .get("p50"),
            }
        )
    return sorted(out, key=lambda p: p["n"])


def validate(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fit on every size but the largest; predict the largest; report the error."""
    *train, held = points
    used = " + ".join(f"{p['n']:,}" for p in train)
    n = held["n"]
    checks = []
    bps = sum(p["all_bytes_per_segment"] for p in train[-1:])  # bytes/segment: constant once past overheads
    checks.append(
        _check(
            "bytes per segment (table + indexes)",
            bps,
            held["all_bytes_per_segment"],
            "B",
            f"{train[-1]['n']:,}",
            "constant",
        )
    )
    c = nlogn_fit([(p["n"], p["build_s"]) for p in train[-1:]])
    checks.append(
        _check(
            "HNSW build seconds", c * n * math.log(n), held["build_s"], "s", f"{train[-1]['n']:,}", "c·n·ln n"
        )
    )
    a, b = power_fit([(p["n"], p["build_s"]) for p in train])
    checks.append(_check("HNSW build seconds", a * n**b, held["build_s"], "s", used, f"a·n^b (b={b:.2f})"))
    a, b = power_fit([(p["n"], p["hnsw_p50_ms"]) for p in train])
    checks.append(
        _check(
            f"HNSW query p50, ef_search {EF_SEARCH}",
            a * n**b,
            held["hnsw_p50_ms"],
            "ms",
            used,
            f"a·n^b (b={b:.2f})",
        )
    )
    a, b = power_fit([(p["n"], p["exact_p50_ms"]) for p in train])
    checks.append(_check("exact scan p50", a * n**b, held["exact_p50_ms"], "ms", used, f"a·n^b (b={b:.2f})"))
    return checks  # fmt: skip


def ingest_figures(ingest: dict[str, Any], speed: dict[str, Any] | None) -> dict[str, Any]:
    r = ingest["results"]
    hours = r["audio_seconds"] / 3600.0
    stage = r["stage_cpu_seconds"]
    out = {
        "source": "ingest_speed.json",
        "audio_hours": hours,
        "cpu_s_per_audio_hour": r["cpu_seconds_total"] / hours,
        "stage_cpu_s_per_audio_hour": {k: v / hours for k, v in stage.items()},
        "embed_share_of_stage_cpu": stage.get("embed", 0.0) / max(sum(stage.values()), 1e-9),
        "wall_realtime_x_2_cores": r["realtime_factor"],
    }
    if speed is not None:
        out["encoder_windows_per_cpu_s"] = speed["results"]["encoder_windows_per_cpu_s"]
    return out


def plan(
    cat: Catalogue, points: list[dict[str, Any]], ingest: dict[str, Any], ray: dict[str, Any] | None
) -> dict[str, Any]:
    """The capacity table for ``cat`` from the measured points (fitted on all sizes)."""
    big = points[-1]
    n_seg = cat.segments
    vec_bytes = 4 * EMBEDDING_DIM + VECTOR_HEADER_BYTES
    half_bytes = 2 * EMBEDDING_DIM + VECTOR_HEADER_BYTES
    saved = vec_bytes - half_bytes  # saved once in the heap and once in the index element
    table_b, hnsw_b = big["table_bytes_per_segment"], big["hnsw_bytes_per_segment"]
    other_index_b = big["all_bytes_per_segment"] - table_b - hnsw_b
    c = nlogn_fit([(p["n"], p["build_s"]) for p in points[-2:]])
    shard_n = min(cat.segments_per_shard, n_seg)
    shards = math.ceil(n_seg / shard_n)
    build_shard_s = c * shard_n * math.log(shard_n)
    a, b = power_fit([(p["n"], p["hnsw_p50_ms"]) for p in points[1:]])
    cpu_h = ingest["cpu_s_per_audio_hour"] * cat.audio_hours / 3600.0
    cores = cpu_h / (cat.ingest_days * 24.0)
    no_embed = ingest["cpu_s_per_audio_hour"] - ingest["stage_cpu_s_per_audio_hour"].get("embed", 0.0)
    stages_h = sum(ingest["stage_cpu_s_per_audio_hour"].values())
    storage = {
        "vector": {
            "table_gib": n_seg * table_b / GIB,
            "hnsw_gib": n_seg * hnsw_b / GIB,
            "other_indexes_gib": n_seg * other_index_b / GIB,
        },
        "halfvec": {
            "table_gib": n_seg * (table_b - saved) / GIB,
            "hnsw_gib": n_seg * (hnsw_b - saved) / GIB,
            "other_indexes_gib": n_seg * other_index_b / GIB,
        },
    }
    track_chroma_gib = cat.tracks * cat.track_seconds * TRACK_CHROMA_BYTES_PER_S / GIB
    for v in storage.values():
        v["track_chroma_gib"] = track_chroma_gib
        v["total_gib"] = v["table_gib"] + v["hnsw_gib"] + v["other_indexes_gib"] + track_chroma_gib
    shard_index_gib = shard_n * hnsw_b / GIB
    out = {
        "catalogue": {
            "tracks": cat.tracks,
            "track_seconds": cat.track_seconds,
            "segments_per_track": cat.segments_per_track,
            "segments": n_seg,
            "audio_hours": cat.audio_hours,
        },
        "storage": storage,
        "shards": {
            "segments_per_shard": shard_n,
            "shards": shards,
            "hnsw_gib_per_shard_vector": shard_index_gib,
            "hnsw_gib_per_shard_halfvec": shard_n * (hnsw_b - saved) / GIB,
            "shards_per_node_by_ram": max(1, int(cat.node_index_gib // max(shard_index_gib, 1e-9))),
            "hnsw_build_hours_per_shard_2_cores": build_shard_s / 3600.0,
            "hnsw_build_hours_all_shards_2_cores": shards * build_shard_s / 3600.0,
            "hnsw_query_p50_ms_per_shard": a * shard_n**b,
            "hnsw_query_law": f"{a:.3g}·n^{b:.2f} ms (ef_search {EF_SEARCH}, fitted on 100K and 1M)",
        },
        "ingest": {
            "cpu_hours": cpu_h,
            "cores_for_days": cores,
            "days": cat.ingest_days,
            "cpu_s_per_audio_hour": ingest["cpu_s_per_audio_hour"],
            "cpu_s_per_audio_hour_without_embed": no_embed,
            "cpu_s_per_audio_hour_stages": stages_h,
            "cores_for_days_stages_only": cores * stages_h / ingest["cpu_s_per_audio_hour"],
            "cores_for_days_if_embedding_moves_to_gpu": cores * no_embed / ingest["cpu_s_per_audio_hour"],
            "embedding_windows": n_seg,
            "embedding_cpu_hours": n_seg / ingest.get("encoder_windows_per_cpu_s", float("nan")) / 3600.0,
        },
    }
    if ray is not None:
        rr = ray["results"]
        out["ray"] = {
            "source": "ray_ingest.json",
            "ray_over_pool_throughput": rr["ray_over_pool_throughput"],
            "ray_scaling_1_to_2": rr["ray_scaling_1_to_2"],
        }
    return out


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
    if "ray" in table:
        rows.append(
            (
                "Ray / pool throughput on one machine (ray_ingest.json)",
                f"{table['ray']['ray_over_pool_throughput']:.2f}",
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
    table = plan(cat, points, ingest, _load(results, "ray_ingest"))
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
        "GPU figures are derived: the measured ingest CPU without the embed stage's share (no GPU was available).",
    ]
    _measured_sections(report, points, checks, ingest)
    _plan_sections(report, table, cat)
    report.write(out_dir)
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.capacity``: the capacity table from bench/results (a second; no database)."""
    import argparse

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
