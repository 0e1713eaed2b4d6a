"""``cadenza timbre fit --audio DIR``: fit the timbre model (encoder/timbre.py) on TRAINING sources only.

The sources of :data:`encoder.corpus_real.HELDOUT_SOURCES` are never read here (they are the
likeness benchmark's); a reserved package under ``DIR`` is refused. Every training track's first
``--max-seconds`` is leveled and featurized exactly as ingest does, cut into the library's
windows (10 s every 2 s) and measured (:func:`encoder.timbre.window_statistics`). Then:

1. **Scale**: per statistic the median and 1.4826 × the median absolute deviation (robust to
   the odd silent or clipped window).
2. **Projection** (a learned aspect next to the measured ones): directions along which windows
   of *different tracks* spread more than windows of *one track* do — the generalized
   eigenvectors of the total scatter against the shrunk within-track scatter, the top
   :data:`DIM`, each scaled by the square root of its eigenvalue. Track labels, not source
   labels: five training sources give a source LDA only four directions, and a two-source-out
   cross-validation on the training sources preferred this (the card records it).
3. **Weights** of the timbre term next to the embedding's 1 in the rerank, and of the
   track-sound term (the query window against the mean timbre vector of the candidate's whole
   track: same-source likeness is about a recording's production more than one moment): the
   pair of :data:`WEIGHT_GRID` × :data:`TRACK_WEIGHT_GRID` with the best cross-validated
   same-source P@10 (own track left out, one result per track) of ``embedding cosine + weight ×
   timbre similarity + track weight × track similarity`` is recorded in the card, but the model
   carries :data:`PRODUCT_WEIGHT` / :data:`PRODUCT_TRACK_WEIGHT` unless ``--weights cv`` asks for
   that pair (or ``--weight`` / ``--track-weight`` set them): the in-memory folds are flat within
   0.003 around their best and leave out the product's other terms (harmony, rhythm, melody), so
   the shipped pair was chosen through the product on the training sources. So the one command
   ``cadenza timbre fit --audio DIR`` rebuilds the shipped ``encoder/checkpoints/timbre-v2``.

The model and a JSON card (sources, tracks, minutes, the cross-validated numbers) are written
like a checkpoint; nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cadenza.errors import InputError
from encoder.corpus_real import HELDOUT_SOURCES, list_tracks
from encoder.features import FPS, SAMPLE_RATE, acoustic_features
from encoder.timbre import DEFAULT_TIMBRE_DIR, N_STATS, TimbreModel, model_version, window_statistics
from encoder.windowing import DEFAULT_WINDOWING

log = logging.getLogger(__name__)

#: Dimensions kept by the projection (the pgvector column of sql/008_timbre.sql has this many).
DIM = 32
#: Shrinkage of the within-track scatter towards its mean variance (0 = none, 1 = a PCA). 0.1: the best of
#: 0-0.75 on the five sources-out folds of the 21 training sources (0.537 against 0.526 at the 0.5 that five
#: sources needed; scripts/sound_representations.py --folds --settings, encoder/MODEL_CARD.md).
SHRINK = 0.1
#: Rerank weights of the timbre term tried (the embedding's is 1).
WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
#: Rerank weights of the track-sound term tried (the window against the candidate track's mean).
TRACK_WEIGHT_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
#: The rerank weights the model carries by default (window, track): chosen through the product on the
#: TRAINING sources (retrieval.search, 131 tracks, 262 queries, diversity 0; the table is in
#: encoder/MODEL_CARD.md, "Timbre model"), not by the in-memory folds of :func:`cross_validate`.
PRODUCT_WEIGHT = 1.0
PRODUCT_TRACK_WEIGHT = 1.0
#: Where the model's weights come from: the product choice above, or the in-memory folds' best pair.
WEIGHT_CHOICES = ("product", "cv")
DEFAULT_MAX_SECONDS = 120.0
TOP_K = 10
#: Cross-validation folds: with at most this many training sources every pair of them is held out in
#: turn (10 folds of five sources); with more, :data:`FOLD_GROUPS` folds each hold out every
#: FOLD_GROUPS-th source (21 sources: 5 folds of 4-5 sources, close to the 7 held-out sources'
#: chance, and 5 fits instead of 210).
PAIR_FOLDS_UP_TO = 6
FOLD_GROUPS = 5


@dataclass
class TrainingWindows:
    """The training sources' windows: raw statistics ``[N, 60]``, their track and source labels."""

    raw: np.ndarray
    track: np.ndarray  # [N] index into names
    source: np.ndarray  # [N] index into sources
    starts_s: np.ndarray  # [N]
    names: list[str]
    sources: list[str]
    frames: dict[int, np.ndarray]  # track index -> [T, 143] leveled frames
    seconds: float


