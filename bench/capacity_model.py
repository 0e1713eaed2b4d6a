"""The capacity model's arithmetic: the catalogue, the scaling laws fitted on measured sizes, the
check of each law against a size it did not see, and the plan for the catalogue (pure functions
over the measured JSON; :mod:`bench.capacity` reads the files and writes the report).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

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


def gpu_figures(gpu: dict[str, Any] | None) -> dict[str, Any] | None:
    """The encoder on a GPU (gpu_embed.json): what the embed stage still costs the CPUs, and its rate.

    ``cpu_share``: the CPU seconds per window a GPU embedding call still spends (numpy in and out, the
    batch's normalization, the copies), as a share of one CPU thread's on the same machine, both through
    ``embed_track`` as ingest calls it. None when no GPU was measured.
    """
    if gpu is None or not gpu["results"].get("gpu"):
        return None
    r = gpu["results"]
    cpu_track, gpu_track = r["cpu"]["per_track"], r["cuda"]["per_track"]
    return {
        "source": "gpu_embed.json",
        "gpu_name": r["gpu_name"],
        "cpu_share": gpu_track["cpu_s_per_window"] / cpu_track["cpu_s_per_window"],
        "windows_per_s_per_track_call": gpu_track["windows_per_s"],
        "windows_per_s_best_batch": max(b["windows_per_s"] for b in r["cuda"]["batches"]),
    }


def scaling_figures(scaling: dict[str, Any] | None) -> dict[str, Any] | None:
    """Ingest lanes on one bigger machine (ingest_scaling.json): how the per-file work scales with the lanes.

    ``node_factor``: the CPU a catalogue needs on full nodes of that size, against the 2-lane figure
    the plan starts from (efficiency at 2 lanes / at the largest count). ``gpu_factor``: the CPU per
    audio hour at the largest count with the encoder on a GPU, against the same count without.
    """
    if scaling is None:
        return None
    rows = scaling["results"]["rows"]
    cpu = {r["processes"]: r for r in rows if not r["gpu"]}
    gpu = [r for r in rows if r["gpu"]]
    top = max(cpu)
    out: dict[str, Any] = {
        "source": "ingest_scaling.json",
        "cores": scaling["machine"].get("cores"),
        "efficiency": {str(n): r["efficiency"] for n, r in sorted(cpu.items())},
        "largest": top,
        "node_factor": cpu[min(2, top)]["efficiency"] / cpu[top]["efficiency"],
    }
    if gpu:
        out["gpu_factor"] = (
            gpu[-1]["cpu_s_per_audio_hour"] / cpu[gpu[-1]["processes"]]["cpu_s_per_audio_hour"]
        )
        out["gpu_speedup"] = gpu[-1]["audio_s_per_wall_s"] / cpu[gpu[-1]["processes"]]["audio_s_per_wall_s"]
    return out


def node_plan(scaling: dict[str, Any], *, cores: float) -> dict[str, Any]:
    """The ingest plan on full nodes of the measured size (:func:`scaling_figures`), with and without a GPU."""
    node = cores * scaling["node_factor"]
    out: dict[str, Any] = {**scaling, "cores_for_days_full_nodes": node}
    if "gpu_factor" in scaling:
        out["cores_for_days_full_nodes_gpu"] = node * scaling["gpu_factor"]
    return out


def gpu_plan(cat: Catalogue, ingest: dict[str, Any], gpu: dict[str, Any], *, cores: float) -> dict[str, Any]:
    """The ingest plan's GPU rows: the embed stage on a GPU keeps the CPU its calls still spend."""
    stages = ingest["stage_cpu_s_per_audio_hour"]
    embed_h = stages.get("embed", 0.0)
    left = (
        ingest["cpu_s_per_audio_hour"] - embed_h + embed_h * gpu["cpu_share"]
    )  # CPUs still prepare each batch
    windows_per_day = cat.segments / (cat.ingest_days * 86400.0)
    return {
        **gpu,
        "cpu_s_per_audio_hour_with_gpu_embed": left,
        "cores_for_days_with_gpu_embed": cores * left / ingest["cpu_s_per_audio_hour"],
        # one GPU's share of the days' windows at the rate ingest calls it (a track per call)
        "gpu_busy_share_for_days": windows_per_day / gpu["windows_per_s_per_track_call"],
        "reembed_gpu_hours": cat.segments / gpu["windows_per_s_best_batch"] / 3600.0,
    }


def ray_plan(ray: dict[str, Any]) -> dict[str, Any]:
    """The Ray rows: the measured ratios against the pool (ray_ingest.json)."""
    rr = ray["results"]
    return {
        "source": "ray_ingest.json",
        "command_ray_over_pool": rr.get("command_ray_over_pool"),
        "ray_over_pool_throughput": rr["ray_over_pool_throughput"],
        "ray_over_pool_steady": rr.get("ray_over_pool_steady"),
        "ray_scaling_1_to_2": rr["ray_scaling_1_to_2"],
    }


def plan(
    cat: Catalogue,
    points: list[dict[str, Any]],
    ingest: dict[str, Any],
    ray: dict[str, Any] | None,
    gpu: dict[str, Any] | None = None,
    scaling: dict[str, Any] | None = None,
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
            k: getattr(cat, k)
            for k in ("tracks", "track_seconds", "segments_per_track", "segments", "audio_hours")
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
    if gpu is not None:
        out["gpu"] = gpu_plan(cat, ingest, gpu, cores=cores)
    if scaling is not None:
        out["node"] = node_plan(scaling, cores=cores)
    if ray is not None:
        out["ray"] = ray_plan(ray)
    return out
