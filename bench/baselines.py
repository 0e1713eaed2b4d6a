"""Baseline embedders the benchmarks compare Cadenza's encoder with.

* :class:`StatsEmbedder`: the classic hand-made descriptor — MFCC (20) and chroma (12) mean
  and standard deviation over the window (64 dims), computed with librosa from the SAME
  acoustic frames the encoder sees (MFCC = DCT of the stored log-mel), z-scored with
  statistics of the library and L2-normalized so cosine search applies unchanged.
* :func:`wav2vec2_pipeline`: the original design's encoder for the speed comparison, a
  Wav2Vec2-base built from its default config with RANDOM weights (no download; only its
  speed is compared) + mean pooling.

Both expose ``embed_windows(*, windows, lengths=None)`` like :class:`encoder.embed.Embedder`.
"""

from __future__ import annotations

import numpy as np

from encoder.features import CHROMA, MEL, N_ACOUSTIC, ParameterError
from encoder.windowing import DEFAULT_WINDOWING

N_MFCC = 20
STATS_DIM = 2 * (N_MFCC + 12)  # 64


def stats_features(*, windows: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    """``windows [B, T, 143]`` raw acoustic frames → ``[B, 64]`` float32 (unnormalized).

    Columns: MFCC mean (20), MFCC std (20), chroma mean (12), chroma std (12), over the
    first ``lengths[b]`` frames of each window.
    """
    import librosa

    windows = np.asarray(windows, dtype=np.float32)
    if windows.ndim != 3 or windows.shape[2] != N_ACOUSTIC:
        raise ParameterError(f"expected windows of shape [B, T, {N_ACOUSTIC}], got {windows.shape}")
    B, T, _ = windows.shape
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    out = np.zeros((B, STATS_DIM), dtype=np.float32)
    if B == 0:
        return out
    # [B, 128, T] log-mel in dB → [B, 20, T] MFCC in one vectorized call.
    mfcc = librosa.feature.mfcc(S=np.transpose(windows[:, :, MEL], (0, 2, 1)), n_mfcc=N_MFCC)
    chroma = np.transpose(windows[:, :, CHROMA], (0, 2, 1))  # [B, 12, T]
    for b in range(B):
        n = int(lengths[b])
        m, c = mfcc[b, :, :n], chroma[b, :, :n]
        out[b] = np.concatenate([m.mean(1), m.std(1), c.mean(1), c.std(1)])
    return out


class StatsEmbedder:
    """MFCC+chroma mean/std statistics, z-scored with library statistics, L2-normalized."""

    model_version = "baseline-mfcc-chroma-stats"
    windowing = DEFAULT_WINDOWING  # cut like the encoder's library, so the comparison is like for like

    def __init__(self, *, mean: np.ndarray | None = None, std: np.ndarray | None = None):
        self.mean = np.zeros(STATS_DIM, np.float32) if mean is None else np.asarray(mean, np.float32)
        self.std = np.ones(STATS_DIM, np.float32) if std is None else np.asarray(std, np.float32)

    @classmethod
    def fit(cls, *, windows: np.ndarray, lengths: np.ndarray | None = None) -> StatsEmbedder:
        """Fit the z-scoring on a library's windows ``[B, T, 143]``."""
        raw = stats_features(windows=windows, lengths=lengths)
        return cls(mean=raw.mean(0), std=np.maximum(raw.std(0), 1e-3))

    def embed_windows(self, *, windows: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        """``[B, T, 143]`` → ``[B, 64]`` float32, L2-normalized."""
        z = (stats_features(windows=windows, lengths=lengths) - self.mean) / self.std
        return (z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-8)).astype(np.float32)


class Wav2Vec2Embedder:
    """Wav2Vec2-base (random weights) on raw 16 kHz audio, mean-pooled to 768 dims, L2-normalized."""

    model_version = "wav2vec2-base-random"

    def __init__(self, *, seed: int = 0):
        import torch
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = Wav2Vec2Model(Wav2Vec2Config()).eval()
        self.dim = int(self.model.config.hidden_size)

    def embed_audio(self, *, clips: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """``clips [B, n]`` float32 16 kHz → ``[B, 768]`` float32, mean-pooled, L2-normalized."""
        import torch

        out = np.zeros((clips.shape[0], self.dim), dtype=np.float32)
        with torch.inference_mode():
            for i in range(0, clips.shape[0], batch_size):
                x = torch.from_numpy(np.ascontiguousarray(clips[i : i + batch_size], dtype=np.float32))
                # The feature extractor's usual zero-mean / unit-variance input normalization.
                x = (x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, keepdim=True) + 1e-7)
                h = self.model(x).last_hidden_state.mean(dim=1)  # [b, 768]
                out[i : i + len(h)] = torch.nn.functional.normalize(h, dim=-1).numpy()
        return out


def wav2vec2_pipeline(*, seed: int = 0) -> Wav2Vec2Embedder:
    """The original design's encoder (random weights, for speed only)."""
    return Wav2Vec2Embedder(seed=seed)
