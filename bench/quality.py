"""``cadenza bench quality``: does the encoder re-find passages, across instruments, by style?

Library: held-out works of the rendered corpus (split ``test`` = unseen works of training
composers, ``heldout`` = composers never trained on), re-rendered clean on each work's
primary instrument. Systems compared in the same run on the same windows:

* ``mfcc+chroma stats`` — :class:`bench.baselines.StatsEmbedder`;
* ``untrained`` — the Cadenza architecture with random weights (``Embedder.untrained()``);
* ``cadenza`` — the shipped checkpoint (``Embedder.load()``), when present, one probe per query;
* ``cadenza+key probes`` — the same, searched as ``retrieval.search`` searches a clip: the query
  window also moved ±1 semitone in the feature domain (:class:`bench.memsearch.KeyProbes`).

Two search paths: (1) an in-memory exact-cosine equivalent of ingest + search for every
system (:mod:`bench.memsearch`), and (2) the REAL product path — ``retrieval.ingest`` into a
temporary embedded PostgreSQL and ``retrieval.search`` — for the product's embedder, which
adds the reranker, calibrated "nothing similar" answers and pgvector HNSW.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench import quality_real
from bench.library import SAMPLE_RATE, Renderer, corpus_heldout_ids, render_library, select_works
from bench.memsearch import Library, embed_systems, features
from bench.quality_report import LENGTHS, library_notes, plots, sections
from bench.quality_systems import K, build_systems, score_passages, style_precision
from bench.queries import AUGMENTATIONS, Query, make_queries
from bench.report import Report, machine_info

log = logging.getLogger(__name__)


def _library(
    *,
    per_composer: int,
    seed: int,
    max_seconds: float,
    midi_cache: Path,
    wav_dir: Path | None,
    corpus: Path | None,
) -> tuple[list[Any], dict[str, np.ndarray], Path | None, Renderer, Library, dict[str, Any]]:
    """Render the held-out works (into ``wav_dir`` when the product path needs files) and cut them in windows.

    Returns (works, clean audio per work, metadata sidecar, renderer, in-memory library, its description).
    """
    in_corpus = corpus_heldout_ids(corpus)
    works = select_works(per_composer=per_composer, seed=seed, prefer=in_corpus)
    renderer = Renderer(midi_cache=midi_cache, max_seconds=max_seconds)
    works, clean, sidecar = render_library(works, renderer=renderer, out_dir=wav_dir)
    frames = {
        ew.work_id: features(y=clean[ew.work_id]) for ew in tqdm(works, desc="library features", leave=False)
    }
    lib = Library.build(frames)
    lib_info: dict[str, Any] = {
        "works": len(works),
        "composers": sorted({ew.composer for ew in works}),
        "works_per_split": {s: sum(ew.split == s for ew in works) for s in ("test", "heldout")},
        "works_in_rendered_corpus": sum(ew.work_id in in_corpus for ew in works),
        "corpus": str(corpus) if in_corpus else None,
        "segments": lib.n_segments,
        "audio_minutes": round(sum(v.size for v in clean.values()) / SAMPLE_RATE / 60, 1),
        "max_seconds_per_work": max_seconds,
    }
    log.info("quality library: %s", lib_info)
    return works, clean, sidecar, renderer, lib, lib_info


def _passage_rows(
    lib: Library, systems: dict[str, Any], *, works: list[Any], renderer: Renderer, clean: dict[str, np.ndarray],
    n: int, n_10s: int, splits: np.ndarray, rng: np.random.Generator,
) -> list[dict[str, Any]]:  # fmt: skip
    """Passage re-finding per augmentation × length, for every system."""
    passage: list[dict[str, Any]] = []
    for kind in tqdm(AUGMENTATIONS, desc="passage queries", leave=False):
        for length in LENGTHS:
            qs = make_queries(
                works=works, renderer=renderer, clean=clean, kind=kind, length_s=length,
                n=n_10s if length == 10.0 else n, rng=rng,
            )  # fmt: skip
            qf = [features(y=q.audio) for q in qs]
            for name, emb in systems.items():
                passage.append(
                    {
                        "augmentation": kind,
                        "length_s": length,
                        "system": name,
                        **score_passages(lib, name, emb, qs, qf, splits),
                    }
                )
    return passage


def _cross_rows(
    lib: Library, systems: dict[str, Any], *, works: list[Any], renderer: Renderer, clean: dict[str, np.ndarray],
    n: int, splits: np.ndarray, rng: np.random.Generator,
) -> list[dict[str, Any]]:  # fmt: skip
    """Cross-instrument and melody-only queries, for every system."""
    cross: list[dict[str, Any]] = []
    for program in ("other", "melody"):
        qs = make_queries(
            works=works,
            renderer=renderer,
            clean=clean,
            kind="clean",
            length_s=10.0,
            n=n,
            rng=rng,
            program=program,
        )
        qf = [features(y=q.audio) for q in qs]
        for name, emb in systems.items():
            r = score_passages(lib, name, emb, qs, qf, splits)
            cross.append(
                {"query": "other instrument" if program == "other" else "melody only", "system": name, **r}
            )
    return cross


def _style_queries(
    works: list[Any], clean: dict[str, np.ndarray], *, per_track: int, rng: np.random.Generator
) -> list[Query]:
    """10-s clean queries from every work, for composer / era precision over the OTHER works."""
    style_q: list[Query] = []
    for wi, ew in enumerate(works):
        dur = clean[ew.work_id].size / SAMPLE_RATE
        for _ in range(per_track):
            t = float(np.round(rng.uniform(0.1, max(dur - 10.5, 0.2)), 2))
            i0 = int(t * SAMPLE_RATE)
            style_q.append(Query(wi, t, 10.0, "clean", clean[ew.work_id][i0 : i0 + 10 * SAMPLE_RATE]))
    return style_q


def _style_bounds(
    labels: dict[str, np.ndarray], style_q: list[Query], n_works: int
) -> tuple[dict[str, float], dict[str, float]]:
    """(ceiling, chance) of P@10 per label: what a perfect and a random ranking would score."""
    ceiling, chance = {}, {}
    for label, arr in labels.items():
        same = np.array([(arr == arr[q.work_index]).sum() - 1 for q in style_q])
        ceiling[label] = float(np.mean(np.minimum(same, K) / K))
        chance[label] = float(np.mean(same / max(n_works - 1, 1)))
    return ceiling, chance


def run_quality(
    *,
    out_dir: Path,
    quick: bool,
    seed: int = 0,
    checkpoint: Path | None = None,
    midi_cache: Path,
    workdir: Path,
    real_path: bool = True,
    corpus: Path | None = None,
    candidate: Path | None = None,
) -> Report:
    t_start = time.perf_counter()
    rng = np.random.default_rng(seed)
    max_seconds = 40.0 if quick else 45.0
    n_passage = 8 if quick else 24
    # The must-reach targets are on 10-s queries: those cells get more queries (±0.06 at n=64).
    n_passage_10 = 8 if quick else 64
    n_cross = 10 if quick else 64
    notes: list[str] = []

    wav_dir = workdir / "library"
    works, clean, sidecar, renderer, lib, lib_info = _library(
        per_composer=3 if quick else 8, seed=seed, max_seconds=max_seconds, midi_cache=midi_cache,
        wav_dir=wav_dir if real_path else None, corpus=corpus,
    )  # fmt: skip
    splits = np.array([ew.split for ew in works])
    systems = build_systems(checkpoint, lib, notes, candidate)
    embed_systems(lib, systems)
    common: dict[str, Any] = {
        "works": works,
        "renderer": renderer,
        "clean": clean,
        "splits": splits,
        "rng": rng,
    }
    passage = _passage_rows(lib, systems, n=n_passage, n_10s=n_passage_10, **common)
    cross = _cross_rows(lib, systems, n=n_cross, **common)

    style_q = _style_queries(works, clean, per_track=1 if quick else 2, rng=rng)
    style_f = [features(y=q.audio) for q in style_q]
    labels = {"composer": np.array([ew.composer for ew in works]), "era": np.array([ew.era for ew in works])}
    style = [
        {"system": name, **style_precision(lib, name, emb, style_q, style_f, labels, splits)}
        for name, emb in systems.items()
    ]
    ceiling, chance = _style_bounds(labels, style_q, len(works))

    real: dict[str, Any] = {}
    if real_path:
        real = quality_real.run_real(
            works=works, wav_dir=wav_dir, sidecar=sidecar, renderer=renderer, clean=clean, checkpoint=checkpoint,
            workdir=workdir, quick=quick, rng=rng, style_queries=style_q, labels=labels,
        )  # fmt: skip
        notes += real.pop("notes", [])

    elapsed = time.perf_counter() - t_start
    report = Report(
        name="quality",
        title="Quality: re-finding passages, across instruments, by style",
        machine=machine_info(),
    )
    sizes = {
        "passage_queries_per_cell": n_passage,
        "passage_queries_per_10s_cell": n_passage_10,
        "cross_queries": n_cross,
        "style_queries": len(style_q),
        "lengths_s": LENGTHS,
    }
    report.data = {
        "library": lib_info, "sizes": sizes, "passage": passage, "cross": cross, "style": style,
        "style_ceiling": ceiling, "style_chance": chance, "real": real, "seconds": elapsed,
    }  # fmt: skip
    report.notes += [*library_notes(lib_info, sizes=sizes, seed=seed, elapsed=elapsed), *notes]
    sections(report, passage, cross, style, ceiling, chance, real)
    report.plots += plots(passage, out_dir)
    report.write(out_dir)
    return report
