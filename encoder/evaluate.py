"""Retrieval metrics on a corpus split: can a distorted view find its passage and its work?

The database is every clean view of the split cut like a library track (the embedder's
windowing: 10 s windows every 2 s); the queries are single windows of the *other* views (another instrument, melody only,
noise, EQ, MP3, reverb, ±1 semitone, ±5 % tempo) at random canonical starts.

- ``passage_top1`` / ``passage_top5``: the right work within ``tolerance_s`` of the query's
  canonical start is the first / among the first five results;
- ``work_p_at_10``: of the 10 nearest windows *not overlapping the query's passage*, the
  share from the query's work (other moments of the same piece);
- ``work_top1``: the nearest non-overlapping window is from the query's work;
- ``passage_top1_by_view``: ``passage_top1`` per kind of query view.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from encoder.data import Corpus, WorkInfo
from encoder.protocols import WindowedEmbedder
from encoder.windowing import DEFAULT_WINDOWING


class MeanPoolBaseline:
    """A no-learning baseline: the normalized acoustic frames averaged over the window."""

    windowing = DEFAULT_WINDOWING

    def __init__(self, *, mean: np.ndarray, std: np.ndarray):
        self.mean, self.std = mean.astype(np.float32), np.maximum(std.astype(np.float32), 1e-3)

    def embed_windows(self, *, windows: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        B, T, _ = windows.shape
        lengths = np.full(B, T) if lengths is None else lengths
        mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float32)[..., None]  # [B, T, 1]
        x = (windows - self.mean) / self.std  # [B, T, 143]
        v = (x * mask).sum(axis=1) / mask.sum(axis=1)  # [B, 143]
        return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)).astype(np.float32)


def _pick_works(corpus: Corpus, split: str, *, max_works: int, win_frames: int, seed: int) -> list[WorkInfo]:
    works = [
        w
        for w in corpus.split(split)
        if w.view("clean") is not None
        and len(w.views) > 1
        and w.max_start_s(win_frames=win_frames, fps=corpus.fps) >= 0
    ]
    if len(works) > max_works:
        rng = np.random.default_rng(seed)
        works = [works[i] for i in sorted(rng.choice(len(works), size=max_works, replace=False))]
    return works


def retrieval_metrics(
    *,
    embedder: WindowedEmbedder,
    corpus: Corpus,
    split: str,
    max_works: int = 40,
    queries_per_work: int = 6,
    tolerance_s: float = 2.5,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics (see the module doc) for ``split``; ``{"n_queries": 0}`` if the split is empty."""
    fps = corpus.fps
    win_frames, hop_frames = embedder.windowing.window_frames, embedder.windowing.hop_frames
    works = _pick_works(corpus, split, max_works=max_works, win_frames=win_frames, seed=seed)
    db_vecs, db_work, db_start = [], [], []
    for wi, w in enumerate(works):
        clean = w.view("clean")
        assert clean is not None
        frames = corpus.read_all(view=clean)  # [T, 143]
        starts = np.arange(0, max(frames.shape[0] - win_frames, 0) + 1, hop_frames)  # full windows only
        windows = frames[starts[:, None] + np.arange(win_frames)[None, :]]  # [N, W, 143]
        db_vecs.append(embedder.embed_windows(windows=windows))
        db_work.append(np.full(len(starts), wi))
        db_start.append(starts / (clean.time_scale * fps))
    if not works:
        return {"split": split, "n_queries": 0}
    db = np.concatenate(db_vecs)  # [M, D]
    dbw, dbs = np.concatenate(db_work), np.concatenate(db_start)  # [M]

    rng = np.random.default_rng([seed, 1])
    q_windows, q_work, q_start, q_view = [], [], [], []
    for wi, w in enumerate(works):
        others = [v for v in w.views if v.view != "clean"]
        max_s = w.max_start_s(win_frames=win_frames, fps=fps)
        for _ in range(queries_per_work):
            v = others[int(rng.integers(len(others)))]
            s = float(rng.uniform(0.0, max_s))
            q_windows.append(corpus.read(view=v, start=round(s * v.time_scale * fps), n_frames=win_frames))
            q_work.append(wi)
            q_start.append(s)
            q_view.append(v.view)
    q = embedder.embed_windows(windows=np.stack(q_windows))  # [Q, D]
    qw, qs = np.asarray(q_work), np.asarray(q_start)  # [Q]

    sims = q @ db.T  # [Q, M]
    same_work = dbw[None, :] == qw[:, None]  # [Q, M]
    near = np.abs(dbs[None, :] - qs[:, None]) <= tolerance_s  # [Q, M]
    order = np.argsort(-sims, axis=1)  # [Q, M]
    hit = (same_work & near)[np.arange(len(qw))[:, None], order]  # [Q, M], in rank order
    top1 = hit[:, 0]
    top5 = hit[:, :5].any(axis=1)
    # Work level: hide the query's own passage (windows overlapping it), rank the rest.
    overlap = same_work & (np.abs(dbs[None, :] - qs[:, None]) < win_frames / fps)  # [Q, M]
    masked = np.where(overlap, -np.inf, sims)
    order_w = np.argsort(-masked, axis=1)[:, :10]  # [Q, 10]
    work_hits = same_work[np.arange(len(qw))[:, None], order_w]  # [Q, 10]
    by_view: dict[str, float] = {}
    views = np.asarray(q_view)
    for name in sorted(set(q_view)):
        by_view[name] = round(float(top1[views == name].mean()), 4)
    return {
        "split": split,
        "n_works": len(works),
        "n_db_windows": int(len(dbw)),
        "n_queries": int(len(qw)),
        "passage_top1": round(float(top1.mean()), 4),
        "passage_top5": round(float(top5.mean()), 4),
        "work_p_at_10": round(float(work_hits.mean()), 4),
        "work_top1": round(float(work_hits[:, 0].mean()), 4),
        "passage_top1_by_view": by_view,
    }
