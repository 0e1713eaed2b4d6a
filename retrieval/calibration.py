"""Confidence calibrated on the library's own score distribution.

A raw cosine similarity means little on its own (an untrained or collapsed embedding puts
everything near 0.9). So a score ``s`` is judged relative to (a) how similar the query is
to the library in general, ``μ_q`` = its mean similarity to a stored random sample of
segment embeddings, as the *margin* ``m = (s − μ_q) / (1 − μ_q)`` (0 = an ordinary
library moment, 1 = identical), and (b) how far real in-library queries' best
*other-track* matches get: confidence is the percentile of ``m`` among those best-match
margins, measured at ingest and stored per model version in ``score_calibration``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

from cadenza.db import f16_bytes, scalar

log = logging.getLogger(__name__)

SAMPLE_SIZE = 2048
N_QUERIES = 256
FULL_SCAN_LIMIT = 30_000
#: Below this confidence the top result is reported as "nothing similar".
NOTHING_SIMILAR_BELOW = 0.10
#: From this ``match`` on a result counts as the query's own passage found again: its composer
#: is not "already shown" for the diversity step, and it is left out of the likeness scale.
SAME_PASSAGE_MATCH = 0.5
QUANTILES = np.linspace(0.0, 1.0, 101)
#: Stored under "<model_version>|<METHOD>" so a calibration measured another way is never misread.
METHOD = "margin1"


@dataclass
class Calibration:
    model_version: str
    n_segments: int
    sample: np.ndarray  # [n, d] float32
    nn_quantiles: np.ndarray  # [101] best-match margins of in-library queries
    pair_quantiles: np.ndarray  # [101]

    def query_mean(self, q: np.ndarray) -> float:
        """μ_q: the query's mean cosine similarity to the library sample."""
        return float((self.sample @ (q / max(np.linalg.norm(q), 1e-12))).mean())

    def confidence(self, *, score: float, query_mean: float) -> float:
        """Percentile of the margin of ``score`` among in-library best-match margins, in [0, 1]."""
        m = margin(score, query_mean)
        return float(np.interp(m, self.nn_quantiles, QUANTILES, left=0.0, right=1.0))


def margin(score: float | np.ndarray, query_mean: float | np.ndarray) -> Any:
    """``(s − μ) / (1 − μ)``: where ``s`` lies between the query's typical similarity and identity."""
    return (score - query_mean) / np.maximum(1.0 - query_mean, 1e-4)


