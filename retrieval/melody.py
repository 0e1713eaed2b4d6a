"""The library's melodic line: a predominant-pitch contour per 10-s window, stored at ingest.

A hummed or whistled query is matched against what the library's *melody* does, not against
its whole sound (:mod:`retrieval.melody_match`). Running a neural pitch tracker over every
library track would cost more than the rest of ingestion together (PESTO at 10 fps measured
≈ 10–50× the whole analysis of a track), so the library side uses a cheap, classic
estimate instead: harmonic-sum salience over one magnitude STFT (the framing of
:func:`encoder.features.acoustic_features`, so frames line up with segments) and, per frame,
the most salient pitch. Octave errors do not matter downstream (the matcher compares pitch
classes); picking another voice than the tune does. On the humming benchmark's 29 rendered
held-out works (bench/results/humming.md, which measures it against the scores' top line
every run) the most salient pitch has the top voice's pitch class in about 70 % of frames
(square-root compression; 66 % with the cube root used before). Measured and rejected on
the same works: a continuity-constrained (Viterbi) path over the salience (0.56–0.65),
a preference for higher pitches (0.29–0.47), "the highest of the peeled voices" (0.45–0.63),
fixed-template NMF (0.21–0.66 at 10× the cost), and storing the 2–3 most salient voices for
the matcher to choose from (more wrong windows matched too: mean top-10 0.72 against 0.73,
16 hums per condition).
Upper partials of louder low notes are what the top voice loses to.

Pure functions of the audio; ingestion calls :func:`melody_contour` once per track (in
:func:`retrieval.analysis.featurize_audio`) and :func:`window_melodies` once per track's segments.
"""

from __future__ import annotations

import functools

import numpy as np

from encoder.features import HOP, N_FFT, SAMPLE_RATE, stft_magnitude

#: Contour frames per second (the feature rate: one value per STFT frame).
MELODY_FPS = SAMPLE_RATE / HOP
#: Candidate pitches, MIDI numbers (G2 … C7), in thirds of a semitone (tuning need not be A440).
MIN_MIDI, MAX_MIDI, STEPS_PER_SEMITONE = 43.0, 96.0, 3
#: Harmonics summed per candidate and their weights (each one 0.9 of the one below).
N_HARMONICS, HARMONIC_DECAY = 8, 0.9
#: Magnitude compression before the harmonic sum (``|X| ** COMPRESSION``): loud low partials must
#: not drown a softer top voice, yet too strong a compression lifts every ghost partial. Measured on
#: the humming benchmark's 29 rendered works against the scores' top line: 0.2 → 0.54, 1/3 → 0.66,
#: 0.5 → 0.70, 0.7 → 0.68, 1.0 → 0.63 of frames with the top voice's pitch class (bench/results/humming.md).
COMPRESSION = 0.5
#: A second voice weaker than this share of the frame's most salient pitch is not kept.
VOICE_SHARE = 0.5
#: Frames more than this many dB below the track's loudest frame are unvoiced (NaN).
QUIET_DB = 45.0
#: Half-width (STFT bins) of what one found harmonic removes from the spectrum.
COMB_BINS = 2.5


