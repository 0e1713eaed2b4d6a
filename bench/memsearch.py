"""An in-memory stand-in for the retrieval path, for comparing embedders on equal terms.

Faithful to what ingest and search do, minus the database: audio is leveled like the
product (:func:`retrieval.analysis.prepare`), library tracks are cut into the same 10-s
windows every 2 s (:func:`window_starts` = ``Embedder.embed_track``'s rule), search is EXACT
cosine over all segments with one result per track, and each hit's start is localized on the
10-fps chroma with :func:`retrieval.localize.localize` under the key shift of
:func:`retrieval.similarity.harmonic_similarity`, as search does. No reranking.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from encoder.features import CHROMA, FPS
from encoder.protocols import WindowEmbedder
from encoder.windowing import DEFAULT_WINDOWING

#: The library is cut as ingest cuts it: the shipped encoder's windowing (10 s every 2 s).
WIN = DEFAULT_WINDOWING.window_frames


def window_starts(*, n_frames: int) -> np.ndarray:
    """Frame starts of the library windows of a track of ``n_frames`` (as ``Embedder.embed_track``)."""
    return DEFAULT_WINDOWING.track_starts(n_frames)[0]


def cut_windows(*, frames: np.ndarray, starts: np.ndarray, win: int = WIN) -> tuple[np.ndarray, np.ndarray]:
    """``frames [T, 143]`` and window ``starts [N]`` → (``[N, win, 143]``, lengths ``[N]``)."""
    n = len(frames)
    idx = starts[:, None] + np.arange(win)[None, :]
    return frames[np.minimum(idx, n - 1)], np.minimum(n - starts, win)


def prepare_audio(*, y: np.ndarray) -> np.ndarray:
    """The product's leveling (falls back to the raw signal if retrieval is unavailable)."""
    try:
        from retrieval.analysis import prepare
    except ImportError:  # pragma: no cover - retrieval is part of the product
        return y
    return prepare(y=y)


def features(*, y: np.ndarray) -> np.ndarray:
    """Leveled audio → acoustic frames ``[T, 143]``."""
    from encoder.features import acoustic_features

    return acoustic_features(y=prepare_audio(y=y))