def _best_margins(emb: np.ndarray, tracks: np.ndarray, sample: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """For each query index: the margin of its best match on another track."""
    out = []
    for i in queries:
        q = emb[i]
        mu = float((sample @ q).mean())
        sims = emb @ q
        sims[tracks == tracks[i]] = -np.inf
        best = sims.max()
        if np.isfinite(best):
            out.append(margin(float(best), mu))
    return np.asarray(out, dtype=np.float64)


def calibrate(conn: psycopg.Connection, *, model_version: str, seed: int = 0) -> Calibration | None:
    """Measure and store the calibration of ``model_version``; None when < 2 tracks have segments."""
    n = scalar(conn, "SELECT count(*) FROM segments WHERE model_version = %s", (model_version,))
    n_tracks = scalar(
        conn, "SELECT count(DISTINCT track_id) FROM segments WHERE model_version = %s", (model_version,)
    )
    if n_tracks < 2:
        return None
    # Deterministic pseudo-random order (hash of the id) so two runs pick the same rows.
    rows = conn.execute(
        "SELECT track_id, embedding FROM segments WHERE model_version = %s ORDER BY md5(id::text || %s) LIMIT %s",
        (model_version, str(seed), FULL_SCAN_LIMIT),
    ).fetchall()
    tracks = np.array([r[0] for r in rows])
    emb = np.stack([np.asarray(r[1].to_numpy(), dtype=np.float32) for r in rows])
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    sample = emb[: min(SAMPLE_SIZE, len(emb))]
    queries = rng.choice(len(emb), size=min(N_QUERIES, len(emb)), replace=False)
    z = _best_margins(emb, tracks, sample, queries)
    if z.size < 2:
        return None
    a, b = rng.integers(0, len(emb), size=(2, 4096))
    keep = tracks[a] != tracks[b]
    pairs = (emb[a[keep]] * emb[b[keep]]).sum(axis=1) if keep.any() else np.zeros(1)
    cal = Calibration(
        model_version=model_version,
        n_segments=int(n),
        sample=sample,
        nn_quantiles=np.quantile(z, QUANTILES),
        pair_quantiles=np.quantile(pairs, QUANTILES),
    )
    conn.execute(
        "INSERT INTO score_calibration (model_version, n_segments, sample, sample_dim, nn_quantiles, pair_quantiles)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (model_version) DO UPDATE SET n_segments = EXCLUDED.n_segments,"
        " sample = EXCLUDED.sample, sample_dim = EXCLUDED.sample_dim, nn_quantiles = EXCLUDED.nn_quantiles,"
        " pair_quantiles = EXCLUDED.pair_quantiles, created_at = now()",
        (
            f"{model_version}|{METHOD}",
            int(n),
            f16_bytes(sample),
            sample.shape[1],
            [float(v) for v in cal.nn_quantiles],
            [float(v) for v in cal.pair_quantiles],
        ),
    )
    log.info("calibrated %s on %d segments (%d queries): median best-match margin %.2f", model_version, n, z.size,
             float(np.median(z)))  # fmt: skip
    return cal


def load_calibration(
    conn: psycopg.Connection,
    *,
    model_version: str,
    recalibrate_drift: float = 0.25,
    memo: dict[str, Any] | None = None,
) -> Calibration | None:
    """The stored calibration; re-measured when missing or when the library size drifted > 25 %.

    ``memo`` (``Database.memo``) keeps the last one read: while its stored row is unchanged
    (same ``created_at``) a search reuses it instead of fetching and decoding the 512-KB sample.
    """
    # One round trip: the planner's row estimate (free) beside the stored row's size and stamp.
    head = conn.execute(
        "SELECT (SELECT reltuples::bigint FROM pg_class WHERE oid = 'segments'::regclass), c.n_segments,"
        " c.created_at FROM (SELECT 1) one LEFT JOIN score_calibration c ON c.model_version = %s",
        (f"{model_version}|{METHOD}",),
    ).fetchone()
    n_now, n_stored, stamp = head if head is not None else (None, None, None)
    # count(*) only while the table was never analyzed. (reltuples counts all versions: during a
    # reindex the drift check is approximate, which is fine.)
    if n_now is None or n_now < 0:
        n_now = scalar(conn, "SELECT count(*) FROM segments WHERE model_version = %s", (model_version,))
    if n_stored is None or abs(n_now - n_stored) > recalibrate_drift * max(n_stored, 1):
        with conn.transaction():
            return calibrate(conn, model_version=model_version)
    key = f"calibration|{model_version}"
    kept = memo.get(key) if memo is not None else None
    if kept is not None and kept[0] == stamp:
        return kept[1]
    row = conn.execute(
        "SELECT n_segments, sample, sample_dim, nn_quantiles, pair_quantiles FROM score_calibration"
        " WHERE model_version = %s",
        (f"{model_version}|{METHOD}",),
    ).fetchone()
    if row is None:  # removed since the first query: measure it again
        with conn.transaction():
            return calibrate(conn, model_version=model_version)
    sample = np.frombuffer(bytes(row[1]), dtype="<f2").reshape(-1, row[2]).astype(np.float32)
    sample.flags.writeable = False  # shared by every search that reuses it
    cal = Calibration(
        model_version=model_version,
        n_segments=int(row[0]),
        sample=sample,
        nn_quantiles=np.asarray(row[3], dtype=np.float64),
        pair_quantiles=np.asarray(row[4], dtype=np.float64),
    )
    if memo is not None:
        memo[key] = (stamp, cal)
    return cal
