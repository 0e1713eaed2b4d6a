"""Same-source likeness from other representations of a recording's sound (issue #14, a measured experiment).

The shipped sound aspect (timbre-v2: 60 timbre statistics of a 10-s window, a track-LDA projection,
a window and a track term) reaches 0.681 same-source P@10 on two-sources-out folds of the training
sources and 0.448 in memory on the held-out sources; the target is 0.58 through the product. This
script measures, in memory and with the same scoring (embedding cosine + window term + track term,
one result per track, own track left out), whether a *better representation* helps:

* ``cov``: second-order statistics, the mean and covariance of 32 level-free log-mel bands, + the
  same track-LDA;
* ``hidden``: the v1 encoder's hidden states after its first block, mean+std pooled over frames,
  + the track-LDA (what a network trained on 90 h of rendered music hears, before its passage head);
* ``xvec``: a tiny x-vector (two 1-D convolutions over level-free log-mel + loudness, mean+std
  pooling, 32-d; 57 k parameters) trained on 2 CPU threads with supervised contrastive loss,
  positives = windows of the same track plus ``--source-weight`` x windows of the same source.

Each is scored alone (window + track term) and added to the shipped terms. Choices are made on the
folds (``--folds``); ``--heldout`` measures the held-out sources once, with everything fitted on all
five training sources. Caches (frames, v1 embeddings) go under ``--cache``; the held-out sources are
read only with ``--heldout``. Reserved packages are refused by :func:`bench.real_sources.load_sources`.

    python scripts/sound_representations.py --audio /work/data/real --cache DIR --folds --reps cov,hidden,xvec
    python scripts/sound_representations.py --audio /work/data/real --cache DIR --heldout --reps cov,hidden,xvec
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

TOP_K = 10
#: Level-free log-mel bands of the second-order statistics (groups of 4 of the 128).
COV_BANDS = 32
#: x-vector training (the folds' choice; the others tried are in encoder/MODEL_CARD.md): steps, tracks
#: per batch x windows per track, weight of the same-source SupCon term next to the same-track one,
#: temperature, peak learning rate (one-cycle), channels, and the random crop of each window (frames).
XVEC_STEPS, XVEC_TRACKS, XVEC_PER_TRACK, XVEC_SOURCE_WEIGHT = 400, 24, 3, 0.5
XVEC_TEMPERATURE, XVEC_LR, XVEC_HIDDEN, XVEC_CROP = 0.1, 3e-3, 64, (50, 100)
#: The timbre fit's own settings tried with ``--settings`` (shrinkage of the within-track scatter; window /
#: track term weights next to the embedding's 1).
SHRINK_GRID = (0.0, 0.05, 0.1, 0.25, 0.5, 0.75)
TERM_WEIGHTS = ((0.5, 1.0), (1.0, 0.5), (1.0, 1.0), (1.0, 2.0), (2.0, 2.0))
Data = dict[str, Any]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)


# -- data ---------------------------------------------------------------------------------------


def load_windows(audio: Path, cache: Path, which: str) -> Data:
    """Frames of every 10-s library window (every 2 s, first 120 s of each track) and the two queries
    per track of ``bench.likeness``, with v1 embeddings and the 60 timbre statistics; cached."""
    path = cache / f"{which}.pkl"
    if not path.is_file():
        _build_cache(audio, path, which)
    d: Data = pickle.load(path.open("rb"))
    from encoder.embed import Embedder
    from encoder.timbre import timbre_statistics

    d["raw"] = timbre_statistics(windows=d["windows"].astype(np.float32), lengths=d["lengths"])
    d["qraw"] = timbre_statistics(windows=d["q_frames"])
    d["qemb"] = Embedder.load(None).embed_windows(windows=d["q_frames"])
    d["src"] = np.unique([m[1] for m in d["meta"]], return_inverse=True)[1]
    return d


def _build_cache(audio: Path, path: Path, which: str) -> None:
    from bench.likeness import source_queries
    from bench.memsearch import Library, features
    from bench.real_sources import load_sources
    from encoder.corpus_real import HELDOUT_SOURCES
    from encoder.embed import Embedder

    names = sorted(p.name for p in audio.iterdir() if p.is_dir())
    only = HELDOUT_SOURCES if which == "heldout" else tuple(s for s in names if s not in HELDOUT_SOURCES)
    src = load_sources(audio, max_seconds=120.0, only=only)
    lib = Library.build({t.name: features(y=t.audio) for t in src.tracks})
    assert lib.windows is not None
    emb = Embedder.load(None)
    qs = source_queries(src)
    out = dict(meta=[(t.name, t.source, t.artist) for t in src.tracks], seg_track=lib.seg_track,
               seg_start=lib.seg_start, windows=lib.windows.astype(np.float16), lengths=lib.lengths,
               emb=lib.embed("v1", emb), q_track=np.array([q.track for q in qs]),
               q_frames=np.stack([features(y=q.audio) for q in qs]).astype(np.float32))  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    pickle.dump(out, path.open("wb"), protocol=5)


def subset(d: Data, keep: tuple[str, ...]) -> Data:
    """The tracks of the sources ``keep``, re-indexed; per-window and per-query arrays follow."""
    ti = np.array([m[1] in keep for m in d["meta"]])
    idx = np.flatnonzero(ti)
    remap = -np.ones(len(ti), int)
    remap[idx] = np.arange(len(idx))
    seg, q = ti[d["seg_track"]], ti[d["q_track"]]
    out: Data = dict(meta=[d["meta"][i] for i in idx], seg_track=remap[d["seg_track"][seg]],
                     q_track=remap[d["q_track"][q]], src=d["src"][idx])  # fmt: skip
    for k, v in d.items():
        if k in out or not isinstance(v, np.ndarray):
            continue
        if len(v) == len(d["seg_track"]):
            out[k] = v[seg]
        elif len(v) == len(d["q_track"]):
            out[k] = v[q]
    return out


def folds(d: Data) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(fit sources, evaluation sources) per fold, as ``cadenza timbre fit`` cross-validates: every pair
    held out for five sources, interleaved groups past that (retrieval.timbre_fit.source_folds)."""
    from retrieval.timbre_fit import source_folds

    srcs = sorted({m[1] for m in d["meta"]})
    out = []
    for held in source_folds(len(srcs)):
        e = tuple(srcs[i] for i in held)
        out.append((tuple(s for s in srcs if s not in e), e))
    return out


