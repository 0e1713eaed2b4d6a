"""Frame features: 160 dims at 10 frames per second.

Layout of one frame (``N_FEATURES`` = 160):

====================  =======  ==============================================
slice                 dims     what
====================  =======  ==============================================
``MEL``               128      log-mel bands (dB)
``CHROMA``            12       chroma, C..B
``RMS``               1        RMS energy (dB)
``CENTROID``          1        spectral centroid (log Hz)
``ONSET``             1        onset strength
``POSITIONAL``        17       position *within the window*: ramp + 16 sinusoids
====================  =======  ==============================================

The first 143 (``N_ACOUSTIC``) depend only on the audio and are computed once per track
and stored; the 17 positional values depend on where a frame sits in the window the
encoder sees (an uploaded clip has no song position), so they are appended per window by
:func:`window_features`.
"""

from __future__ import annotations

import numpy as np

from cadenza.errors import InputError

SAMPLE_RATE = 16_000
HOP = 1_600  # samples: 10 frames per second at 16 kHz
FPS = SAMPLE_RATE // HOP
N_MELS = 128
N_CHROMA = 12
N_ACOUSTIC = N_MELS + N_CHROMA + 3  # 143
N_POSITIONAL = 17
N_FEATURES = N_ACOUSTIC + N_POSITIONAL  # 160

MEL = slice(0, 128)
CHROMA = slice(128, 140)
RMS = slice(140, 141)
CENTROID = slice(141, 142)
ONSET = slice(142, 143)
POSITIONAL = slice(143, 160)


class ParameterError(InputError):
    """Bad input to a feature function: empty, NaN/inf, wrong rate, too short, bad shape."""


def positional_features(*, n_frames: int) -> np.ndarray:
    """Position of each frame within a window of ``n_frames``.

    Returns ``[n_frames, 17]`` float32: column 0 is a linear ramp 0 → 1, columns 1..16 are
    8 sin/cos pairs at geometric frequencies (periods from 2 frames to ~1000 frames, as in
    a Transformer's positional encoding).
    """
    if n_frames < 1:
        raise ParameterError(f"n_frames must be >= 1, got {n_frames}")
    t = np.arange(n_frames, dtype=np.float64)
    ramp = t / max(n_frames - 1, 1)
    # 8 geometric frequencies, periods 2 .. 2*500**(7/7) frames.
    periods = 2.0 * (500.0 ** (np.arange(8) / 7.0))
    angles = 2.0 * np.pi * t[:, None] / periods[None, :]  # [T, 8]
    sincos = np.stack([np.sin(angles), np.cos(angles)], axis=-1).reshape(n_frames, 16)  # [T, 16]
    return np.concatenate([ramp[:, None], sincos], axis=1).astype(np.float32)  # [T, 17]


def window_features(*, acoustic: np.ndarray) -> np.ndarray:
    """Append positional values to one window of acoustic frames.

    ``acoustic``: ``[T, 143]`` → returns ``[T, 160]`` float32.
    """
    if acoustic.ndim != 2 or acoustic.shape[1] != N_ACOUSTIC:
        raise ParameterError(f"expected acoustic frames of shape [T, {N_ACOUSTIC}], got {acoustic.shape}")
    pos = positional_features(n_frames=acoustic.shape[0])
    return np.concatenate([acoustic.astype(np.float32, copy=False), pos], axis=1)
