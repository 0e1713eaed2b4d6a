"""The one place the benchmarks call into the product's retrieval internals.

Kept small and explicit so that a change of :mod:`retrieval.search` breaks here, loudly,
and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Candidates:
    segment_ids: list[int]
    track_ids: list[int]
    path: str  # which route retrieval took: hnsw | hnsw-iterative | hnsw-stream | hnsw-wide | cells | exact


def filtered_candidates(
    db: Any,
    *,
    vector: np.ndarray,
    filters: Any,
    k: int,
    model_version: str,
    iterative: bool | None = None,
    scan: Any = None,
) -> Candidates:
    """The candidate stage of ``retrieval.search.search`` for one embedding, exactly as search calls it.

    ``filter_sql`` + ``nearest`` with search's over-fetch ``n`` and one-result-per-track
    guarantee (``min_tracks = k``); rows come back best first. ``iterative`` / ``scan`` override
    what the server supports and search's :data:`~retrieval.nearest.ITERATIVE_SCAN` (bench/routes.py).
    """
    from cadenza.db import autocommit
    from retrieval.filters import filter_sql
    from retrieval.nearest import EF_SEARCH_MAX, ITERATIVE_SCAN, SEARCH_USES_ITERATIVE_SCAN, nearest
    from retrieval.track_scan import NearestQuery

    where, params = filter_sql(filters, model_version=model_version)
    n = min(max(10 * k, 100), EF_SEARCH_MAX)
    with autocommit(db) as conn:
        found = nearest(
            conn,
            NearestQuery(np.asarray(vector, dtype=np.float32), where, params, n, min_tracks=k),
            restrictive=bool(filters.active),
            iterative=(SEARCH_USES_ITERATIVE_SCAN and bool(getattr(db, "supports_iterative_scan", False)))
            if iterative is None
            else iterative,
            scan=ITERATIVE_SCAN if scan is None else scan,
        )
    return Candidates(
        segment_ids=[int(r[0]) for r in found.rows],
        track_ids=[int(r[1]) for r in found.rows],
        path=found.path,
    )


def top_tracks(track_ids: list[int], k: int) -> list[int]:
    """First ``k`` distinct tracks of a best-first list (search's one-result-per-track)."""
    seen: list[int] = []
    for t in track_ids:
        if t not in seen:
            seen.append(t)
            if len(seen) == k:
                break
    return seen
