"""The corpus file: writing finished views, fitting the input statistics, and a readable summary.

The layout is described in :mod:`encoder.corpus`; :class:`encoder.data.Corpus` reads it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from encoder.features import FPS, N_ACOUSTIC, SAMPLE_RATE

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CHUNK_FRAMES = 200


def write_header(h5) -> None:
    """The root attributes every corpus file carries."""
    h5.attrs.update(
        {"fps": FPS, "sample_rate": SAMPLE_RATE, "n_acoustic": N_ACOUSTIC, "schema_version": SCHEMA_VERSION}
    )


def complete_views(views) -> set[str]:
    # duration_s is written last: a view without it was cut short by a killed build.
    return {name for name, ds in views.items() if "duration_s" in ds.attrs}


def store_views(grp, present: set[str], views: list[tuple[str, np.ndarray, dict]]) -> None:
    """Write finished views into the ``views`` group (parent side), ``duration_s`` last."""
    for name, frames, attrs in views:
        if name in grp:
            del grp[name]
        ds = grp.create_dataset(
            name,
            data=frames,
            dtype="float16",
            chunks=(min(CHUNK_FRAMES, frames.shape[0]), N_ACOUSTIC),
            compression="lzf",
        )
        attrs = dict(attrs)
        duration = attrs.pop("duration_s")
        ds.attrs.update(attrs)
        ds.attrs["duration_s"] = duration
        present.add(name)


def write_stats(h5) -> int:
    """(Re)compute ``stats/mean`` and ``stats/std`` from train clean + instrument views; returns frames used."""
    total = np.zeros(N_ACOUSTIC, dtype=np.float64)
    total_sq = np.zeros(N_ACOUSTIC, dtype=np.float64)
    count = 0
    for ds in h5["views"].values():
        if ds.attrs.get("split") == "train" and ds.attrs.get("view") in ("clean", "instrument"):
            x = ds[()].astype(np.float64)
            total += x.sum(axis=0)
            total_sq += (x**2).sum(axis=0)
            count += x.shape[0]
    if "stats" in h5:
        del h5["stats"]
    grp = h5.create_group("stats")
    if count < 2:
        log.warning("no train frames yet: stats are mean 0 / std 1")
        mean, std = np.zeros(N_ACOUSTIC), np.ones(N_ACOUSTIC)
    else:
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
        std = np.maximum(std, 1e-3)
    grp.create_dataset("mean", data=mean.astype(np.float32))
    grp.create_dataset("std", data=std.astype(np.float32))
    grp.attrs["frames"] = count
    return count


def summarize(*, path: Path) -> str:
    """A human-readable summary: hours of clean music per composer and split, views, size."""
    import h5py  # heavy; only the summary opens the file itself

    seconds: dict[tuple[str, str], float] = defaultdict(float)
    works: dict[str, set[str]] = defaultdict(set)
    views: dict[str, int] = defaultdict(int)
    frames = 0
    with h5py.File(path, "r") as h5:
        for ds in h5["views"].values():
            a = ds.attrs
            if "duration_s" not in a:
                continue
            views[str(a["view"])] += 1
            frames += ds.shape[0]
            works[str(a["split"])].add(str(a["work_id"]))
            if a["view"] == "clean":
                seconds[(str(a["composer"]), str(a["split"]))] += float(a["duration_s"])
        stats_frames = int(h5["stats"].attrs.get("frames", 0)) if "stats" in h5 else 0
    lines = [f"corpus: {path}", f"file size: {path.stat().st_size / 1e6:.1f} MB"]
    lines.append(
        f"works: {sum(len(v) for v in works.values())} ("
        + ", ".join(f"{k} {len(v)}" for k, v in sorted(works.items()))
        + ")"
    )
    lines.append(
        f"views: {sum(views.values())} (" + ", ".join(f"{k} {v}" for k, v in sorted(views.items())) + ")"
    )
    lines.append(f"frames (all views): {frames} ({frames / FPS / 3600:.2f} h)")
    lines.append(f"stats fitted on {stats_frames} train clean+instrument frames")
    lines.append("hours of clean (canonical) music per composer and split:")
    composers = sorted({c for c, _ in seconds})
    for c in composers:
        parts = {s: seconds.get((c, s), 0.0) / 3600 for s in ("train", "val", "test", "heldout")}
        cells = ", ".join(f"{s} {h:.2f}" for s, h in parts.items() if h > 0)
        lines.append(f"  {c:18s} {sum(parts.values()):5.2f} h  ({cells})")
    total = sum(seconds.values()) / 3600
    lines.append(f"  {'TOTAL':18s} {total:5.2f} h")
    return "\n".join(lines)