def robust_scale(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column median and 1.4826 × MAD of ``raw [N, D]`` (floored, so no column divides by ~0)."""
    centre = np.median(raw, axis=0)
    mad = 1.4826 * np.median(np.abs(raw - centre), axis=0)
    return centre, np.maximum(mad, 1e-3 * np.abs(centre) + 1e-6)


def track_projection(
    z: np.ndarray, labels: np.ndarray, *, dim: int = DIM, shrink: float = SHRINK
) -> np.ndarray:
    """``[D, dim]``: generalized eigenvectors of the total scatter of ``z [N, D]`` against its shrunk
    within-label scatter, largest first, each scaled by the root of its eigenvalue."""
    from scipy.linalg import eigh

    d = z.shape[1]
    within = np.zeros((d, d))
    for c in np.unique(labels):
        zc = z[labels == c]
        zc = zc - zc.mean(axis=0)
        within += zc.T @ zc
    within /= len(z)
    within = (1 - shrink) * within + shrink * np.trace(within) / d * np.eye(d)
    total = np.cov(z.T)
    vals, vecs = eigh(total, within)
    order = np.argsort(-vals)[:dim]
    return vecs[:, order] * np.sqrt(np.maximum(vals[order], 0.0))[None, :]


def fit_model(
    raw: np.ndarray, track: np.ndarray, *, weight: float = 0.0, track_weight: float = 0.0
) -> TimbreModel:
    """A :class:`TimbreModel` fitted on training windows ``raw [N, 60]`` with their track labels."""
    centre, scale = robust_scale(raw)
    proj = track_projection((raw - centre) / scale, track)
    return TimbreModel(
        centre, scale, proj, model_version(centre=centre, scale=scale, projection=proj), weight, track_weight
    )


def same_source_p10(
    *,
    emb: np.ndarray,
    timbre: np.ndarray,
    track: np.ndarray,
    source: np.ndarray,
    queries: np.ndarray,
    weight: float,
    track_weight: float = 0.0,
) -> float:
    """Same-source P@10 of ``emb·q + weight × (1 + timbre·q) / 2 + track_weight × (1 + track·q) / 2``
    for the windows ``queries`` (indices) against all windows, ``track`` being the unit mean timbre
    of a window's track, the query's own track left out, one result per track (as the rerank scores)."""
    n_tracks = int(track.max()) + 1
    track_source = np.zeros(n_tracks, dtype=np.int64)
    track_source[track] = source
    means = track_means(timbre, track) if track_weight else None
    precs = []
    for i in queries:
        s = emb @ emb[i] + weight * 0.5 * (1.0 + timbre @ timbre[i])
        best = np.full(n_tracks, -np.inf)
        np.maximum.at(best, track, s)
        if means is not None:
            best += track_weight * 0.5 * (1.0 + means @ timbre[i])
        best[track[i]] = -np.inf
        top = np.argsort(-best)[:TOP_K]
        precs.append(float(np.mean(track_source[top] == source[i])))
    return float(np.mean(precs))


def track_means(timbre: np.ndarray, track: np.ndarray) -> np.ndarray:
    """``[n_tracks, d]``: the unit mean of each track's window vectors (what sql/012 stores, normalized)."""
    means = np.zeros((int(track.max()) + 1, timbre.shape[1]))
    np.add.at(means, track, timbre)
    return means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-9)


