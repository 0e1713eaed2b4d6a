"""A synthetic library for the scale benchmark: clustered 128-d vectors with metadata.

Vectors cluster by fake composer (composer centre → track centre → segment), so excluding
the query's own composer removes exactly the neighbourhood an approximate index searches
first: the hard case for filtered HNSW. Everything is a pure function of ``(n, seed)`` and
is generated in chunks so a million rows never need more than one copy in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIM = 128
SEGMENTS_PER_TRACK = 60  # a 2-minute track at one 10-s segment every 2 s
SEGMENT_HOP_S = 2.0
SEGMENT_S = 10.0
#: A track's length: its last segment starts at 118 s and ends at 128 s.
TRACK_SECONDS = (SEGMENTS_PER_TRACK - 1) * SEGMENT_HOP_S + SEGMENT_S
#: Frame rates of the stored chroma, as ingest writes them: per track (localization), per segment.
TRACK_CHROMA_FPS = 10
SEGMENT_CHROMA_FPS = 2
ERAS = ("medieval", "renaissance", "baroque", "classical", "romantic", "modern")
#: Spread around each centre, as a share of a unit vector's length.
TRACK_SPREAD = 0.8
SEGMENT_SPREAD = 0.55


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def _gauss(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Gaussian rows of expected unit length."""
    return rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(shape[-1]))


@dataclass
class SyntheticLibrary:
    """Metadata per track and per segment plus the generating centres (vectors come in chunks)."""

    n_segments: int
    seed: int
    composer_centres: np.ndarray  # [C, 128]
    composer_era: np.ndarray  # [C] index into ERAS
    track_centres: np.ndarray  # [N_tracks, 128]
    track_composer: np.ndarray  # [N_tracks]
    track_key: np.ndarray  # [N_tracks] 0..11
    track_mode: np.ndarray  # [N_tracks] 0 = major, 1 = minor

    @property
    def n_tracks(self) -> int:
        return int(self.track_centres.shape[0])

    @property
    def n_composers(self) -> int:
        return int(self.composer_centres.shape[0])

    def segment_track(self, *, start: int, stop: int) -> np.ndarray:
        """Track index of segments ``start..stop-1`` → ``[stop - start]``."""
        return np.arange(start, stop) // SEGMENTS_PER_TRACK

    def segment_vectors(self, *, start: int, stop: int) -> np.ndarray:
        """Embeddings of segments ``start..stop-1`` → ``[stop - start, 128]`` float32, unit length.

        Deterministic per chunk of :data:`SEGMENTS_PER_TRACK` rows, so any chunking gives the
        same vectors.
        """
        out = np.empty((stop - start, DIM), dtype=np.float32)
        for t in range(start // SEGMENTS_PER_TRACK, (stop - 1) // SEGMENTS_PER_TRACK + 1):
            lo, hi = max(start, t * SEGMENTS_PER_TRACK), min(stop, (t + 1) * SEGMENTS_PER_TRACK)
            rng = np.random.default_rng([self.seed, 1, t])
            noise = _gauss(rng, (SEGMENTS_PER_TRACK, DIM))[
                lo - t * SEGMENTS_PER_TRACK : hi - t * SEGMENTS_PER_TRACK
            ]
            out[lo - start : hi - start] = _unit(self.track_centres[t] + SEGMENT_SPREAD * noise)
        return out

    def track_chroma(self, t: int) -> np.ndarray:
        """Track ``t``'s 10-fps chroma ``[TRACK_SECONDS * 10, 12]`` float16: random, deterministic per track.

        Random values cost search's rerank and localize stages what real chroma costs; only
        their scores mean nothing.
        """
        rng = np.random.default_rng([self.seed, 4, t])
        return rng.random((int(TRACK_SECONDS * TRACK_CHROMA_FPS), 12), dtype=np.float32).astype(np.float16)

    def segment_chroma(self, *, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Chroma of segments ``start..stop-1`` from their track's chroma, as ingest derives it.

        Returns (mean ``[n, 12]`` float32, 2-fps sequence ``[n, 20, 12]`` float16).
        """
        block = TRACK_CHROMA_FPS // SEGMENT_CHROMA_FPS
        seq_len, seq_hop = int(SEGMENT_S * SEGMENT_CHROMA_FPS), int(SEGMENT_HOP_S * SEGMENT_CHROMA_FPS)
        seq = np.empty((stop - start, seq_len, 12), dtype=np.float16)
        for t in range(start // SEGMENTS_PER_TRACK, (stop - 1) // SEGMENTS_PER_TRACK + 1):
            lo, hi = max(start, t * SEGMENTS_PER_TRACK), min(stop, (t + 1) * SEGMENTS_PER_TRACK)
            slow = self.track_chroma(t).astype(np.float32).reshape(-1, block, 12).mean(axis=1)  # 2 fps
            # One window per segment start: [SEGMENTS_PER_TRACK, 12, seq_len].
            windows = np.lib.stride_tricks.sliding_window_view(slow, seq_len, axis=0)[::seq_hop]
            first = t * SEGMENTS_PER_TRACK
            seq[lo - start : hi - start] = windows[lo - first : hi - first].transpose(0, 2, 1)
        return seq.astype(np.float32).mean(axis=1), seq

    def queries(self, *, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` query vectors from NEW tracks of random composers → (``[n, 128]``, composer ``[n]``)."""
        rng = np.random.default_rng([self.seed, 2, seed])
        comp = rng.integers(self.n_composers, size=n)
        track = _unit(self.composer_centres[comp] + TRACK_SPREAD * _gauss(rng, (n, DIM)))
        return _unit(track + SEGMENT_SPREAD * _gauss(rng, (n, DIM))), comp


def make_library(*, n_segments: int, seed: int = 0) -> SyntheticLibrary:
    """Centres and metadata of a library of ``n_segments`` (tracks of 60 segments)."""
    rng = np.random.default_rng([seed, 0])
    n_tracks = max(1, -(-n_segments // SEGMENTS_PER_TRACK))
    n_comp = int(np.clip(n_tracks // 8, 10, 300))
    composer_centres = _unit(rng.standard_normal((n_comp, DIM), dtype=np.float32))
    composer_era = rng.integers(len(ERAS), size=n_comp)
    track_composer = rng.integers(n_comp, size=n_tracks)
    track_centres = _unit(composer_centres[track_composer] + TRACK_SPREAD * _gauss(rng, (n_tracks, DIM)))
    return SyntheticLibrary(
        n_segments=n_segments,
        seed=seed,
        composer_centres=composer_centres,
        composer_era=composer_era,
        track_centres=track_centres,
        track_composer=track_composer,
        track_key=rng.integers(12, size=n_tracks),
        track_mode=rng.integers(2, size=n_tracks),
    )
