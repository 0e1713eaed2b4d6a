"""Pitch tracking of a sung, hummed or whistled query: PESTO, with the weights its wheel ships.

``pesto-pitch`` 2.0.1 (LGPL-3.0; 0.6 MB wheel, checkpoint ``pesto/weights/mir-1k_g7.ckpt``
0.5 MB, trained on the MIR-1K singing-voice set) runs on our CPU torch. Nothing is
downloaded: :func:`load_tracker` fails with a clear error when the package is missing.

The torchaudio trap: ``pesto/__init__.py`` imports ``pesto.core``, which imports
``torchaudio`` at module top only to read audio files. torchaudio's wheels pin their own
torch (installing one would replace ours), so pesto is installed with ``--no-deps`` and
torchaudio is never installed. :func:`_pesto_loader` therefore registers the ``pesto``
package *without running its ``__init__``* (a bare package module whose ``__path__`` is the
installed folder) and imports only ``pesto.loader`` (model + weights), which needs torch,
scipy and omegaconf (the checkpoint pickles an omegaconf config).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from typing import Any

import numpy as np

from cadenza.errors import ConfigError
from encoder.features import FPS, SAMPLE_RATE

#: The checkpoint inside the wheel (PESTO 2's default; ``mir-1k.ckpt`` is a PESTO-1 model).
CHECKPOINT = "mir-1k_g7"
#: PESTO's hop (ms): two of its frames per 10-fps feature frame, merged by their median.
STEP_MS = 50.0
#: Below this PESTO confidence a frame is unvoiced (silence, breath, consonants).
MIN_CONFIDENCE = 0.5
#: A clip confident in fewer of its frames than this is tracked a second time an octave lower
#: (:func:`track_pitch`). The MIR-1K model is rarely confident above about E5 (660 Hz): on the
#: humming benchmark voice hums 6 semitones up (MIDI 80–89) were voiced in 6–35 % of their frames
#: and whistles in 11–50 %; played an octave lower the same clips were voiced in 83–97 %.
RETRY_VOICED_BELOW = 0.6


def _pesto_loader() -> Any:
    """``pesto.loader``, imported without ``pesto/__init__`` (which needs torchaudio; see the module doc)."""
    if "pesto.loader" in sys.modules:
        return sys.modules["pesto.loader"]
    spec = importlib.util.find_spec("pesto")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the pitch tracker is not installed; run "
            "`pip install --no-deps pesto-pitch==2.0.1 && pip install omegaconf` (never torchaudio)"
        )
    if "pesto" not in sys.modules:
        pkg = types.ModuleType("pesto")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__package__ = "pesto"
        sys.modules["pesto"] = pkg
    return importlib.import_module("pesto.loader")


@functools.cache
def load_tracker() -> Any:
    """The PESTO model (eval mode, CPU), once per process. ConfigError when it cannot be loaded."""
    try:
        loader = _pesto_loader()
        return loader.load_model(CHECKPOINT, step_size=STEP_MS, sampling_rate=SAMPLE_RATE)
    except (ImportError, FileNotFoundError, RuntimeError) as exc:
        raise ConfigError(
            f"cannot load the PESTO pitch tracker ({exc}); reinstall pesto-pitch 2.0.1"
        ) from exc


@dataclass(frozen=True)
class PitchTrack:
    """A query's pitch at the feature rate (10 fps)."""

    midi: np.ndarray  # [T] float32 fractional MIDI numbers, NaN where unvoiced
    confidence: np.ndarray  # [T] float32 in [0, 1]


def _frames(*, y: np.ndarray, slow: int) -> tuple[np.ndarray, np.ndarray]:
    """PESTO over ``y`` played ``slow`` times slower (and so ``log2(slow)`` octaves lower), at the
    feature rate of ``y``: (fractional MIDI of the *played* pitch, NaN unvoiced; max confidence)."""
    import torch

    from cadenza.audio import resample

    played = y if slow == 1 else resample(y=y, orig_sr=SAMPLE_RATE, sr=SAMPLE_RATE * slow)
    with torch.inference_mode():
        pred, conf, _ = load_tracker()(
            torch.from_numpy(np.ascontiguousarray(played)), sr=SAMPLE_RATE, return_activations=False
        )
    pred = pred.reshape(-1).numpy().astype(np.float64)
    conf = conf.reshape(-1).numpy().astype(np.float64)
    per = slow * int(round(1000.0 / FPS / STEP_MS))  # PESTO frames per feature frame of y
    n_out = 1 + y.size // int(SAMPLE_RATE / FPS)
    midi = np.full(n_out, np.nan)
    c_out = np.zeros(n_out)
    for t in range(n_out):
        lo = t * per
        p, c = pred[lo : lo + per], conf[lo : lo + per]
        if c.size == 0:
            break
        c_out[t] = c.max()
        ok = c >= MIN_CONFIDENCE
        if ok.any():
            midi[t] = float(np.median(p[ok]))
    return midi, c_out


def track_pitch(*, y: np.ndarray) -> PitchTrack:
    """Mono 16-kHz ``y [n]`` → :class:`PitchTrack` with ``T = 1 + n // 1600`` frames (feature framing).

    A clip voiced in fewer than :data:`RETRY_VOICED_BELOW` of its frames is tracked again played
    at half speed (an octave lower, where the model is confident on high voices and whistles);
    frames the first pass left unvoiced take the second pass's pitch, an octave up again.
    """
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    midi, conf = _frames(y=y, slow=1)
    if midi.size and np.isfinite(midi).mean() < RETRY_VOICED_BELOW:
        low, low_conf = _frames(y=y, slow=2)
        fill = ~np.isfinite(midi) & np.isfinite(low)
        midi = np.where(fill, low + 12.0, midi)
        conf = np.maximum(conf, low_conf)
    return PitchTrack(midi=midi.astype(np.float32), confidence=conf.astype(np.float32))
