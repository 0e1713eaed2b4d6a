"""The quality benchmark's REAL product path: ``retrieval.ingest`` + ``retrieval.search``.

The library WAVs are ingested into a temporary embedded PostgreSQL with the product's own
ingest (leveling, features, encoder, descriptors, binary COPY, HNSW, calibration) and
queried through ``retrieval.search.search`` — the function the CLI, the JSON API and the
chat call. Measured here: passage re-finding (a subset of cells), composer / era P@10 with
the reranker (default weights, MMR diversity) and without it (embedding only, no
diversity), and how out-of-library queries and in-library controls are answered.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.library import EvalWork, Renderer
from bench.metrics import hit_rate_at, mrr, passage_hits, precision_at_k
from bench.queries import Query, make_queries, out_of_library_clips
from bench.report import md_table

log = logging.getLogger(__name__)

K = 10
REAL_CELLS = (
    ("clean", 10.0),
    ("noise", 10.0),
    ("mp3", 5.0),
    ("reverb", 10.0),
    ("pitch+1", 10.0),
    ("tempo-5", 10.0),
    ("eq", 3.0),
)


@dataclasses.dataclass
class _Product:
    """The ingested library and the embedder, queried through ``retrieval.search.search``."""

    db: Any
    embedder: Any
    track_of: dict[str, int]  # work id → track id
    work_of_track: dict[int, int]  # track id → index into the works (-1: not one of them)

    def search(self, audio: np.ndarray, **kw: Any) -> Any:
        from retrieval.search import search
        from retrieval.types import SearchRequest

        return search(db=self.db, embedder=self.embedder, request=SearchRequest(audio=audio, k=K, **kw))

    def ranked(self, resp: Any) -> tuple[np.ndarray, np.ndarray]:
        """(work index, start) of the top ``K`` results; -1 where there is none."""
        w = np.full(K, -1)
        s = np.zeros(K)
        for j, r in enumerate(resp.results[:K]):
            w[j] = self.work_of_track.get(r.track_id, -1)
            s[j] = r.start
        return w, s


def _passages(
    product: _Product, *, works: list[EvalWork], renderer: Renderer, clean: dict[str, np.ndarray], n: int,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:  # fmt: skip
    """Passage re-finding on a subset of cells."""
    passage = []
    for kind, length in tqdm(REAL_CELLS, desc="real search: passages", leave=False):
        qs = make_queries(
            works=works, renderer=renderer, clean=clean, kind=kind, length_s=length, n=n, rng=rng
        )
        W, S, nothing = np.full((len(qs), K), -1), np.zeros((len(qs), K)), 0
        for i, q in enumerate(qs):
            resp = product.search(q.audio)
            W[i], S[i] = product.ranked(resp)
            nothing += bool(resp.nothing_similar)
        hits = passage_hits(
            ranked_work=W,
            ranked_start=S,
            true_work=np.array([q.work_index for q in qs]),
            true_start=np.array([q.start_s for q in qs]),
        )
        passage.append(
            {
                "augmentation": kind,
                "length_s": length,
                "top1": hit_rate_at(hits, 1),
                "top10": hit_rate_at(hits, K),
                "mrr": mrr(hits),
                "answered_nothing_similar": nothing / max(len(qs), 1),
                "n": len(qs),
            }
        )
    return passage


def _style(
    product: _Product, *, works: list[EvalWork], style_queries: list[Query], labels: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Composer / era P@10 with and without the reranker."""
    from retrieval.types import Filters, Weights

    style = {}
    configs = {
        "with reranker (default weights, MMR 0.7)": {},
        "without reranker (embedding only, no MMR)": {
            "weights": Weights(embedding=1.0, harmony=0.0, progression=0.0),
            "diversity": 0.0,
        },
    }
    for cname, kw in configs.items():
        rel = {label: np.zeros((len(style_queries), K), dtype=bool) for label in labels}
        for i, q in enumerate(tqdm(style_queries, desc=f"real search: {cname[:20]}", leave=False)):
            tid = product.track_of.get(works[q.work_index].work_id)
            flt = Filters(exclude_tracks=(tid,)) if tid is not None else Filters()
            W, _ = product.ranked(product.search(q.audio, filters=flt, **kw))
            ok = W >= 0
            for label, arr in labels.items():
                rel[label][i, ok] = arr[W[ok]] == arr[q.work_index]
        style[cname] = {f"{label}_p@10": precision_at_k(relevant=r, k=K) for label, r in rel.items()}
    return style


