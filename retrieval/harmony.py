"""Harmony vectors: a window's chord sequence as one vector, for a second candidate source.

Under a phone line (300–3400 Hz) the learned embedding of a clip often lands far from its own
recording: on training sources the right track was outside the candidate pool in half the phone
misses. Its chroma still lines up with the stored chroma (retrieval/passage.py), so search asks a
second index by harmony (sql/009_harmony.sql, :func:`retrieval.nearest.harmony_nearest`).

A segment's vector is its window's 10-fps chroma pooled into 1-s blocks, each block unit length,
concatenated and scaled to unit length. The query's blocks rarely sit on the stored 2-s grid, so
it is asked at :data:`QUERY_OFFSETS` (its chroma from 0 and from 1 s in): a segment starts within
1 s after one of them. In memory on training sources (66 tracks, 60 clips a cell), the right track
was among the 10 tracks nearest by harmony for every clean, noise, reverb, phone and 5-s clip
(bench/results/harmony_source.md). Pure functions; the stored chroma
(track_chroma) is all they need, so a library is filled without decoding audio again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from encoder.windowing import DEFAULT_WINDOWING

#: Chroma frames pooled into one block (1 s at 10 fps). Right phone track in the top 10 (blocks centred,
#: four probes): 0.5-s blocks 0.97 with twice the dimensions, 1-s 0.98, 2-s 0.95. Not centred: the
#: raw chroma's blocks put it first more often (0.92 against 0.88), so blocks are not centred.
BLOCK_FRAMES = 10
#: Blocks of one window: a 10-s segment.
BLOCKS = DEFAULT_WINDOWING.window_frames // BLOCK_FRAMES
#: Dimensions of a harmony vector (the column type in sql/009_harmony.sql).
HARMONY_DIM = BLOCKS * 12
#: Frames into the query where its probes start. One probe at 0 (a segment up to 2 s off the
#: query's start) put the right phone/reverb track first less often than two (top-1 0.90 / 0.90 against
#: 0.90 / 0.97) and dropped 5-s clips to 0.88 (0.95 with two).
QUERY_OFFSETS = (0, 10)


@dataclass(frozen=True)
class Probe:
    offset_s: float  # seconds into the query where the probe's first block starts
    vector: np.ndarray  # [HARMONY_DIM] float32, unit length
    blocks: int  # blocks with chroma in them (the rest are 0)


def block_vector(chroma: np.ndarray, blocks: int = BLOCKS) -> tuple[np.ndarray, int]:
    """``chroma [T, 12]`` → (``[blocks * 12]`` float32 unit vector, blocks filled): mean chroma per
    :data:`BLOCK_FRAMES` frames, each block unit length; blocks past the end (or silent) stay 0."""
    c = np.asarray(chroma, dtype=np.float32)[: blocks * BLOCK_FRAMES]
    out = np.zeros((blocks, 12), np.float32)
    n = len(c) // BLOCK_FRAMES
    # A short last block (> half a block of frames) still counts: a 5-s clip cut at 4.7 s keeps 5.
    if len(c) - n * BLOCK_FRAMES > BLOCK_FRAMES // 2:
        out[n] = c[n * BLOCK_FRAMES :].mean(axis=0)
    if n:
        out[:n] = c[: n * BLOCK_FRAMES].reshape(n, BLOCK_FRAMES, 12).mean(axis=1)
    norms = np.linalg.norm(out, axis=1)
    filled = norms > 1e-6
    out[filled] /= norms[filled, None]
    k = int(filled.sum())
    return (out.reshape(-1) / np.sqrt(k) if k else out.reshape(-1)), k


def segment_harmony(
    chroma: np.ndarray, starts_s: list[float] | np.ndarray, *, fps: int = DEFAULT_WINDOWING.fps
) -> list[np.ndarray | None]:
    """The harmony vector of the window starting at each of ``starts_s`` in a track's ``chroma [T, 12]``
    (None for a window without chroma: pgvector's cosine is undefined for a zero vector)."""
    out: list[np.ndarray | None] = []
    for s in starts_s:
        i = int(round(float(s) * fps))
        v, k = block_vector(chroma[i : i + BLOCKS * BLOCK_FRAMES])
        out.append(v if k else None)
    return out


def query_probes(chroma: np.ndarray, offsets: tuple[int, ...] = QUERY_OFFSETS) -> list[Probe]:
    """The probes of a query's chroma ``[Tq, 12]``: its blocks from each of ``offsets`` frames in (those with chroma)."""
    probes = []
    for d in offsets:
        v, k = block_vector(np.asarray(chroma)[d:])
        if k:
            probes.append(Probe(d / DEFAULT_WINDOWING.fps, v, k))
    return probes


def block_similarity(distance: float, probe: Probe) -> float:
    """A cosine ``distance`` between ``probe`` and a full segment → the mean cosine of the probe's blocks
    with the segment's: comparable across probes with fewer blocks (a short clip, a later offset)."""
    return (1.0 - float(distance)) * float(np.sqrt(BLOCKS / max(probe.blocks, 1)))
