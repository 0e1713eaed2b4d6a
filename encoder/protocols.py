"""What the rest of Cadenza relies on of an embedder, without importing torch.

:class:`encoder.embed.Embedder` is the real one; baselines, benchmark wrappers and a torch-free
inference path only need to look like these.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from encoder.windowing import Cuts, Windowing


class WindowEmbedder(Protocol):
    """Anything that turns ``[B, T, 143]`` raw acoustic windows into ``[B, d]`` unit vectors."""

    def embed_windows(self, *, windows: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray: ...


class WindowedEmbedder(WindowEmbedder, Protocol):
    """A window embedder that also says how it cuts a track (corpus evaluation needs that)."""

    @property
    def windowing(self) -> Windowing: ...


class MomentEmbedder(WindowedEmbedder, Protocol):
    """What ingest, search, the moment map and path use: a versioned encoder that embeds tracks."""

    @property
    def model_version(self) -> str: ...

    def embed_track(
        self, *, frames: np.ndarray, cuts: Cuts | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...
