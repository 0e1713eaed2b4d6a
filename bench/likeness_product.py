"""The product path of :mod:`bench.likeness`: the real ingest and search on the real recordings.

The capped tracks are written as 16-kHz WAVs with a metadata sidecar (composer = the file's
artist/composer tag or the source; album = the source), ingested by ``retrieval.ingest`` into
a temporary embedded PostgreSQL, and queried with ``retrieval.search`` exactly as the CLI, the
API and the chat do.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.metrics import HIT_TOLERANCE_S, literal_repeat
from bench.real_sources import SAMPLE_RATE, Sources

log = logging.getLogger(__name__)

#: The product rows' system name in every table.
PRODUCT = "cadenza (product search)"


def _write_library(src: Sources, folder: Path) -> Path:
    import soundfile as sf

    rows = []
    for i, t in enumerate(src.tracks):
        rel = Path(t.source) / f"{i:04d}.wav"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(folder / rel), t.audio, SAMPLE_RATE, subtype="PCM_16")
        rows.append(
            {"path": str(rel), "title": t.name, "composer": t.artist, "album": t.source, "work": t.name}
        )
    sidecar = folder / "metadata.json"
    sidecar.write_text(json.dumps(rows))
    return sidecar


def _stem_rows(
    db: Any, embedder: Any, stem_qs: list[Any], *, db_id: list[int], k: int
) -> list[dict[str, Any]]:
    """Cross-stem rows: a guitar or backing stem finds its own song's mix, at the right time."""
    from retrieval.search import search
    from retrieval.types import SearchRequest

    stems = []
    for kind in ("guitar", "backing"):
        qs = [q for q in stem_qs if q.kind == kind]
        hits1 = hits10 = 0
        for q in qs:
            resp = search(db=db, embedder=embedder, request=SearchRequest(audio=q.audio, start_s=0.0, k=k))
            ok = [r.track_id == db_id[q.work_index] and abs(r.start - q.start_s) <= HIT_TOLERANCE_S
                  for r in resp.results]  # fmt: skip
            hits1 += bool(ok[:1] and ok[0])
            hits10 += any(ok)
        if qs:
            stems.append({"stem": kind, "system": PRODUCT, "queries": len(qs),
                          "top1": hits1 / len(qs), "top10": hits10 / len(qs)})  # fmt: skip
    return stems


def _refind_rows(
    db: Any,
    embedder: Any,
    refind_qs: dict[str, list[Any]],
    *,
    db_id: list[int],
    k: int,
    mels: list[np.ndarray],
) -> list[dict[str, Any]]:
    """(c) through the product: each distorted clip searched as an upload (no start given, route
    auto, default diversity); hit = its track first and the cited start within the tolerance.
    ``top1_rep`` also counts a first result on the right track that starts on a literal repeat of
    the passage (:func:`bench.metrics.literal_repeat` on ``mels``, the clean track's log-mel frames
    by library index): the headline stays the strict ``top1``. ``cited``: the true moment is the first
    result's start or one of its ``also_at`` (retrieval.repeats); ``also_precision``: the share of those
    also-at times that are the true place or a literal repeat of it (``also_ok`` of ``also_n``)."""
    from retrieval.search import search
    from retrieval.types import SearchRequest

    rows = []
    for label, qs in refind_qs.items():
        qs = [q for q in qs if db_id[q.work_index] >= 0]
        top1 = top10 = work1 = melody = top1_rep = cited = also_n = also_ok = 0
        for q in tqdm(qs, desc=f"product re-finding: {label}", leave=False, mininterval=30):
            resp = search(db=db, embedder=embedder, request=SearchRequest(audio=q.audio, start_s=None, k=k))
            own = [r.track_id == db_id[q.work_index] for r in resp.results]
            ok = [
                o and abs(r.start - q.start_s) <= HIT_TOLERANCE_S
                for o, r in zip(own, resp.results, strict=True)
            ]
            top1 += bool(ok[:1] and ok[0])
            top10 += any(ok)
            work1 += bool(own[:1] and own[0])
            top1_rep += bool(ok[:1] and ok[0]) or bool(
                own[:1] and own[0] and literal_repeat(
                    mel=mels[q.work_index], true_start_s=q.start_s, found_start_s=resp.results[0].start,
                    length_s=q.length_s,
                )
            )  # fmt: skip
            melody += resp.query.get("route") != "audio"
            # "Also plays at" (retrieval.repeats) on the first result: the true moment counts as cited when
            # it is one of them; each is right when it is the true place or a literal repeat of it.
            also = resp.results[0].also_at if resp.results else []
            first_own = bool(own[:1] and own[0])
            cited += bool(ok[:1] and ok[0]) or (
                first_own and any(abs(a - q.start_s) <= HIT_TOLERANCE_S for a in also)
            )
            also_n += len(also)
            also_ok += sum(
                first_own and (abs(a - q.start_s) <= HIT_TOLERANCE_S or literal_repeat(
                    mel=mels[q.work_index], true_start_s=q.start_s, found_start_s=a, length_s=q.length_s,
                ))
                for a in also
            )  # fmt: skip
        if qs:
            rows.append({"distortion": label, "system": PRODUCT, "queries": len(qs), "top1": top1 / len(qs),
                         "top10": top10 / len(qs), "work_top1": work1 / len(qs), "top1_rep": top1_rep / len(qs),
                         "melody_route": melody / len(qs), "cited": cited / len(qs), "also_n": also_n,
                         "also_ok": also_ok, "also_precision": also_ok / also_n if also_n else None})  # fmt: skip
    return rows