def query_windows(track: np.ndarray, starts_s: np.ndarray) -> np.ndarray:
    """Two windows per track, a third and two thirds in (as bench/likeness.py queries)."""
    out = []
    for t in np.unique(track):
        idx = np.flatnonzero(track == t)
        order = idx[np.argsort(starts_s[idx])]
        out += [order[len(order) // 3], order[(2 * len(order)) // 3]]
    return np.asarray(out)


def load_training(audio_dir: Path, *, max_seconds: float | None, progress: bool = True) -> TrainingWindows:
    """Decode, level and featurize the training sources' tracks; measure their windows."""
    from cadenza.audio import DecodeOptions, load_audio
    from retrieval.analysis import prepare

    tracks = list_tracks(audio_dir, heldout=HELDOUT_SOURCES)
    sources = sorted({t.composer for t in tracks})
    raws: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    srcs: list[np.ndarray] = []
    starts: list[np.ndarray] = []
    names: list[str] = []
    frames: dict[int, np.ndarray] = {}
    seconds = 0.0
    for t in tqdm(tracks, desc="timbre: training tracks", disable=not progress, mininterval=10):
        try:
            parts = [load_audio(path=p, options=DecodeOptions(duration_s=max_seconds)) for _, p in t.files]
        except InputError as exc:
            log.info("skipping %s: %s", t.work_id, exc)
            continue
        n = min(len(y) for y in parts)
        y = np.sum([p[:n] for p in parts], axis=0).astype(np.float32)
        if n < 2 * DEFAULT_WINDOWING.window_s * SAMPLE_RATE:
            continue
        fr = acoustic_features(y=prepare(y=y, whole_track=True), sr=SAMPLE_RATE)
        st = DEFAULT_WINDOWING.track_starts(len(fr))[0]
        i = len(names)
        names.append(t.work_id)
        frames[i] = fr
        raws.append(window_statistics(frames=fr, starts=st, win=DEFAULT_WINDOWING.window_frames))
        labels.append(np.full(len(st), i))
        srcs.append(np.full(len(st), sources.index(t.composer)))
        starts.append(np.asarray(st) / FPS)
        seconds += n / SAMPLE_RATE
    if len({int(s[0]) for s in srcs}) < 3:
        raise InputError(
            f"need at least three training sources under {audio_dir}; run scripts/fetch_real_music.sh"
        )
    return TrainingWindows(
        np.concatenate(raws), np.concatenate(labels), np.concatenate(srcs), np.concatenate(starts), names, sources,
        frames, seconds,
    )  # fmt: skip


def _embed(data: TrainingWindows, embedder: Any) -> np.ndarray:
    """The encoder's unit embedding of every training window ``[N, d]`` (in the windows' order)."""
    out = []
    for i in range(len(data.names)):
        _, emb = embedder.embed_track(frames=data.frames[i])
        out.append(np.asarray(emb, np.float32))
    return np.concatenate(out)


def source_folds(n_sources: int) -> list[tuple[int, ...]]:
    """The held-out source indices of each fold: every pair up to :data:`PAIR_FOLDS_UP_TO` sources,
    else :data:`FOLD_GROUPS` interleaved groups (sources are sorted by name, so the groups mix sizes)."""
    if n_sources <= PAIR_FOLDS_UP_TO:
        return list(itertools.combinations(range(n_sources), 2))
    return [tuple(range(g, n_sources, FOLD_GROUPS)) for g in range(FOLD_GROUPS)]


def cross_validate(data: TrainingWindows, emb: np.ndarray) -> dict[str, Any]:
    """Sources-out folds (:func:`source_folds`) over the training sources: P@10 of the raw (scaled)
    statistics and of the projection, each alone and with the embedding at each weight of :data:`WEIGHT_GRID`."""
    folds = source_folds(len(data.sources))
    rows: dict[str, list[float]] = {}
    for held in folds:
        fit_mask = ~np.isin(data.source, held)
        ev = np.flatnonzero(~fit_mask)
        centre, scale = robust_scale(data.raw[fit_mask])
        proj = track_projection((data.raw[fit_mask] - centre) / scale, data.track[fit_mask])
        z = (data.raw[ev] - centre) / scale
        variants = {"scaled statistics": z, "projection": z @ proj}
        remap = np.unique(data.track[ev], return_inverse=True)[1]
        q = query_windows(remap, data.starts_s[ev])
        e = emb[ev]
        for name, v in variants.items():
            t = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)
            rows.setdefault(f"{name} alone", []).append(
                same_source_p10(
                    emb=0 * e, timbre=t, track=remap, source=data.source[ev], queries=q, weight=1.0
                )
            )
            for w in WEIGHT_GRID:
                rows.setdefault(f"embedding + {w:g} x {name}", []).append(
                    same_source_p10(emb=e, timbre=t, track=remap, source=data.source[ev], queries=q, weight=w)
                )
                if name != "projection":
                    continue
                for tw in TRACK_WEIGHT_GRID[1:]:
                    rows.setdefault(f"embedding + {w:g} x {name} + {tw:g} x track", []).append(
                        same_source_p10(
                            emb=e,
                            timbre=t,
                            track=remap,
                            source=data.source[ev],
                            queries=q,
                            weight=w,
                            track_weight=tw,
                        )  # fmt: skip
                    )
    return {
        "folds": [[data.sources[i] for i in f] for f in folds],
        "p_at_10": {k: float(np.mean(v)) for k, v in rows.items()},
    }


def chosen_weights(
    p_at_10: dict[str, float],
    *,
    choice: str = "product",
    given: tuple[float | None, float | None] = (None, None),
) -> tuple[float, float]:
    """(window weight, track weight): ``given`` where set, else :data:`PRODUCT_WEIGHT` /
    :data:`PRODUCT_TRACK_WEIGHT` (``choice="product"``) or the pair of the grids with the best
    cross-validated ``p_at_10`` (:func:`cross_validate`'s, ``choice="cv"``)."""
    if choice not in WEIGHT_CHOICES:
        raise InputError(f"--weights must be one of {', '.join(WEIGHT_CHOICES)}, got {choice!r}")
    weight, track_weight = (PRODUCT_WEIGHT, PRODUCT_TRACK_WEIGHT)
    if choice == "cv":
        weight, track_weight = max(
            itertools.product(WEIGHT_GRID, TRACK_WEIGHT_GRID),
            key=lambda wt: p_at_10[
                f"embedding + {wt[0]:g} x projection" + (f" + {wt[1]:g} x track" if wt[1] else "")
            ],
        )
    return (
        weight if given[0] is None else float(given[0]),
        track_weight if given[1] is None else float(given[1]),
    )


def run_fit(
    *,
    audio_dir: Path,
    out_dir: Path,
    max_seconds: float | None,
    checkpoint: Path | None,
    weights: tuple[float | None, float | None] = (None, None),
    choice: str = "product",
) -> TimbreModel:
    """Fit and save the timbre model (module docstring); returns it."""
    import torch

    from encoder.embed import resolve_embedder

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = load_training(audio_dir, max_seconds=max_seconds)
    embedder, _ = resolve_embedder(checkpoint)
    emb = _embed(data, embedder)
    cv = cross_validate(data, emb)
    cv_weight, cv_track_weight = chosen_weights(cv["p_at_10"], choice="cv")
    cv_choice = {"weight": cv_weight, "track_weight": cv_track_weight}
    weight, track_weight = chosen_weights(cv["p_at_10"], choice=choice, given=weights)
    model = fit_model(data.raw, data.track, weight=weight, track_weight=track_weight)
    card = {
        "fitted_on": {"sources": data.sources, "tracks": len(data.names), "windows": int(len(data.raw)),
                      "minutes": round(data.seconds / 60, 1), "max_seconds_per_track": max_seconds},
        "held_out_never_read": list(HELDOUT_SOURCES),
        "statistics": N_STATS, "dim": DIM, "shrink": SHRINK, "embedder": str(embedder.model_version),
        "cross_validation": cv, "weight_grid": list(WEIGHT_GRID),
        "track_weight_grid": list(TRACK_WEIGHT_GRID), "weights_in_memory_cv": cv_choice,
        "weights_given": {"weight": weights[0], "track_weight": weights[1]}, "weights_from": choice,
        "product_weights": {"weight": PRODUCT_WEIGHT, "track_weight": PRODUCT_TRACK_WEIGHT,
                            "how": "chosen through the product on the training sources (encoder/MODEL_CARD.md)"},
        "fit_seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    model.save(out_dir, card=card)
    return model


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fit = sub.add_parser("fit", help="fit the timbre model on the training sources (never the held-out ones)")
    fit.add_argument(
        "--audio", type=Path, required=True, help="folder of source folders (scripts/fetch_real_music.sh)"
    )
    fit.add_argument(
        "--out", type=Path, default=DEFAULT_TIMBRE_DIR, help="where to write timbre.npz and timbre.json"
    )
    fit.add_argument(
        "--max-seconds", type=float, default=DEFAULT_MAX_SECONDS, help="seconds used of each track"
    )
    fit.add_argument(
        "--checkpoint", type=Path, default=None, help="encoder checkpoint (default: the shipped one)"
    )
    fit.add_argument(
        "--weights", choices=WEIGHT_CHOICES, default="product",
        help="rerank weights: the ones chosen through the product (default, as shipped) or the in-memory folds' best",
    )  # fmt: skip
    fit.add_argument("--weight", type=float, default=None, help="timbre term weight (overrides --weights)")
    fit.add_argument(
        "--track-weight", type=float, default=None, help="track-sound term weight (overrides --weights)"
    )


def run(name: str, args: argparse.Namespace) -> int:
    model = run_fit(
        audio_dir=args.audio, out_dir=args.out, max_seconds=args.max_seconds, checkpoint=args.checkpoint,
        weights=(args.weight, args.track_weight), choice=args.weights,
    )  # fmt: skip
    print(
        f"timbre model {model.version} ({model.dim} dims, rerank weights: window {model.weight:g},"
        f" track {model.track_weight:g}) written to {args.out}"
    )
    return 0
