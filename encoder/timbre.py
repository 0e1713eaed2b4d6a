"""The sound of a moment without its notes: timbre and production statistics of a 10-s window. Pure.

The learned embedding answers "is this the same passage"; what listeners call "sounds like"
is mostly timbre, instrumentation and production (bench/results/likeness.md: plain MFCC
statistics beat the encoder on same-source P@10). :func:`timbre_statistics` measures that
part from the acoustic frames ingest already computes (``encoder.features``: log-mel, RMS,
centroid, onset at 10 fps), so it costs no second STFT:

=============================  ====  =====================================================
block                          dims  what
=============================  ====  =====================================================
MFCC mean (c1..c19)            19    spectral envelope (c0 is level: leveled away)
MFCC std (c0..c19)             20    how the envelope moves
spectral contrast               6    peak − valley in six octave groups (tonal vs noisy bands)
flatness mean / std             2    noise-likeness of the spectrum (dB)
bandwidth mean / std            2    spread of the spectrum in octaves
centroid mean / std             2    brightness (log Hz)
band energy shares              5    sub-bass, bass, mids, presence, air (dB of the total)
onset mean / std               2    percussiveness
loudness std / mean |Δ|         2    dynamics and their speed
=============================  ====  =====================================================

Frames quieter than :data:`SILENT_DB` (RMS) are left out, so a fade does not read as a timbre.
:class:`TimbreModel` turns the 60 statistics into the vector search compares: a robust
per-dimension centre and scale and a linear projection fitted on the TRAINING sources only
(``cadenza timbre fit``; see :mod:`encoder.timbre_fit`), saved with a version like a checkpoint
and L2-normalized so pgvector's cosine distance applies.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadenza.errors import ConfigError
from encoder.features import CENTROID, MEL, N_ACOUSTIC, N_MELS, ONSET, RMS, ParameterError, mel_band_edges

N_MFCC = 20
#: Octave groups of mel bands for the spectral contrast (Hz edges).
CONTRAST_EDGES_HZ = (0.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 8000.0)
#: Band energy shares (Hz edges): sub-bass, bass, mids, presence, air.
SHARE_EDGES_HZ = (0.0, 150.0, 600.0, 2500.0, 5000.0, 8000.0)
#: Frames quieter than this RMS (dBFS) do not count (pauses, fades); a window that is all
#: quiet uses every frame.
SILENT_DB = -60.0
#: The names of the statistics, in order (their count is the raw dimension).
STAT_NAMES = (
    *(f"mfcc{i}_mean" for i in range(1, N_MFCC)),
    *(f"mfcc{i}_std" for i in range(N_MFCC)),
    *(f"contrast{i}" for i in range(len(CONTRAST_EDGES_HZ) - 1)),
    "flatness_mean", "flatness_std", "bandwidth_mean", "bandwidth_std", "centroid_mean", "centroid_std",
    *(f"share{i}" for i in range(len(SHARE_EDGES_HZ) - 1)),
    "onset_mean", "onset_std", "loudness_std", "loudness_delta",
)  # fmt: skip
N_STATS = len(STAT_NAMES)  # 60
#: The fitted model shipped with the product (a folder like an encoder checkpoint).
DEFAULT_TIMBRE_DIR = Path(__file__).resolve().parent / "checkpoints" / "timbre-v3"
MODEL_FILE = "timbre.npz"
CARD_FILE = "timbre.json"


@functools.cache
def _constants() -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """(DCT-II matrix [20, 128], band centres in octaves [128], contrast groups, share groups), once."""
    n = np.arange(N_MELS)
    k = np.arange(N_MFCC)[:, None]
    # scipy.fftpack.dct(type=2, norm="ortho") along the mel axis, as librosa.feature.mfcc computes it.
    dct = np.sqrt(2.0 / N_MELS) * np.cos(np.pi * k * (2 * n + 1) / (2 * N_MELS))
    dct[0] /= np.sqrt(2.0)
    centres = mel_band_edges()[1:-1]
    octaves = np.log2(np.maximum(centres, 20.0))

    def groups(edges: tuple[float, ...]) -> tuple[np.ndarray, ...]:
        return tuple(
            np.flatnonzero((centres >= lo) & (centres < hi))
            for lo, hi in zip(edges[:-1], edges[1:], strict=True)
        )

    out = (dct.astype(np.float32), octaves, groups(CONTRAST_EDGES_HZ), groups(SHARE_EDGES_HZ))
    for a in out[:2]:
        a.flags.writeable = False
    return out


#: Per-frame values whose weighted mean and std are statistics, in :data:`STAT_NAMES` order of use.
_N_MOMENT = (
    N_MFCC + (len(CONTRAST_EDGES_HZ) - 1) + 5
)  # mfcc, contrast, flatness, bandwidth, centroid, onset, rms
_N_SHARE = len(SHARE_EDGES_HZ) - 1


def _frame_values(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``frames [n, 143]`` → (values ``[n, 31]``: mfcc 20, contrast 6, flatness, bandwidth, centroid,
    onset, rms; band powers ``[n, 5]``)."""
    dct, octaves, contrast_groups, share_groups = _constants()
    db = frames[:, MEL].astype(np.float64)  # [n, 128]
    mfcc = db @ dct.T.astype(np.float64)
    contrast = np.stack([db[:, g].max(axis=1) - db[:, g].min(axis=1) for g in contrast_groups], axis=1)
    power = 10.0 ** (db / 10.0)
    total = power.sum(axis=1) + 1e-12
    flat = 10.0 * (np.log10(np.maximum(power, 1e-12)).mean(axis=1) - np.log10(total / N_MELS))
    p = power / total[:, None]
    mu = p @ octaves
    band = np.sqrt(np.maximum(p @ (octaves**2) - mu**2, 0.0))
    values = np.column_stack(
        [mfcc, contrast, flat, band, frames[:, CENTROID.start], frames[:, ONSET.start], frames[:, RMS.start]]
    )
    shares = np.stack([power[:, g].sum(axis=1) for g in share_groups], axis=1)
    return values, shares