# -- scoring ------------------------------------------------------------------------------------


def robust(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    med = np.median(raw, 0)
    return med, np.maximum(1.4826 * np.median(np.abs(raw - med), 0), 1e-3 * np.abs(med) + 1e-6)


def fit_lda(
    raw: np.ndarray, labels: np.ndarray, dim: int = 32, shrink: float = 0.5
) -> Callable[..., np.ndarray]:
    """As retrieval.timbre_fit.track_projection: robust scale, total vs shrunk within-track scatter."""
    import scipy.linalg

    c, s = robust(raw)
    z = (raw - c) / s
    d = z.shape[1]
    sw = np.zeros((d, d))
    for t in np.unique(labels):
        zc = z[labels == t] - z[labels == t].mean(0)
        sw += zc.T @ zc
    sw /= len(z)
    sw = (1 - shrink) * sw + shrink * np.trace(sw) / d * np.eye(d)
    ev, vecs = scipy.linalg.eigh(np.cov(z.T), sw)
    o = np.argsort(-ev)[:dim]
    proj = vecs[:, o] * np.sqrt(np.maximum(ev[o], 0))[None]
    return lambda x: unit(((x - c) / s) @ proj)


Term = tuple[float, np.ndarray, np.ndarray, str]


def p_at_10(dev: Data, terms: list[Term]) -> float:
    """Same-source P@10 of a weighted sum of terms: ``emb`` (cosine, best window of a track), ``win``
    ((1 + cos) / 2, best window) and ``trk`` ((1 + cos) / 2 against the track's unit mean vector)."""
    nt, st, src = len(dev["meta"]), dev["seg_track"], dev["src"]
    win = np.zeros((len(dev["q_track"]), len(st)))
    trk = np.zeros((len(dev["q_track"]), nt))
    for w, db, q, kind in terms:
        if kind == "trk":
            means = np.zeros((nt, db.shape[1]))
            np.add.at(means, st, db)
            trk += w * 0.5 * (1 + q @ unit(means).T)
        else:
            win += w * (q @ db.T if kind == "emb" else 0.5 * (1 + q @ db.T))
    out = []
    for i, qt in enumerate(dev["q_track"]):
        b = np.full(nt, -np.inf)
        np.maximum.at(b, st, win[i])
        b += trk[i]
        b[qt] = -np.inf
        out.append(np.mean(src[np.argsort(-b)[:TOP_K]] == src[qt]))
    return float(np.mean(out))


# -- representations ----------------------------------------------------------------------------


def second_order(w: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    """``[N, T, 143]`` → mean + upper-triangle covariance of level-free 32-band log-mel (loud frames)."""
    x = w[..., :128].astype(np.float32).reshape(len(w), w.shape[1], COV_BANDS, -1).mean(-1)
    x = x - x.mean(-1, keepdims=True)
    n_t = np.full(len(w), w.shape[1]) if lengths is None else lengths
    m = np.arange(w.shape[1])[None] < n_t[:, None]
    loud = m & (w[..., 140].astype(np.float32) > -60)
    wt = np.where((loud.sum(1) >= 5)[:, None], loud, m).astype(np.float32)[..., None]
    mu = (x * wt).sum(1) / wt.sum(1)
    xc = (x - mu[:, None]) * wt
    cov = np.einsum("ntd,nte->nde", xc, xc) / wt.sum(1)[:, :, None]
    iu = np.triu_indices(COV_BANDS)
    return np.hstack([mu, cov[:, iu[0], iu[1]]])


def hidden_stats(w: np.ndarray, lengths: np.ndarray | None, layer: int = 0) -> np.ndarray:
    """The v1 encoder's frame states after block ``layer``, masked mean + std over frames ``[N, 256]``."""
    import torch

    from encoder.embed import Embedder, prepare_batch

    emb = Embedder.load(None)
    model = emb.torch_model().eval()
    out = []
    for i in range(0, len(w), 128):
        chunk = w[i : i + 128].astype(np.float32)
        n_t = np.full(len(chunk), chunk.shape[1]) if lengths is None else lengths[i : i + 128]
        f, mask = prepare_batch(windows=chunk, lengths=n_t, mean=emb.mean, std=emb.std)
        x, mk = torch.from_numpy(f), torch.from_numpy(mask)
        with torch.inference_mode():
            h = model.in_proj(x)
            h = torch.cat([model.cls.expand(len(h), 1, -1), h], 1)
            keep = torch.cat([torch.ones(len(h), 1, dtype=torch.bool), mk], 1)
            for block in list(model.blocks.layers)[: layer + 1]:
                h = block(h, src_key_padding_mask=~keep)
            wt = mk[..., None].float()
            mu = (h[:, 1:] * wt).sum(1) / wt.sum(1)
            sd = (((h[:, 1:] - mu[:, None]) ** 2 * wt).sum(1) / wt.sum(1)).clamp_min(1e-8).sqrt()
        out.append(torch.cat([mu, sd], 1).numpy())
    return np.concatenate(out)


def xvec_inputs(w: np.ndarray, lengths: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``[N, T, 143]`` → (``[N, 129, T]``: log-mel less the window's mean level, and loudness less its
    mean, both / 20 dB; zero past the length) and the frame mask ``[N, T]``."""
    mel, rms = w[..., :128].astype(np.float32), w[..., 140].astype(np.float32)
    n_t = np.full(len(w), w.shape[1]) if lengths is None else lengths
    m = (np.arange(w.shape[1])[None] < n_t[:, None]).astype(np.float32)
    n = m.sum(1)
    lvl = (mel.mean(-1) * m).sum(1) / n
    rel = (rms - ((rms * m).sum(1) / n)[:, None]) / 20.0
    x = np.concatenate([(mel - lvl[:, None, None]) / 20.0, rel[..., None]], -1) * m[..., None]
    return np.ascontiguousarray(x.transpose(0, 2, 1), dtype=np.float32), m


def _xvec_net(hidden: int) -> Any:
    import torch
    import torch.nn.functional as F
    from torch import nn

    class XVector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv1d(129, hidden, 5, padding=2)
            self.c2 = nn.Conv1d(hidden, hidden, 3, padding=2, dilation=2)
            self.head = nn.Linear(2 * hidden, 32)

        def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            y = F.relu(self.c1(x))
            y = F.relu(self.c2(y) + y)
            mm = m[:, None]
            n = mm.sum(-1).clamp(min=1)
            mu = (y * mm).sum(-1) / n
            sd = (((y - mu[..., None]) ** 2 * mm).sum(-1) / n).clamp(min=1e-6).sqrt()
            return F.normalize(self.head(torch.cat([mu, sd], 1)), dim=1)

    return XVector()


def _supcon(z: Any, labels: Any, t: float) -> Any:
    import torch

    s = (z @ z.T / t).masked_fill(torch.eye(len(z), dtype=torch.bool), -1e9)
    pos = (labels[:, None] == labels[None]) & ~torch.eye(len(z), dtype=torch.bool)
    logp = s - torch.logsumexp(s, 1, keepdim=True)
    has = pos.any(1)
    return -((logp * pos).sum(1)[has] / pos.sum(1)[has]).mean()


def train_xvec(d: Data, seed: int = 0) -> Callable[[np.ndarray, np.ndarray | None], np.ndarray]:
    """Train on ``d``'s windows (track and source labels); returns the embedding function."""
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net = _xvec_net(XVEC_HIDDEN)
    opt = torch.optim.AdamW(net.parameters(), lr=XVEC_LR, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, XVEC_LR, total_steps=XVEC_STEPS, pct_start=0.1)
    track, source = d["seg_track"], d["src"][d["seg_track"]]
    by = {u: np.flatnonzero(track == u) for u in np.unique(track)}
    for _ in range(XVEC_STEPS):
        tk = rng.choice(list(by), min(XVEC_TRACKS, len(by)), replace=False)
        idx = np.concatenate(
            [rng.choice(by[u], XVEC_PER_TRACK, replace=len(by[u]) < XVEC_PER_TRACK) for u in tk]
        )
        lengths = np.minimum(rng.integers(XVEC_CROP[0], XVEC_CROP[1] + 1, len(idx)), d["lengths"][idx])
        x, m = xvec_inputs(d["windows"][idx], lengths)
        z = net(torch.from_numpy(x), torch.from_numpy(m))
        loss = _supcon(z, torch.from_numpy(track[idx]), XVEC_TEMPERATURE)
        loss = loss + XVEC_SOURCE_WEIGHT * _supcon(z, torch.from_numpy(source[idx]), XVEC_TEMPERATURE)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()

    def embed(w: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
        x, m = xvec_inputs(w, lengths)
        with torch.no_grad():
            return np.concatenate(
                [net(torch.from_numpy(x[i : i + 512]), torch.from_numpy(m[i : i + 512])).numpy()
                 for i in range(0, len(x), 512)]
            )  # fmt: skip

    return embed


# -- the experiment -----------------------------------------------------------------------------


def add_features(d: Data, reps: list[str]) -> None:
    if "cov" in reps:
        d["cov"], d["qcov"] = second_order(d["windows"], d["lengths"]), second_order(d["q_frames"], None)
    if "hidden" in reps:
        d["hidden"], d["qhidden"] = (
            hidden_stats(d["windows"], d["lengths"]),
            hidden_stats(d["q_frames"], None),
        )


def evaluate(fit: Data, dev: Data, reps: list[str], settings: bool = False) -> dict[str, float]:
    """Fit on ``fit``'s tracks, score ``dev``'s queries: shipped terms, each representation alone and added;
    with ``settings``, also the timbre fit's own choices (shrinkage, track or source labels, term weights)."""
    lda = fit_lda(fit["raw"], fit["seg_track"])
    t, qt = lda(dev["raw"]), lda(dev["qraw"])
    shipped: list[Term] = [(1.0, dev["emb"], dev["qemb"], "emb"), (1.0, t, qt, "win"), (1.0, t, qt, "trk")]
    out = {"shipped (embedding + timbre window + track)": p_at_10(dev, shipped),
           "timbre-v2 alone (window + track)": p_at_10(dev, shipped[1:])}  # fmt: skip
    if settings:
        for shrink in SHRINK_GRID:
            f = fit_lda(fit["raw"], fit["seg_track"], shrink=shrink)
            u, qu = f(dev["raw"]), f(dev["qraw"])
            out[f"shrink {shrink:g}"] = p_at_10(dev, [shipped[0], (1.0, u, qu, "win"), (1.0, u, qu, "trk")])
        f = fit_lda(fit["raw"], fit["src"][fit["seg_track"]])
        u, qu = f(dev["raw"]), f(dev["qraw"])
        out["source labels"] = p_at_10(dev, [shipped[0], (1.0, u, qu, "win"), (1.0, u, qu, "trk")])
        for w, tw in TERM_WEIGHTS:
            out[f"weights {w:g} / {tw:g}"] = p_at_10(dev, [shipped[0], (w, t, qt, "win"), (tw, t, qt, "trk")])
    for rep in reps:
        if rep == "xvec":
            embed = train_xvec(fit)
            u, qu = embed(dev["windows"], dev["lengths"]), embed(dev["q_frames"], None)
        else:
            proj = fit_lda(fit[rep], fit["seg_track"])
            u, qu = proj(dev[rep]), proj(dev["q" + rep])
        extra: list[Term] = [(1.0, u, qu, "win"), (1.0, u, qu, "trk")]
        out[f"{rep} alone (window + track)"] = p_at_10(dev, extra)
        out[f"shipped + {rep}"] = p_at_10(dev, shipped + extra)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--audio", type=Path, default=Path("/work/data/real"))
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--reps", default="cov,hidden,xvec")
    ap.add_argument("--folds", action="store_true", help="two-sources-out folds of the training sources")
    ap.add_argument("--heldout", action="store_true", help="measure the held-out sources (once, at the end)")
    ap.add_argument(
        "--settings", action="store_true", help="also try the timbre fit's shrinkage, labels, weights"
    )
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = ap.parse_args(argv)
    reps = [r for r in args.reps.split(",") if r]
    if set(reps) - {"cov", "hidden", "xvec"} or not (args.folds or args.heldout):
        print("error: --reps takes cov,hidden,xvec and one of --folds / --heldout is needed", file=sys.stderr)
        return 2
    t0 = time.time()
    tr = load_windows(args.audio, args.cache, "train")
    add_features(tr, reps)
    result: dict[str, Any] = {"reps": reps, "sources": sorted({m[1] for m in tr["meta"]}), "tracks": len(tr["meta"]),
                              "queries": len(tr["q_track"])}  # fmt: skip
    if args.folds:
        rows = [evaluate(subset(tr, fs), subset(tr, es), reps, args.settings) for fs, es in folds(tr)]
        result["folds"] = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}
        print("folds", json.dumps(result["folds"], indent=1), flush=True)
    if args.heldout:
        ho = load_windows(args.audio, args.cache, "heldout")
        add_features(ho, reps)
        result["heldout"] = {k: round(v, 4) for k, v in evaluate(tr, ho, reps, args.settings).items()}
        print("heldout", json.dumps(result["heldout"], indent=1), flush=True)
    result["seconds"] = round(time.time() - t0, 1)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