@functools.cache
def _salience_matrix(decay: float = HARMONIC_DECAY) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(candidate MIDI pitches ``[P]``, weights ``[P, 1025]`` float32, comb mask ``[P, 1025]``).

    Salience = weights @ magnitude. Built once per process, read-only. Each harmonic spreads over the STFT bins within a
    quarter tone of it (at least the nearest two bins), triangularly. The weights are ~12 % non-zero, but a dense
    product on one BLAS thread measured as fast as scipy.sparse's (0.3 ms for 10 s, 5.5 ms for 3 min) and spares a
    fresh ``cadenza search`` the scipy.sparse import (0.2-0.8 s).
    """
    pitches = np.arange(MIN_MIDI, MAX_MIDI + 1e-9, 1.0 / STEPS_PER_SEMITONE)
    n_bins = N_FFT // 2 + 1
    bin_hz = SAMPLE_RATE / N_FFT
    bins = np.arange(n_bins, dtype=np.float64)
    w = np.zeros((pitches.size, n_bins), dtype=np.float64)
    f0 = 440.0 * 2.0 ** ((pitches - 69.0) / 12.0)
    for h in range(1, N_HARMONICS + 1):
        f = h * f0
        ok = f < SAMPLE_RATE / 2 - bin_hz
        width = np.maximum(f * (2 ** (1 / 24) - 1) / bin_hz, 1.0)  # in bins
        tri = np.clip(1.0 - np.abs(bins[None, :] - (f / bin_hz)[:, None]) / width[:, None], 0.0, None)
        w += np.where(ok[:, None], decay ** (h - 1) * tri, 0.0)
    out = w.astype(np.float32)
    # What a found pitch takes out of the spectrum: its harmonics' whole main lobes (a Hann
    # window's is 4 bins wide), or its leakage would read as another note.
    comb = np.zeros_like(w, dtype=bool)
    for h in range(1, N_HARMONICS + 1):
        comb |= np.abs(bins[None, :] - (h * f0 / bin_hz)[:, None]) <= COMB_BINS
    for a in (pitches, out, comb):
        a.flags.writeable = False
    return pitches, out, comb


def melody_voices(
    *, y: np.ndarray, voices: int = 2, compression: float = COMPRESSION, decay: float = HARMONIC_DECAY
) -> np.ndarray:
    """Mono 16-kHz ``y [n]`` (leveled) → ``[voices, T]`` float32 MIDI pitches per frame, NaN where unvoiced.

    ``T = 1 + n // HOP``: the same frames as :func:`encoder.features.acoustic_features`.
    ``compression`` and ``decay`` default to the measured best (the benchmark also runs the
    previous session's 1/3 and 0.8, to show the difference).
    Pitches are found one after another, most salient first, each time removing the found
    pitch's harmonics from the spectrum (so an upper harmonic of a low note is not taken for
    a note of its own). A later voice weaker than VOICE_SHARE of the first is NaN.
    """
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    mag = stft_magnitude(y)  # [1025, T]; librosa.stft's framing, without importing librosa (~1 s)
    pitches, w, comb = _salience_matrix(decay)
    spec = mag**compression
    frame_db = 20.0 * np.log10(np.maximum(np.sqrt(np.mean(mag**2, axis=0)), 1e-10))
    voiced = frame_db > frame_db.max(initial=-200.0) - QUIET_DB
    cols = np.arange(spec.shape[1])
    out = np.full((voices, spec.shape[1]), np.nan, dtype=np.float32)
    first = np.zeros(spec.shape[1])
    for v in range(voices):
        sal = w @ spec  # [P, T]
        i = np.argmax(sal, axis=0)
        s = sal[i, cols]
        if v == 0:
            first = s
        out[v] = np.where(voiced & (s > 0) & (s >= VOICE_SHARE * first), pitches[i], np.nan)
        spec = spec * ~comb[i].T  # remove the found pitch's harmonic comb
    return out


def window_melodies(*, contour: np.ndarray, starts_s: list[float], win_frames: int) -> list[np.ndarray]:
    """The contour cut into the segments' windows: ``[win_frames]`` float16 each, NaN-padded at the end."""
    out = []
    for s in starts_s:
        i = int(round(s * MELODY_FPS))
        piece = np.full(win_frames, np.nan, dtype=np.float16)
        seg = contour[i : i + win_frames]
        piece[: seg.size] = seg
        out.append(piece)
    return out


def melody_contour(*, y: np.ndarray) -> np.ndarray:
    """Mono 16-kHz ``y [n]`` (leveled) → the melodic line ``[T]`` float32 MIDI (NaN unvoiced): the most
    salient pitch per frame (:func:`melody_voices`' first voice)."""
    return melody_voices(y=y, voices=1)[0]
