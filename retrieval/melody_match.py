"""Key-invariant, tempo-tolerant matching of a sung contour against the library's window contours.

Pure numpy. Pitches become unit phasors ``exp(2πi·midi/12)``: a pitch class is an angle, so
the octave a listener hums in (or an octave error of either pitch estimate) changes nothing,
and a transposition by k semitones is one rotation of every query phasor. Aligned frame by
frame, ``Σ library · conj(query)`` then has the same angle in every frame exactly when the
two lines move by the same intervals; its length (over the query's voiced frames) is the
match score in [0, 1] and its angle *is* the transposition, so every key is tried at once
with no search over shifts. Pitch drift of ±30 cents turns the angles by at most 15°.

Tempo: the query is resampled at :data:`TEMPO_FACTORS`; timing: a chunk of
:data:`CHUNK_FRAMES` library frames is slid over every offset of every window (the window
is 10 s, the chunk 7 s, windows start every 2 s, so any 7-s stretch of a track lies inside
some window at some offset). Several query chunks (start, middle, end of the hum) are
tried; all of it is one complex matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Hum speed ÷ library speed tried; ×0.8 … ×1.25 in ~7 % steps (a 3.5 % miss costs little:
#: over a 7-s chunk it moves the last note by a quarter of a second at most).
TEMPO_FACTORS: tuple[float, ...] = (0.8, 0.86, 0.93, 1.0, 1.07, 1.15, 1.25)
#: Library frames (10 fps) one query chunk covers.
CHUNK_FRAMES = 70
#: Query chunks tried: the hum's start, middle and end (a hum longer than one chunk).
N_CHUNKS = 3
#: A query needs this many voiced frames (at 10 fps) to be matched by melody.
MIN_VOICED_FRAMES = 20
#: Per-frame likeness is Σ_k cos(k·Δ) over this many harmonics of the pitch-class angle Δ (÷ K):
#: 1 at the same pitch class, 0.91 at 30 cents off, 0.22 a semitone off, negative beyond. With
#: the first harmonic alone (cos Δ) a semitone off still counted 0.87, and unrelated stepwise
#: lines reached 0.73 against 0.9 for the right one (tests/test_melody_match.py).
KERNEL_HARMONICS = 4
#: Window offsets step (frames): 1 = every 0.1 s.
OFFSET_STEP = 1


@dataclass(frozen=True)
class WindowMatch:
    """The best alignment of the query with each library window (arrays over windows)."""

    score: np.ndarray  # [W] in [0, 1]
    shift: np.ndarray  # [W] semitones, library = query + shift, in (-6, 6]
    tempo: np.ndarray  # [W] hum speed ÷ library speed
    offset_frames: np.ndarray  # [W] where in the window the match starts (10-fps frames)
    query_start_frames: np.ndarray  # [W] the hum frame the matched chunk starts at

    def hum_start_s(self, i: int, *, window_start_s: float, fps: float) -> float:
        """Library time (s) where the *whole* hum starts, for window ``i`` starting at ``window_start_s``."""
        lib_frames = float(self.offset_frames[i]) - float(self.query_start_frames[i]) * float(self.tempo[i])
        return max(0.0, window_start_s + lib_frames / fps)


def phasors(midi: np.ndarray) -> np.ndarray:
    """``[..., T]`` MIDI (NaN unvoiced) → complex64 unit phasors, 0 where unvoiced."""
    m = np.asarray(midi, dtype=np.float64)
    ok = np.isfinite(m)
    return np.where(ok, np.exp(2j * np.pi * np.where(ok, m, 0.0) / 12.0), 0.0).astype(np.complex64)


def query_columns(midi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A query contour ``[Tq]`` → (columns ``[CHUNK_FRAMES, C]`` conj phasors, tempo ``[C]``, chunk start ``[C]``).

    One column per (tempo factor, chunk): the query resampled to library time (frame j of
    the chunk is hum frame ``start + j ÷ factor``: a hum sung at ×0.85 takes 1/0.85 as many
    frames for the same notes) — frames past the hum's end are unvoiced.
    """
    q = np.asarray(midi, dtype=np.float64)
    cols, tempos, chunk_starts = [], [], []
    tq = q.size
    for f in TEMPO_FACTORS:
        span = int(np.ceil(CHUNK_FRAMES / f))  # hum frames one chunk covers
        starts = sorted({0, max(0, (tq - span) // 2), max(0, tq - span)})[:N_CHUNKS]
        for s in starts:
            idx = s + np.round(np.arange(CHUNK_FRAMES) / f).astype(np.int64)
            col = np.full(CHUNK_FRAMES, np.nan)
            ok = idx < tq
            col[ok] = q[idx[ok]]
            cols.append(np.conj(phasors(col)))
            tempos.append(f)
            chunk_starts.append(s)
    return np.stack(cols, axis=1), np.asarray(tempos), np.asarray(chunk_starts)


def match_windows(*, query_midi: np.ndarray, library: np.ndarray) -> WindowMatch:
    """Best alignment of ``query_midi [Tq]`` with each of ``library [W, F]`` window contours (NaN unvoiced).

    Score = the mean per-frame likeness (see :data:`KERNEL_HARMONICS`) at the transposition
    the first harmonic's angle gives, over the query chunk's voiced frames: 1 for the same
    intervals throughout, near 0 for unrelated lines, lower when the library is unvoiced where
    the query sings.
    """
    lib = np.asarray(library, dtype=np.float32)
    w, f = lib.shape
    if f < CHUNK_FRAMES:  # a short last window: pad with unvoiced frames
        lib = np.concatenate([lib, np.full((w, CHUNK_FRAMES - f), np.nan, np.float32)], axis=1)
        f = CHUNK_FRAMES
    cols, tempos, chunk_starts = query_columns(query_midi)
    voiced = np.maximum(np.sum(cols != 0, axis=0), 1)  # [C]
    p = phasors(lib)  # [W, F]
    views = np.lib.stride_tricks.sliding_window_view(p, CHUNK_FRAMES, axis=1)[:, ::OFFSET_STEP]  # [W, O, CH]
    prod = views @ cols  # [W, O, C]: the first harmonic, whose angle is the transposition
    turn = np.exp(-1j * np.angle(prod))  # undo that transposition ...
    acc = np.real(prod * turn)
    for k in range(2, KERNEL_HARMONICS + 1):  # ... and add the higher harmonics at the same shift
        vk = np.lib.stride_tricks.sliding_window_view(p**k, CHUNK_FRAMES, axis=1)[:, ::OFFSET_STEP]
        acc += np.real((vk @ cols**k) * turn**k)
    score = np.maximum(acc, 0.0) / (KERNEL_HARMONICS * voiced[None, None, :])
    flat = score.reshape(w, -1)
    best = np.argmax(flat, axis=1)
    o, c = np.divmod(best, score.shape[2])
    z = prod[np.arange(w), o, c]
    shift = np.angle(z) * 12.0 / (2 * np.pi)  # (-6, 6]
    return WindowMatch(
        score=flat[np.arange(w), best].astype(np.float32),
        shift=shift.astype(np.float32),
        tempo=tempos[c].astype(np.float32),
        offset_frames=(o * OFFSET_STEP).astype(np.int64),
        query_start_frames=chunk_starts[c].astype(np.int64),
    )