def _aspect_label(setting: str) -> str:
    """What a product setting measures, for the table."""
    if setting.endswith("only, diversity 0"):
        name = setting.split()[0]
        extra = " (embedding + timbre vector)" if name == "sound" else ""
        return f"{name} alone{extra}"
    return "all aspects, default weights" + ("" if setting == "defaults" else f" ({setting})")


def run_product(
    *,
    src: Sources,
    queries: list[Any],
    stem_qs: list[Any],
    refind_qs: dict[str, list[Any]],
    workdir: Path,
    checkpoint: Path | None,
    k: int,
    aspect_only: dict[str, dict[str, float]],
    mels: list[np.ndarray],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], str]:
    """Same-source rows per search setting, cross-stem rows, re-finding rows, and the model version searched.
    ``mels``: each library track's clean log-mel frames (by index), for the repeat-aware re-finding column."""
    from bench.pgbench_db import open_temp_database
    from encoder.embed import resolve_embedder
    from retrieval.ingest import ingest
    from retrieval.search import search
    from retrieval.types import Aspects, SearchRequest

    folder = workdir / "likeness-library"
    sidecar = _write_library(src, folder)
    embedder, spec = resolve_embedder(checkpoint)
    db = open_temp_database(workdir / "likeness-db")
    try:
        ingest(db=db, paths=[folder], embedder=embedder, workers=1, metadata_file=sidecar, progress=False)
        with db.connection() as conn:
            id_of = {str(t): int(i) for i, t in conn.execute("SELECT id, title FROM tracks").fetchall()}
        # A file whose capped audio repeats another's (same content hash) is stored once: its
        # queries are left out here.
        db_id = [id_of.get(t.name, -1) for t in src.tracks]
        source_of = {db_id[i]: t.source for i, t in enumerate(src.tracks)}
        artist_of = {db_id[i]: t.artist.lower() for i, t in enumerate(src.tracks)}
        queries = [q for q in queries if db_id[q.track] >= 0]
        stem_qs = [q for q in stem_qs if db_id[q.work_index] >= 0]
        settings: dict[str, dict[str, Any]] = {
            "defaults": {},
            "diversity 0": {"diversity": 0.0},
            **{
                f"{a} only, diversity 0": {"diversity": 0.0, "aspects": Aspects(**w)}
                for a, w in aspect_only.items()
            },
        }
        # The one-aspect settings take the first query of every other track (a quarter of the searches).
        first = list({q.track: q for q in reversed(queries)}.values())[::2]
        rows = []
        for label, kw in settings.items():
            precs: list[float] = []
            shares: list[float] = []
            likes: list[tuple[float, bool]] = []
            qs = first if "aspects" in kw else queries
            for q in tqdm(qs, desc=f"product: {label}", leave=False, mininterval=30):
                resp = search(
                    db=db, embedder=embedder, request=SearchRequest(audio=q.audio, start_s=0.0, k=k + 1, **kw)
                )
                own = db_id[q.track]
                others = [r for r in resp.results if r.track_id != own][:k]
                precs.append(sum(source_of[r.track_id] == src.tracks[q.track].source for r in others) / k)
                shares.append(sum(artist_of[r.track_id] == artist_of[own] for r in others) / k)
                likes.extend(
                    (r.likeness, source_of[r.track_id] == src.tracks[q.track].source) for r in others
                )
            same_like = [v for v, s in likes if s]
            rows.append({
                "system": PRODUCT, "path": label, "queries": len(qs), "p_at_10": float(np.mean(precs)),
                "aspect": _aspect_label(label),
                "composer_share": float(np.mean(shares)),
                "likeness_same_source": float(np.mean(same_like)) if same_like else None,
                "likeness_other_source": float(np.mean([v for v, s in likes if not s] or [np.nan])),
            })  # fmt: skip
        stems = _stem_rows(db, embedder, stem_qs, db_id=db_id, k=k)
        refind = _refind_rows(db, embedder, refind_qs, db_id=db_id, k=k, mels=mels)
        return rows, stems, refind, str(embedder.model_version)
    finally:
        db.close()
