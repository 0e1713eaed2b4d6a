"""Key-invariant, tempo-tolerant matching of a sung contour against the library's melodic lines.

Pure numpy. Pitches become unit phasors ``exp(2πi·midi/12)``: a pitch class is an angle, so
the octave a listener hums in (or an octave error of either pitch estimate) changes nothing,
and a transposition by k semitones is one rotation of every query phasor. Aligned frame by
frame, ``Σ_t library_t^k · conj(query_t)^k`` (k = 1 … :data:`KERNEL_HARMONICS`) holds, for every
transposition θ at once, the summed per-frame likeness ``Σ_k cos(k·(Δ_t − θ))``; the best θ
comes from a grid of :data:`N_SHIFTS` transpositions as one small real matrix product.

The *whole* hum is slid over each track's whole line (the stored 10-s windows joined again,
:func:`join_windows`), at every 0.1-s offset and at each of :data:`TEMPO_FACTORS`. Measured on
the humming benchmark (bench/results/humming.md): the previous matcher slid 7-s chunks of the
hum over each 10-s window separately and kept the best chunk; it found the right work in the
top 10 far more often than the right passage, because a 7-s chunk gives less evidence against
the library line's errors (about 30 % of its frames hold another voice) and its start had to be
inferred back from the chunk. The whole hum against the joined line scores more frames at once
and says directly where in the track the hum starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Hum speed ÷ library speed tried; ×0.8 … ×1.25 in ~7 % steps (a 3.5 % miss moves the end of a
#: 10-s hum by 0.35 s, which the per-frame kernel absorbs for held notes).
TEMPO_FACTORS: tuple[float, ...] = (0.8, 0.86, 0.93, 1.0, 1.07, 1.15, 1.25)
#: A query needs this many voiced frames (at 10 fps) to be matched by melody.
MIN_VOICED_FRAMES = 20
#: Per-frame likeness is Σ_k cos(k·Δ) over this many harmonics of the pitch-class angle Δ (÷ K):
#: 1 at the same pitch class, 0.76 at 30 cents off, near 0 a semitone off, negative beyond. With
#: the first harmonic alone (cos Δ) a semitone off still counted 0.87, and unrelated stepwise
#: lines reached 0.73 against 0.9 for the right one (tests/test_melody_match.py).
KERNEL_HARMONICS = 4
#: Transpositions tried: quarter tones (a drift of ±30 cents is then at most 12.5 cents off the grid).
N_SHIFTS = 48
#: At most this many hum frames are matched (20 s at 10 fps: retrieval.melody_search.MAX_SUNG_S).
MAX_QUERY_FRAMES = 200
#: Alignments scored at once (memory: ~1.3 KB each).
BLOCK_POSITIONS = 8192
#: Unvoiced frames between two tracks' lines: longer than any hum at any tempo, so no alignment spans two tracks.
GAP_FRAMES = int(np.ceil(max(TEMPO_FACTORS) * MAX_QUERY_FRAMES)) + 1


@dataclass(frozen=True)
class JoinedLines:
    """Every track's melodic line laid end to end, with unvoiced gaps between tracks.

    ``line [N]`` float32 MIDI (NaN unvoiced), ``track [N]`` the track id of each frame (-1 in a
    gap), ``frame [N]`` the frame's index in its track (10 fps). A gap is longer than any hum,
    so no alignment spans two tracks.
    """

    line: np.ndarray
    track: np.ndarray
    frame: np.ndarray


def join_windows(
    *, tracks: np.ndarray, starts_s: np.ndarray, windows: list[np.ndarray], fps: float, gap: int = GAP_FRAMES
) -> JoinedLines:
    """The stored windows (``[F]`` each, overlapping, of ``tracks [W]`` at ``starts_s [W]``) → :class:`JoinedLines`.

    Windows overlap (10 s every 2 s) and hold the same contour where they do, so each frame is
    written by whichever window covers it; frames no window covers stay unvoiced.
    """
    order = np.lexsort((np.asarray(starts_s), np.asarray(tracks)))
    lines, owners, frames = [np.full(gap, np.nan, np.float32)], [np.full(gap, -1)], [np.zeros(gap, np.int64)]
    i = 0
    while i < order.size:
        t = int(tracks[order[i]])
        j = i
        while j < order.size and int(tracks[order[j]]) == t:
            j += 1
        first = [int(round(float(starts_s[k]) * fps)) for k in order[i:j]]
        n = max(f + windows[k].size for f, k in zip(first, order[i:j], strict=True))
        line = np.full(n, np.nan, np.float32)
        for f, k in zip(first, order[i:j], strict=True):
            line[f : f + windows[k].size] = windows[k]
        lines += [line, np.full(gap, np.nan, np.float32)]
        owners += [np.full(n, t), np.full(gap, -1)]
        frames += [np.arange(n), np.zeros(gap, np.int64)]
        i = j
    return JoinedLines(line=np.concatenate(lines), track=np.concatenate(owners), frame=np.concatenate(frames))


@dataclass(frozen=True)
class LineMatch:
    """The best alignment of the hum at every position of :class:`JoinedLines` (arrays ``[N]``).

    Position ``i`` aligns the hum's first voiced frame with ``line[i]``; ``track`` and
    ``start_frame`` say which track (-1: mostly in a gap) and where in it (may be < 0 when the hum
    starts before the track does).
    """

    score: np.ndarray  # [N] in [0, 1]
    shift: np.ndarray  # [N] semitones, library = query + shift, in [-6, 6)
    tempo: np.ndarray  # [N] hum speed ÷ library speed
    track: np.ndarray  # [N] track id, -1 where the alignment lies mostly in a gap
    start_frame: np.ndarray  # [N] library frame (10 fps, in its track) where the hum starts
    hum_frames: int  # the hum's voiced span in its own frames

    def track_best(self) -> dict[int, int]:
        """Track id → the position of its best alignment."""
        ok = self.track >= 0
        idx = np.flatnonzero(ok)
        order = idx[np.argsort(-self.score[ok], kind="stable")]
        best: dict[int, int] = {}
        for i in order.tolist():
            best.setdefault(int(self.track[i]), i)
        return best


def phasors(midi: np.ndarray) -> np.ndarray:
    """``[..., T]`` MIDI (NaN unvoiced) → complex64 unit phasors, 0 where unvoiced."""
    m = np.asarray(midi, dtype=np.float64)
    ok = np.isfinite(m)
    return np.where(ok, np.exp(2j * np.pi * np.where(ok, m, 0.0) / 12.0), 0.0).astype(np.complex64)


def voiced_span(midi: np.ndarray) -> np.ndarray:
    """The query from its first to its last voiced frame (at most :data:`MAX_QUERY_FRAMES`)."""
    q = np.asarray(midi, dtype=np.float64)
    v = np.flatnonzero(np.isfinite(q))
    if v.size == 0:
        return q[:0]
    return q[v[0] : v[-1] + 1][:MAX_QUERY_FRAMES]


def query_columns(midi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A hum ``[Tq]`` → (columns ``[L, C]`` conj phasors, tempo ``[C]``, column length ``[C]``).

    One column per tempo factor: the hum resampled to library time (library frame j is hum
    frame ``j ÷ factor``: a hum sung at ×0.85 takes 1/0.85 as many frames for the same notes),
    zero-padded to the longest column ``L``.
    """
    q = voiced_span(midi)
    cols, lengths = [], []
    for f in TEMPO_FACTORS:
        idx = np.round(np.arange(int(np.ceil(q.size * f))) / f).astype(np.int64)
        idx = idx[idx < q.size]
        cols.append(np.conj(phasors(q[idx])))
        lengths.append(idx.size)
    out = np.zeros((max(lengths, default=1), len(cols)), np.complex64)
    for c, col in enumerate(cols):
        out[: col.size, c] = col
    return out, np.asarray(TEMPO_FACTORS), np.asarray(lengths)