def _out_of_library(product: _Product, *, rng: np.random.Generator) -> list[dict[str, Any]]:
    """How out-of-library queries are answered (noise, speech, ...: "nothing similar" or a clear refusal)."""
    from cadenza.errors import InputError

    ool = []
    for kind, clips in out_of_library_clips(seconds=10.0, rng=rng).items():
        answered, refused = 0, 0
        for y in clips:
            try:
                answered += bool(product.search(y).nothing_similar)
            except InputError:
                refused += 1
        ool.append(
            {
                "query": kind,
                "n": len(clips),
                "nothing_similar": answered / len(clips),
                "refused_as_bad_input": refused / len(clips),
            }
        )
    return ool


def run_real(
    *,
    works: list[EvalWork],
    wav_dir: Path,
    sidecar: Path | None,
    renderer: Renderer,
    clean: dict[str, np.ndarray],
    checkpoint: Path | None,
    workdir: Path,
    quick: bool,
    rng: np.random.Generator,
    style_queries: list[Query],
    labels: dict[str, np.ndarray],
) -> dict[str, Any]:
    from bench.pgbench_db import ingest_folder, open_temp_database
    from bench.report import db_versions
    from encoder.embed import resolve_embedder

    notes: list[str] = []
    embedder, spec = resolve_embedder(checkpoint)
    if str(embedder.model_version).startswith("untrained"):
        notes.append("Real path: NO trained checkpoint, so the product fell back to UNTRAINED weights.")
    db = open_temp_database(workdir / "home")
    out: dict[str, Any] = {"model_version": embedder.model_version}
    try:
        with db.connection() as conn:
            out["postgres"], out["pgvector"] = db_versions(conn)
        rep = ingest_folder(db, wav_dir, embedder=embedder, spec=spec, metadata_file=sidecar)
        out["ingest"] = rep.to_json()
        with db.connection() as conn:
            rows = conn.execute("SELECT id, work FROM tracks").fetchall()
        track_of = {str(w): int(t) for t, w in rows}
        index_of = {ew.work_id: i for i, ew in enumerate(works)}
        product = _Product(
            db=db, embedder=embedder, track_of=track_of,
            work_of_track={t: index_of.get(w, -1) for w, t in track_of.items()},
        )  # fmt: skip
        n = 6 if quick else 20
        common: dict[str, Any] = {"works": works, "renderer": renderer, "clean": clean}
        out["passage"] = _passages(product, n=n, rng=rng, **common)
        out["style"] = _style(product, works=works, style_queries=style_queries, labels=labels)
        ool = _out_of_library(product, rng=rng)
        controls = make_queries(kind="clean", length_s=10.0, n=n, rng=rng, **common)
        wrong = sum(bool(product.search(q.audio).nothing_similar) for q in controls)
        ool.append(
            {
                "query": "in-library control (clean 10 s)",
                "n": len(controls),
                "nothing_similar": wrong / max(len(controls), 1),
                "refused_as_bad_input": 0.0,
            }
        )
        out["out_of_library"] = ool
    finally:
        db.close()
    out["notes"] = notes
    return out


def sections(real: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    ing = real.get("ingest", {})
    head = (
        f"Model {real.get('model_version')}; PostgreSQL {real.get('postgres')}, pgvector {real.get('pgvector')}; "
        f"ingested {ing.get('added')} tracks, {ing.get('segments')} segments, {ing.get('audio_seconds')} s of audio "
        f"in {ing.get('wall_seconds')} s ({ing.get('realtime_factor')}× realtime, 2 workers)."
    )
    if real.get("passage"):
        rows = [
            (
                r["augmentation"],
                f"{r['length_s']:.0f} s",
                r["top1"],
                r["top10"],
                r["mrr"],
                r["answered_nothing_similar"],
                r["n"],
            )
            for r in real["passage"]
        ]
        out.append(
            (
                "Real product path: passage re-finding through retrieval.search (HNSW + reranker + localization)",
                head
                + "\n\n"
                + md_table(
                    ["augmentation", "query", "top-1", "top-10", "MRR", "answered 'nothing similar'", "n"],
                    rows,
                ),
            )
        )
    if real.get("style"):
        srows = [(k, v["composer_p@10"], v["era_p@10"]) for k, v in real["style"].items()]
        out.append(
            (
                "Real product path: composer / era P@10 with and without the reranker",
                md_table(["search", "composer P@10", "era P@10"], srows),
            )
        )
    if real.get("out_of_library"):
        orows = [
            (r["query"], r["n"], r["nothing_similar"], r["refused_as_bad_input"])
            for r in real["out_of_library"]
        ]
        out.append(
            (
                "Real product path: out-of-library queries (share answered 'nothing similar'; the control row should be 0)",
                md_table(["query", "n", "answered 'nothing similar'", "refused as bad input"], orows),
            )
        )
    return out
