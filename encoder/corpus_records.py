"""What the corpus build writes per work, shared by the rendered (``corpus``) and real (``corpus_real``) sources.

Its own module so that both sources name their HDF5 datasets one way without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from encoder.render import safe_name


@dataclass
class WorkResult:
    """One work's (or real track's) views: (dataset suffix, features [T, N_ACOUSTIC], attributes)."""

    work_id: str
    composer: str
    views: list[tuple[str, np.ndarray, dict]] = field(default_factory=list)
    clean_seconds: float = 0.0
    error: str | None = None


def dataset_name(*, work_id: str, view_name: str) -> str:
    return f"{safe_name(work_id)}__{view_name}"
