"""The systems the quality benchmarks compare, name → window embedder, and how their hits are scored.

Shared by ``bench quality`` (:mod:`bench.quality`), ``bench recorded`` and ``bench likeness``:
the MFCC+chroma statistics baseline, the untrained architecture, the shipped checkpoint (alone and
searched with key probes, as ``retrieval.search`` searches a clip) and an optional candidate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.baselines import StatsEmbedder
from bench.memsearch import KeyProbes, Library, query_embeddings
from bench.metrics import hit_rate_at, literal_repeat, mrr, passage_hits, precision_at_k
from bench.queries import Query
from encoder.embed import Embedder
from encoder.features import MEL
from retrieval.nearest import TRANSPOSED_PENALTY
from retrieval.types import SearchRequest

#: The key probes the product's search adds to a clip query.
SEARCH_PROBES = SearchRequest().transpose_probes
#: The shipped checkpoint searched as the product searches an audio clip (retrieval.search).
PROBED = "cadenza+key probes"
#: A checkpoint measured next to the shipped one (``--candidate``): the ship decision's other side.
CANDIDATE = "cadenza v2"
CANDIDATE_PROBED = "cadenza v2+key probes"
K = 10


def build_systems(
    checkpoint: Path | None, lib: Library, notes: list[str], candidate: Path | None = None
) -> dict[str, Any]:
    """The compared systems, name → window embedder; the stats baseline is fitted on ``lib``'s
    windows. Shared with :mod:`bench.recorded`. Appends what was loaded to ``notes``. With
    ``candidate``, that checkpoint is measured too (:data:`CANDIDATE`, with and without probes)."""
    assert lib.windows is not None
    systems: dict[str, Any] = {
        "mfcc+chroma stats": StatsEmbedder.fit(windows=lib.windows, lengths=lib.lengths),
        "untrained": Embedder.untrained(seed=0),
    }
    try:
        shipped = Embedder.load(checkpoint)
        systems["cadenza"] = shipped
        systems[PROBED] = KeyProbes(base=shipped, semitones=SEARCH_PROBES, penalty=TRANSPOSED_PENALTY)
        notes.append(
            f"cadenza = checkpoint {shipped.model_version} ({checkpoint or 'shipped encoder/checkpoints/cadenza-v1'})."
        )
    except Exception as exc:  # ConfigError when no checkpoint is committed yet
        notes.append(f"NO trained checkpoint could be loaded ({exc}); only the baselines were measured.")
    if candidate is not None:
        other = Embedder.load(candidate)  # asked for by name: a bad folder is the caller's error
        systems[CANDIDATE] = other
        systems[CANDIDATE_PROBED] = KeyProbes(base=other, semitones=SEARCH_PROBES, penalty=TRANSPOSED_PENALTY)
        notes.append(f"{CANDIDATE} = checkpoint {other.model_version} ({candidate}).")
    return systems


def score_passages(
    lib: Library,
    name: str,
    embedder: Any,
    queries: list[Query],
    frames: list[np.ndarray],
    splits: np.ndarray | None = None,
) -> dict[str, float]:
    """Hit rates over ``queries``; with ``splits`` (the split of each library work) also per split
    (``top1@test``, ``top10@heldout``…: unseen works of trained composers vs unseen composers)."""
    emb, pen = query_embeddings(embedder, frames)
    works, starts = np.full((len(queries), K), -1), np.zeros((len(queries), K))
    for i in range(len(queries)):
        works[i], starts[i], _ = lib.search(name, query=emb[i], query_frames=frames[i], k=K, penalties=pen)
    hits = passage_hits(
        ranked_work=works,
        ranked_start=starts,
        true_work=np.array([q.work_index for q in queries]),
        true_start=np.array([q.start_s for q in queries]),
    )
    # Repeat-aware: a result on the right work that lands on a literal repeat of the passage
    # (the score plays it twice) is the same music; counted separately, never in the strict rates.
    rep_hits = hits.copy()
    for i, q in enumerate(queries):
        for r in range(K):
            if works[i, r] == q.work_index and not hits[i, r]:
                rep_hits[i, r] = literal_repeat(
                    mel=lib.frames[lib.track_ids[q.work_index]][:, MEL],
                    true_start_s=q.start_s,
                    found_start_s=float(starts[i, r]),
                    length_s=q.length_s,
                )
    # Right work anywhere in the track: separates finding the piece from localizing the moment.
    work_hits = (works == np.array([q.work_index for q in queries])[:, None]) & (works >= 0)
    out: dict[str, float] = {
        "top1": hit_rate_at(hits, 1),
        "top10": hit_rate_at(hits, K),
        "mrr": mrr(hits),
        "top1_rep": hit_rate_at(rep_hits, 1),
        "top10_rep": hit_rate_at(rep_hits, K),
        "work_top1": hit_rate_at(work_hits, 1),
        "work_top10": hit_rate_at(work_hits, K),
        "n": len(queries),
    }
    if splits is not None:
        q_split = np.array([splits[q.work_index] for q in queries])
        for sp in ("test", "heldout"):
            sel = q_split == sp
            if sel.any():
                out[f"top1@{sp}"] = hit_rate_at(hits[sel], 1)
                out[f"top10@{sp}"] = hit_rate_at(hits[sel], K)
                out[f"top1_rep@{sp}"] = hit_rate_at(rep_hits[sel], 1)
                out[f"top10_rep@{sp}"] = hit_rate_at(rep_hits[sel], K)
                out[f"n@{sp}"] = int(sel.sum())
    return out


def style_precision(
    lib: Library,
    name: str,
    embedder: Any,
    queries: list[Query],
    frames: list[np.ndarray],
    labels: dict[str, np.ndarray],
    splits: np.ndarray | None = None,
) -> dict[str, float]:
    """P@10 of same-``label`` results among the OTHER works, per label (composer, era); per split too."""
    emb, pen = query_embeddings(embedder, frames)
    out = {}
    for label, per_track in labels.items():
        rel = np.zeros((len(queries), K), dtype=bool)
        for i, q in enumerate(queries):
            tracks, _, _ = lib.search(name, query=emb[i], k=K, exclude_track=q.work_index, penalties=pen)
            ok = tracks >= 0
            rel[i, ok] = per_track[tracks[ok]] == per_track[q.work_index]
        out[f"{label}_p@10"] = precision_at_k(relevant=rel, k=K)
        if splits is not None:
            q_split = np.array([splits[q.work_index] for q in queries])
            for sp in ("test", "heldout"):
                if (q_split == sp).any():
                    out[f"{label}_p@10@{sp}"] = precision_at_k(relevant=rel[q_split == sp], k=K)
    return out