def _shift_basis() -> tuple[np.ndarray, np.ndarray]:
    """(θ ``[S]`` transposition angles, basis ``[2K, S]``): ``[Re z, Im z] @ basis`` = ``Σ_k Re(z_k e^{-ikθ})``."""
    theta = np.arange(N_SHIFTS) * 2 * np.pi / N_SHIFTS
    k = np.arange(1, KERNEL_HARMONICS + 1)[:, None]
    return theta, np.concatenate([np.cos(k * theta), np.sin(k * theta)]).astype(np.float32)


def match_lines(*, query_midi: np.ndarray, lines: JoinedLines) -> LineMatch:
    """Best alignment of ``query_midi [Tq]`` (NaN unvoiced) at every position of ``lines``.

    Score = the mean per-frame likeness (see :data:`KERNEL_HARMONICS`) at the best of
    :data:`N_SHIFTS` transpositions and of the tempo factors, over the hum's voiced frames:
    1 for the same intervals throughout, near 0 for unrelated lines, lower where the library is
    unvoiced while the hum sings.
    """
    cols, tempos, lengths = query_columns(query_midi)
    n_pos = lines.line.size - cols.shape[0] + 1
    hum_frames = int(voiced_span(query_midi).size)
    if n_pos < 1 or hum_frames == 0:
        empty = np.zeros(0)
        return LineMatch(empty, empty, empty, empty.astype(np.int64), empty.astype(np.int64), hum_frames)
    voiced = np.maximum(np.sum(cols != 0, axis=0), 1).astype(np.float32)  # [C]
    powers = [phasors(lines.line) ** k for k in range(1, KERNEL_HARMONICS + 1)]
    col_powers = [cols**k for k in range(1, KERNEL_HARMONICS + 1)]
    theta, basis = _shift_basis()
    score = np.empty(n_pos, np.float32)
    shift = np.empty(n_pos, np.float32)
    c_best = np.empty(n_pos, np.int64)
    for lo in range(0, n_pos, BLOCK_POSITIONS):  # bounded memory: [block, C, S] floats at a time
        hi = min(lo + BLOCK_POSITIONS, n_pos)
        z = np.empty((hi - lo, cols.shape[1], 2 * KERNEL_HARMONICS), np.float32)
        for k in range(KERNEL_HARMONICS):
            views = np.lib.stride_tricks.sliding_window_view(
                powers[k][lo : hi + cols.shape[0] - 1], cols.shape[0]
            )
            zk = views @ col_powers[k]  # [B, C]
            z[..., k], z[..., KERNEL_HARMONICS + k] = zk.real, zk.imag
        acc = z @ basis  # [B, C, S]: the likeness summed over frames at every transposition
        s_best = np.argmax(acc, axis=2)
        sc = np.take_along_axis(acc, s_best[..., None], axis=2)[..., 0] / (KERNEL_HARMONICS * voiced)
        c = np.argmax(sc, axis=1)
        rows = np.arange(hi - lo)
        score[lo:hi], c_best[lo:hi] = sc[rows, c], c
        shift[lo:hi] = theta[s_best[rows, c]] * 12.0 / (2 * np.pi)
    middle = np.minimum(np.arange(n_pos) + lengths[c_best] // 2, lines.track.size - 1)
    return LineMatch(
        score=np.clip(score, 0.0, 1.0),
        shift=((shift + 6.0) % 12.0) - 6.0,
        tempo=tempos[c_best].astype(np.float32),
        track=lines.track[middle],
        start_frame=lines.frame[middle] - lengths[c_best] // 2,
        hum_frames=hum_frames,
    )