def _prefix(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prefix sums over frames ``[n, 143]`` of everything a window's statistics add up, twice: counting
    only frames louder than :data:`SILENT_DB`, and counting every frame. Each ``[n + 1, M]``."""
    values, shares = _frame_values(frames)
    rms = frames[:, RMS.start].astype(np.float64)
    d_rms = np.concatenate([[0.0], np.abs(np.diff(rms))])
    out = []
    for w in ((rms > SILENT_DB).astype(np.float64), np.ones(len(frames))):
        wd = w * np.concatenate([[0.0], w[:-1]])  # a loudness step counts when both its frames do
        table = np.column_stack(
            [w, w[:, None] * values, w[:, None] * values**2, w[:, None] * shares, wd, wd * d_rms]
        )
        out.append(np.concatenate([np.zeros((1, table.shape[1])), np.cumsum(table, axis=0)]))
    return out[0], out[1]


def _stats_from_sums(sums: np.ndarray, pair_sums: np.ndarray) -> np.ndarray:
    """Window sums ``[N, M]`` (pair columns from ``pair_sums``, which leave out the window's first frame) → ``[N, 60]``."""
    q = _N_MOMENT
    n = np.maximum(sums[:, :1], 1e-9)
    mean = sums[:, 1 : 1 + q] / n
    std = np.sqrt(np.maximum(sums[:, 1 + q : 1 + 2 * q] / n - mean**2, 0.0))
    shares = sums[:, 1 + 2 * q : 1 + 2 * q + _N_SHARE]
    share_db = 10.0 * np.log10(np.maximum(shares / (shares.sum(axis=1, keepdims=True) + 1e-12), 1e-6))
    wd, dsum = pair_sums[:, -2], pair_sums[:, -1]
    l_delta = dsum / np.maximum(wd, 1.0)
    m, c = N_MFCC, N_MFCC + len(CONTRAST_EDGES_HZ) - 1
    # values: mfcc [0, m), contrast [m, c), flatness c, bandwidth c+1, centroid c+2, onset c+3, rms c+4
    return np.column_stack(
        [
            mean[:, 1:m], std[:, :m], mean[:, m:c],
            mean[:, c], std[:, c], mean[:, c + 1], std[:, c + 1], mean[:, c + 2], std[:, c + 2],
            share_db, mean[:, c + 3], std[:, c + 3], std[:, c + 4], l_delta,
        ]
    ).astype(np.float32)  # fmt: skip


def _check(frames: np.ndarray) -> np.ndarray:
    x = np.asarray(frames)
    if x.ndim != 2 or x.shape[1] != N_ACOUSTIC or x.shape[0] < 1:
        raise ParameterError(f"expected acoustic frames of shape [T, {N_ACOUSTIC}], got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ParameterError("acoustic frames contain NaN or infinite values")
    return x


def window_statistics(*, frames: np.ndarray, starts: np.ndarray, win: int) -> np.ndarray:
    """A track's ``frames [T, 143]`` and window starts (frames) → ``[N, 60]`` raw statistics (:data:`STAT_NAMES`).

    Window ``i`` is ``frames[starts[i] : starts[i] + win]`` (cut short at the track's end). The
    per-frame values are computed once per track and every window's sums come from prefix sums,
    so overlapping windows (10 s every 2 s) cost no more than the track itself.
    """
    x = _check(frames)
    starts = np.asarray(starts, dtype=np.int64).reshape(-1)
    if len(starts) == 0:
        return np.zeros((0, N_STATS), np.float32)
    if starts.min() < 0 or starts.max() >= len(x):
        raise ParameterError(f"window starts must lie inside the {len(x)} frames")
    loud, every = _prefix(x)
    lo, hi = starts, np.minimum(starts + int(win), len(x))
    sums = loud[hi] - loud[lo]
    pairs = loud[hi] - loud[np.minimum(lo + 1, hi)]
    quiet = sums[:, 0] <= 0  # a window with no loud frame: every frame counts
    sums[quiet] = every[hi[quiet]] - every[lo[quiet]]
    pairs[quiet] = every[hi[quiet]] - every[np.minimum(lo[quiet] + 1, hi[quiet])]
    return _stats_from_sums(sums, pairs)


def timbre_statistics(*, windows: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    """``windows [B, T, 143]`` acoustic frames → ``[B, 60]`` float32 raw statistics (:data:`STAT_NAMES`).

    Only the first ``lengths[b]`` frames of window ``b`` count (as :func:`window_statistics`).
    Raises :class:`ParameterError` for a wrong shape.
    """
    x = np.asarray(windows, dtype=np.float32)
    if x.ndim != 3 or x.shape[2] != N_ACOUSTIC or x.shape[1] < 1:
        raise ParameterError(f"expected windows of shape [B, T, {N_ACOUSTIC}], got {x.shape}")
    B, T, _ = x.shape
    n = np.full(B, T) if lengths is None else np.clip(np.asarray(lengths), 1, T)
    return (
        np.concatenate(
            [window_statistics(frames=x[b, : n[b]], starts=np.zeros(1, np.int64), win=T) for b in range(B)]
        )
        if B
        else np.zeros((0, N_STATS), np.float32)
    )


@dataclass(frozen=True)
class TimbreModel:
    """Raw statistics → the unit timbre vector search compares: ``unit(((raw − centre) / scale) @ projection)``.

    ``centre``/``scale`` are a robust per-dimension median and scale, ``projection [60, d]``
    a fitted linear map (identity for the unfitted model); fitted on training sources only
    (:mod:`encoder.timbre_fit`). ``version`` names the fit, as a model version names a checkpoint.
    """

    centre: np.ndarray  # [60]
    scale: np.ndarray  # [60]
    projection: np.ndarray  # [60, d]
    version: str
    #: The rerank weight of the timbre term next to the embedding's 1, fitted with the projection.
    weight: float = 0.1
    #: The rerank weight of the track-sound term (the query window against the mean timbre of
    #: the candidate's whole track, sql/012_track_timbre.sql), fitted after ``weight``; 0 = off.
    #: A weight, not an array: it does not enter :attr:`version`, so stored vectors stay valid.
    track_weight: float = 0.0

    @property
    def dim(self) -> int:
        return int(self.projection.shape[1])

    @classmethod
    def identity(cls) -> TimbreModel:
        """Unfitted: the raw statistics, unscaled (tests and the fitting's starting point)."""
        return cls(np.zeros(N_STATS, np.float32), np.ones(N_STATS, np.float32), np.eye(N_STATS, dtype=np.float32),
                   "timbre-identity")  # fmt: skip

    def project(self, raw: np.ndarray) -> np.ndarray:
        """``raw [B, 60]`` → ``[B, d]`` float32, L2-normalized (an all-zero row stays zero)."""
        z = (np.asarray(raw, np.float64) - self.centre) / self.scale
        y = z @ self.projection
        norm = np.linalg.norm(y, axis=1, keepdims=True)
        return np.divide(y, norm, out=np.zeros_like(y), where=norm > 1e-9).astype(np.float32)

    def embed_windows(self, *, windows: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        """``[B, T, 143]`` acoustic frames → ``[B, d]`` unit timbre vectors (the WindowEmbedder shape)."""
        return self.project(timbre_statistics(windows=windows, lengths=lengths))

    def save(self, folder: Path, *, card: dict[str, object]) -> Path:
        """Write ``timbre.npz`` and a ``timbre.json`` card (what it was fitted on, how) to ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / MODEL_FILE, centre=self.centre, scale=self.scale, projection=self.projection,
                 version=np.array(self.version), weight=np.array(self.weight),
                 track_weight=np.array(self.track_weight))  # fmt: skip
        (folder / CARD_FILE).write_text(
            json.dumps(
                {
                    "version": self.version,
                    "weight": self.weight,
                    "track_weight": self.track_weight,
                    "dim": self.dim,
                    **card,
                },
                indent=2,
            )  # fmt: skip
            + "\n"
        )
        return folder

    @classmethod
    def load(cls, folder: Path | None = None) -> TimbreModel:
        """The fitted model in ``folder`` (default: the shipped one); ConfigError naming what to do if absent."""
        folder = DEFAULT_TIMBRE_DIR if folder is None else Path(folder)
        path = folder / MODEL_FILE
        if not path.is_file():
            raise ConfigError(f"no timbre model at {path}; run `cadenza timbre fit --audio DIR` to fit one")
        with np.load(path) as z:
            model = cls(
                z["centre"].astype(np.float64), z["scale"].astype(np.float64), z["projection"].astype(np.float64),
                str(z["version"]), float(z["weight"]),
                float(z["track_weight"]) if "track_weight" in z.files else 0.0,  # fitted before the track term
            )  # fmt: skip
        if model.centre.shape != (N_STATS,) or model.projection.shape[0] != N_STATS:
            raise ConfigError(
                f"{path} was fitted on {model.centre.shape[0]} statistics, not {N_STATS}; refit it"
            )
        return model


def model_version(*, centre: np.ndarray, scale: np.ndarray, projection: np.ndarray) -> str:
    """``timbre-<8 hex>``: a digest of the fitted arrays, so two different fits never share a name."""
    h = hashlib.sha256()
    for a in (centre, scale, projection):
        h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
    return f"timbre-{h.hexdigest()[:8]}"


@functools.cache
def shipped_timbre() -> TimbreModel:
    """The shipped fitted model (:data:`DEFAULT_TIMBRE_DIR`), loaded once per process (read-only arrays)."""
    model = TimbreModel.load()
    for a in (model.centre, model.scale, model.projection):
        a.flags.writeable = False
    return model
