"""Turn acoustic frames into moment embeddings with a trained (or untrained) encoder.

:class:`Embedder` is what the rest of Cadenza uses: ``Embedder.load()`` reads the shipped
checkpoint (``encoder/checkpoints/cadenza-v1/``: ``model.safetensors`` + ``config.json``),
``embed_windows`` turns ``[B, T, 143]`` raw acoustic frames into ``[B, 128]`` unit vectors,
and ``embed_track`` slides the checkpoint's window (``Embedder.windowing``: 10 s every 2 s) over
a whole track.

A checkpoint folder holds exactly two files:

- ``model.safetensors``: the encoder weights (no optimizer state);
- ``config.json``: ``{"format": "cadenza-encoder", "model": EncoderConfig (with its windowing),
  "normalization": {"mean": [143], "std": [143]}, "training": {...}}``.

The model version is ``cadenza-v1-<first 8 hex of the weights' sha256>``, so re-trained
weights get a new version and stored segments can be re-embedded (``cadenza reindex``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cadenza.errors import ConfigError
from cadenza.settings import PROJECT_ROOT
from encoder.config import EncoderConfig
from encoder.features import FPS, N_ACOUSTIC, ParameterError, positional_features
from encoder.numpy_encoder import Weights, check_weights, forward, load_weights
from encoder.windowing import Cuts, Windowing

if TYPE_CHECKING:
    import torch

    from encoder.model import Encoder
    from encoder.protocols import MomentEmbedder

log = logging.getLogger(__name__)

SHIPPED_CHECKPOINT = PROJECT_ROOT / "encoder" / "checkpoints" / "cadenza-v1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CHECKPOINT_FORMAT = "cadenza-encoder"
VERSION_PREFIX = "cadenza-v1"
#: The model version of untrained weights is this and their seed (``untrained-seed0``).
UNTRAINED_PREFIX = "untrained-seed"
#: How :meth:`Embedder.load` runs the weights: torch (ingest, training, a GPU; batches of 32 take
#: half numpy's CPU) or numpy (a query: no torch import, ~1.5 s less for a fresh process).
BACKENDS = ("torch", "numpy")
#: Below this a std is treated as constant (a silent band) so normalization never blows up.
MIN_STD = 1e-3


def prepare_batch(
    *, windows: np.ndarray, lengths: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Normalize raw acoustic windows and append each window's positional columns.

    ``windows``: ``[B, T, 143]`` raw frames (frames past ``lengths[b]`` are ignored);
    ``lengths``: ``[B]`` ints in ``1..T``; ``mean``/``std``: ``[143]``.
    Returns ``features [B, T, 160]`` float32 (padding rows are 0) and ``mask [B, T]`` bool.
    Positions are relative to each window's own length, as for a query clip of that length.
    """
    B, T, _ = windows.shape
    x = (windows.astype(np.float32, copy=False) - mean.astype(np.float32)) / np.maximum(
        std.astype(np.float32), MIN_STD
    )  # [B, T, 143]
    mask = np.arange(T)[None, :] < lengths[:, None]  # [B, T]
    pos = np.zeros((B, T, 17), dtype=np.float32)
    cache: dict[int, np.ndarray] = {}
    for b, n in enumerate(lengths.tolist()):
        if n not in cache:
            cache[n] = positional_features(n_frames=int(n))
        pos[b, :n] = cache[n]
    feats = np.concatenate([x, pos], axis=2)  # [B, T, 160]
    feats[~mask] = 0.0
    return feats, mask