@dataclass
class Library:
    """Frames of each track plus, per embedder, the segment embeddings."""

    track_ids: list[str] = field(default_factory=list)
    frames: dict[str, np.ndarray] = field(default_factory=dict)
    seg_track: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [N] index into track_ids
    seg_start: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [N] seconds
    windows: np.ndarray | None = None  # [N, 100, 143]
    lengths: np.ndarray | None = None  # [N]
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [N, d]

    @classmethod
    def build(cls, frames_by_track: dict[str, np.ndarray]) -> Library:
        lib = cls()
        seg_t, seg_s, wins, lens = [], [], [], []
        for i, (tid, fr) in enumerate(frames_by_track.items()):
            lib.track_ids.append(tid)
            lib.frames[tid] = fr
            st = window_starts(n_frames=len(fr))
            if len(st) == 0:
                continue
            w, ln = cut_windows(frames=fr, starts=st)
            seg_t.append(np.full(len(st), i))
            seg_s.append(st / FPS)
            wins.append(w)
            lens.append(ln)
        lib.seg_track = np.concatenate(seg_t)
        lib.seg_start = np.concatenate(seg_s)
        lib.windows = np.concatenate(wins)
        lib.lengths = np.concatenate(lens)
        return lib

    @property
    def n_segments(self) -> int:
        return len(self.seg_track)

    def embed(self, name: str, embedder: WindowEmbedder) -> np.ndarray:
        assert self.windows is not None, "build the library first"
        self.embeddings[name] = embedder.embed_windows(windows=self.windows, lengths=self.lengths)
        return self.embeddings[name]

    def search(
        self,
        name: str,
        *,
        query: np.ndarray,
        query_frames: np.ndarray | None = None,
        k: int = 10,
        exclude_track: int | None = None,
        penalties: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact top-``k`` tracks for one query embedding ``[d]``, one result per track.

        ``query`` may be ``[P, d]`` probes (:class:`KeyProbes`), with ``penalties [P]`` subtracted.

        Returns (track indices ``[k]`` (-1 = none), localized starts ``[k]`` s, scores ``[k]``).
        With ``query_frames`` the start is localized on the chroma; else the segment start.
        """
        emb = self.embeddings[name]
        if query.ndim == 2:  # key probes [P, d]: a segment scores its best probe less the penalty
            pen = np.zeros(len(query)) if penalties is None else np.asarray(penalties)
            sims = (emb @ query.astype(np.float32).T - pen[None, :].astype(np.float32)).max(axis=1)  # [N]
        else:
            sims = emb @ query.astype(np.float32)  # [N]
        n_tracks = len(self.track_ids)
        best = np.full(n_tracks, -np.inf)
        best_seg = np.full(n_tracks, -1)
        order = np.argsort(-sims)
        for j in order:  # first time a track is seen is its best segment
            t = self.seg_track[j]
            if best_seg[t] < 0:
                best_seg[t] = j
                best[t] = sims[j]
        if exclude_track is not None:
            best[exclude_track] = -np.inf
        top = np.argsort(-best)[:k]
        top = top[np.isfinite(best[top])]
        tracks = np.full(k, -1, dtype=np.int64)
        starts = np.zeros(k)
        scores = np.full(k, np.nan)
        tracks[: len(top)] = top
        scores[: len(top)] = best[top]
        for r, t in enumerate(top):
            s = float(self.seg_start[best_seg[t]])
            if query_frames is not None:
                # A clip shorter than the window most likely sits in its middle: start the
                # ±5-s chroma search there so every position inside the window is reachable.
                centred = s + max(0.0, (WIN - len(query_frames)) / FPS / 2)
                s = self.localize(track=int(t), query_frames=query_frames, approx_start_s=centred)
            starts[r] = s
        return tracks, starts, scores

    def localize(self, *, track: int, query_frames: np.ndarray, approx_start_s: float) -> float:
        """Where the query lines up near ``approx_start_s``, as search cites a start
        (:func:`retrieval.passage.align`: smoothed chroma, the query's key or the segment's)."""
        from retrieval.passage import align
        from retrieval.similarity import harmonic_similarity

        fr = self.frames[self.track_ids[track]]
        i = int(round(approx_start_s * FPS))
        seg = fr[i : i + WIN, CHROMA]
        q = query_frames[:, CHROMA]
        _, shift = harmonic_similarity(query=q.mean(0), candidate=seg.mean(0))
        return align(
            query_chroma=q, track_chroma=fr[:, CHROMA], approx_starts=[approx_start_s], shifts=(0, shift)
        ).start_s


@dataclass
class KeyProbes:
    """``base`` searched the way ``retrieval.search`` searches an audio query: the query window
    as it is plus moved by ``semitones`` in the feature domain, each probe's similarity less
    ``penalty`` (the product's ``TRANSPOSED_PENALTY``), best probe per segment."""

    base: Any
    semitones: tuple[int, ...] = (-1, 1)
    penalty: float = 0.02

    def embed_windows(self, *, windows: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        return self.base.embed_windows(windows=windows, lengths=lengths)

    def penalties(self) -> np.ndarray:
        return np.array([0.0] + [self.penalty] * len(self.semitones))  # [P]


def query_embeddings(embedder: Any, frames_list: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """``([Q, d], None)``, or for :class:`KeyProbes` ``([Q, P, d], penalties [P])``."""
    if not isinstance(embedder, KeyProbes):
        return embed_queries(embedder, frames_list), None
    from encoder.feataug import pitch_shift

    per_probe = [embed_queries(embedder.base, frames_list)]
    for s in embedder.semitones:
        moved = [pitch_shift(frames=f, semitones=float(s)) for f in frames_list]
        per_probe.append(embed_queries(embedder.base, moved))
    return np.stack(per_probe, axis=1), embedder.penalties()  # [Q, P, d]


def embed_queries(embedder: WindowEmbedder, frames_list: list[np.ndarray]) -> np.ndarray:
    """Each query's frames ``[T_i, 143]`` (T_i ≤ 300) → ``[Q, d]`` in one padded batch call."""
    t_max = max(len(f) for f in frames_list)
    wins = np.zeros((len(frames_list), t_max, frames_list[0].shape[1]), dtype=np.float32)
    for i, f in enumerate(frames_list):
        wins[i, : len(f)] = f
        wins[i, len(f) :] = f[-1]  # padding is masked; repeat the last frame to stay finite
    lengths = np.asarray([len(f) for f in frames_list])
    return embedder.embed_windows(windows=wins, lengths=lengths)


def embed_systems(lib: Library, systems: dict[str, Any]) -> dict[str, float]:
    """Embed the library once per system; key probes share their base's segment embeddings.
    Returns seconds per system."""
    seconds = {}
    for name, emb in systems.items():
        t0 = time.perf_counter()
        base = next(
            (
                b
                for b, e in systems.items()
                if isinstance(emb, KeyProbes) and e is emb.base and b in lib.embeddings
            ),
            None,
        )
        if base is not None:
            lib.embeddings[name] = lib.embeddings[base]
        else:
            lib.embed(name, emb)
        seconds[name] = time.perf_counter() - t0
    return seconds


@dataclass
class SoundEmbedder:
    """The rerank's sound aspect in memory: ``base`` embedding cosine + ``weight`` × (1 + timbre cosine) / 2.

    One vector per window, ``[base, sqrt(weight / 2) · timbre]``, whose dot products are that sum
    less its constant ``weight / 2`` (same order), so :class:`Library`'s exact search applies
    unchanged. ``timbre`` is an :class:`encoder.timbre.TimbreModel`, ``weight`` its fitted weight.
    """

    base: Any
    timbre: Any
    weight: float

    def embed_windows(self, *, windows: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        e = self.base.embed_windows(windows=windows, lengths=lengths)
        t = self.timbre.embed_windows(windows=windows, lengths=lengths)
        return np.concatenate([e, np.sqrt(self.weight / 2.0) * t], axis=1).astype(np.float32)