def weights_version(weights_path: Path) -> str:
    digest = hashlib.sha256(weights_path.read_bytes()).hexdigest()
    return f"{VERSION_PREFIX}-{digest[:8]}"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_checkpoint(
    *,
    folder: Path,
    model: Encoder,
    mean: np.ndarray,
    std: np.ndarray,
    training: dict[str, Any] | None = None,
) -> str:
    """Write ``model.safetensors`` + ``config.json`` into ``folder`` atomically; returns the version."""
    from safetensors.torch import save as save_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _atomic_write_bytes(folder / WEIGHTS_FILE, save_safetensors(state))
    config = {
        "format": CHECKPOINT_FORMAT,
        "model": model.config.to_json(),
        "normalization": {
            "mean": [float(v) for v in np.asarray(mean).reshape(-1)],
            "std": [float(v) for v in np.asarray(std).reshape(-1)],
        },
        "training": training or {},
    }
    _atomic_write_bytes(folder / CONFIG_FILE, json.dumps(config, indent=1).encode())
    return weights_version(folder / WEIGHTS_FILE)


class Embedder:
    """A frozen encoder plus its input normalization; thread count is left to the caller.

    It runs either a torch :class:`~encoder.model.Encoder` (``model``) or the same weights as numpy
    arrays (``weights`` with their ``config``, :mod:`encoder.numpy_encoder`); the embeddings agree
    to ~1e-7 either way (tests/test_numpy_encoder.py).
    """

    #: 16–64 measured the same (±3 %) on one thread; 32 keeps a batch's activations in cache.
    batch_size: int = 32

    def __init__(
        self,
        *,
        model: Encoder | None = None,
        weights: Weights | None = None,
        config: EncoderConfig | None = None,
        mean: np.ndarray,
        std: np.ndarray,
        model_version: str,
        info: dict | None = None,
    ):
        if (model is None) == (weights is None):
            raise ValueError("an Embedder runs a torch model or numpy weights: give exactly one")
        config = model.config if model is not None else config
        if config is None:
            raise ValueError("numpy weights need their EncoderConfig")
        mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        std = np.asarray(std, dtype=np.float32).reshape(-1)
        if mean.shape != (N_ACOUSTIC,) or std.shape != (N_ACOUSTIC,):
            raise ConfigError(
                f"checkpoint normalization has shapes {mean.shape}/{std.shape}, expected ({N_ACOUSTIC},); "
                "re-run `cadenza train` to write a complete checkpoint"
            )
        if config.windowing.fps != FPS:
            raise ConfigError(
                f"checkpoint was trained on {config.windowing.fps}-fps frames, but features here are "
                f"{FPS} fps; use a checkpoint trained with these features"
            )
        self.model = model.eval() if model is not None else None
        self.weights = weights
        self.config = config
        self.mean = mean
        self.std = std
        self.model_version = model_version
        self.info = info or {}
        self._fast = False
        if model is not None:
            # Imported here: whoever holds a torch model has imported torch already.
            from encoder.torch_forward import fast_path_agrees

            # Verified once, so a changed model.py silently keeps the stock (slower) forward.
            self._fast = fast_path_agrees(model)

    @property
    def backend(self) -> str:
        return "torch" if self.model is not None else "numpy"

    def torch_model(self) -> Encoder:
        """The torch module (ConfigError for the numpy backend, which has none)."""
        if self.model is None:
            raise ConfigError("this embedder runs numpy weights on the CPU; load it with backend='torch'")
        return self.model

    def to(self, device: str | torch.device) -> Embedder:
        """Move the model (e.g. to "cuda" in a GPU ingest actor); inputs follow it, outputs come back to numpy."""
        self.torch_model().to(device)
        return self

    @property
    def windowing(self) -> Windowing:
        """How this checkpoint cuts audio into moments (window, hop, fps, shortest/longest window)."""
        return self.config.windowing

    @property
    def device(self) -> torch.device:
        return next(self.torch_model().parameters()).device

    def _embed_batch(self, feats: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``feats [b, T, n_input]``, ``mask [b, T]`` (:func:`prepare_batch`) → ``[b, d_out]`` float32."""
        if self.model is None:
            assert self.weights is not None
            return forward(self.weights, n_heads=self.config.n_heads, x=feats, mask=mask)
        import torch

        from encoder.torch_forward import fast_forward

        dev = self.device
        x, m = torch.from_numpy(feats).to(dev), torch.from_numpy(mask).to(dev)
        with torch.inference_mode():
            emb = (
                fast_forward(self.model, x, m) if self._fast and not self.model.training else self.model(x, m)
            )
        return emb.cpu().numpy()

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | None = None, *, backend: str = "torch") -> Embedder:
        """Load a checkpoint folder (or its ``model.safetensors``); None = the shipped checkpoint.

        ``backend`` (:data:`BACKENDS`): "numpy" reads the weights without importing torch.
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        folder = Path(path) if path is not None else SHIPPED_CHECKPOINT
        if folder.is_file():
            folder = folder.parent
        weights, config_path = folder / WEIGHTS_FILE, folder / CONFIG_FILE
        if not weights.is_file() or not config_path.is_file():
            raise ConfigError(
                f"no encoder checkpoint at {folder} (needs {WEIGHTS_FILE} and {CONFIG_FILE}); "
                "run `cadenza train` or set CADENZA_CHECKPOINT to a checkpoint folder"
            )
        try:
            meta = json.loads(config_path.read_text())
            config = EncoderConfig.from_json(meta["model"], training=meta.get("training"))
            norm = meta["normalization"]
            kwargs: dict[str, Any] = {
                "mean": np.asarray(norm["mean"]),
                "std": np.asarray(norm["std"]),
                "model_version": weights_version(weights),
                "info": meta.get("training", {}),
            }
            if backend == "numpy":
                arrays = load_weights(weights)
                check_weights(arrays, config)
                return cls(weights=arrays, config=config, **kwargs)
            from safetensors.torch import load_file

            from encoder.model import Encoder

            model = Encoder(config)
            model.load_state_dict(load_file(str(weights)))
        except (KeyError, TypeError, ValueError, RuntimeError, OSError) as exc:
            raise ConfigError(
                f"encoder checkpoint at {folder} is unreadable ({type(exc).__name__}: {exc}); "
                "re-run `cadenza train` or point CADENZA_CHECKPOINT at a good checkpoint"
            ) from None
        return cls(model=model, **kwargs)

    @classmethod
    def untrained(cls, *, seed: int = 0, config: EncoderConfig | None = None) -> Embedder:
        """Random weights and identity normalization: a baseline, and a fast stand-in for tests."""
        import torch

        from encoder.model import Encoder

        with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
            torch.manual_seed(seed)
            model = Encoder(config or EncoderConfig())
        return cls(
            model=model,
            mean=np.zeros(N_ACOUSTIC, dtype=np.float32),
            std=np.ones(N_ACOUSTIC, dtype=np.float32),
            model_version=f"{UNTRAINED_PREFIX}{seed}",
        )

    # -- embedding ----------------------------------------------------------------------------

    def embed_windows(self, *, windows: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        """``windows [B, T, 143]`` raw acoustic frames → ``[B, d_out]`` float32, L2-normalized.

        ``lengths [B]`` (frames, 1..T) marks how much of each row is real; None = all ``T``.
        Windows up to ``windowing.max_frames`` (30 s) are accepted.
        """
        windows = np.asarray(windows)
        if windows.ndim != 3 or windows.shape[2] != N_ACOUSTIC:
            raise ParameterError(f"expected windows of shape [B, T, {N_ACOUSTIC}], got {windows.shape}")
        B, n, _ = windows.shape
        if n > self.config.max_frames:
            raise ParameterError(
                f"window of {n} frames is longer than the encoder's {self.config.max_frames} "
                f"({self.config.max_frames / FPS:.0f} s); embed a shorter clip"
            )
        lengths = np.full(B, n, dtype=np.int64) if lengths is None else np.asarray(lengths, dtype=np.int64)
        if lengths.shape != (B,) or (B and (lengths.min() < 1 or lengths.max() > n)):
            raise ParameterError(f"lengths must be {B} integers in 1..{n}, got {lengths!r}")
        out = np.zeros((B, self.config.d_out), dtype=np.float32)
        if B == 0:
            return out
        # Sorting by length lets each batch be trimmed to its longest member: less padding compute.
        order = np.argsort(-lengths, kind="stable")
        for i in range(0, B, self.batch_size):
            idx = order[i : i + self.batch_size]
            n_max = int(lengths[idx].max())
            chunk = windows[idx, :n_max]  # [b, n_max, 143]
            if not np.isfinite(chunk).all():
                raise ParameterError("acoustic frames contain NaN or inf; recompute the features")
            feats, mask = prepare_batch(windows=chunk, lengths=lengths[idx], mean=self.mean, std=self.std)
            out[idx] = self._embed_batch(feats, mask)  # [b, d_out]
        return out

    def embed_track(self, *, frames: np.ndarray, cuts: Cuts | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Slide a window over a whole track.

        ``frames [T, 143]`` → ``(starts_s [N] float64, embeddings [N, d_out] float32)``. ``cuts``:
        where the windows start and how long each is, in frames (:meth:`Windowing.track_starts`,
        which a caller asks for another hop or window); None = the checkpoint's own windowing
        (10 s every 2 s, a tail of at least 5 s).
        """
        frames = np.asarray(frames)
        if frames.ndim != 2 or frames.shape[1] != N_ACOUSTIC:
            raise ParameterError(f"expected frames of shape [T, {N_ACOUSTIC}], got {frames.shape}")
        w = self.windowing
        s, lengths = w.track_starts(frames.shape[0]) if cuts is None else cuts
        if not len(s):
            return np.zeros(0, dtype=np.float64), np.zeros((0, self.config.d_out), dtype=np.float32)
        n = frames.shape[0]
        idx = s[:, None] + np.arange(int(lengths.max()))[None, :]  # [N, win]
        windows = frames[np.minimum(idx, n - 1)]  # [N, win, 143]; rows past a window's length are masked
        emb = self.embed_windows(windows=windows, lengths=lengths)
        return s.astype(np.float64) / w.fps, emb


# -- which embedder a process runs ----------------------------------------------------------------


@dataclass(frozen=True)
class EmbedderSpec:
    """How another process (an ingest lane, a Ray actor) builds the same embedder: a checkpoint
    folder (None = the shipped one), or untrained weights drawn with ``untrained_seed``."""

    checkpoint: Path | None = None
    untrained_seed: int | None = None

    def build(self, *, backend: str = "torch") -> Embedder:
        """``backend`` as in :meth:`Embedder.load`: "numpy" for a process that never embeds a batch (the
        Ray driver needs only the model's version) pays no torch import; untrained weights are always torch."""
        if self.untrained_seed is not None:
            return Embedder.untrained(seed=self.untrained_seed)
        return Embedder.load(self.checkpoint, backend=backend)


def resolve_embedder(checkpoint: Path | None, *, backend: str = "torch") -> tuple[Embedder, EmbedderSpec]:
    """The product's embedder: the checkpoint, or — loudly — untrained weights when none is shipped.

    ``backend`` "numpy" for a query-only process (see :data:`BACKENDS`); untrained weights are
    always torch (they are drawn by torch's initializers).
    """
    try:
        return Embedder.load(checkpoint, backend=backend), EmbedderSpec(checkpoint=checkpoint)
    except ConfigError as exc:
        log.warning(
            "NO TRAINED ENCODER (%s). Falling back to UNTRAINED random weights: results will be poor. "
            "Run `cadenza train` and re-run `cadenza reindex`.",
            exc,
        )
        return Embedder.untrained(seed=0), EmbedderSpec(untrained_seed=0)


def spec_for(embedder: MomentEmbedder) -> EmbedderSpec:
    """A spec that rebuilds ``embedder`` in a worker: untrained seed N, else the shipped checkpoint."""
    version = embedder.model_version
    if version.startswith(UNTRAINED_PREFIX):
        return EmbedderSpec(untrained_seed=int(version.removeprefix(UNTRAINED_PREFIX)))
    return EmbedderSpec(checkpoint=None)
