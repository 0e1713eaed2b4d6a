"""Training batches from the corpus HDF5, read window by window (never loaded whole).

Corpus schema (written by ``cadenza corpus``)::

    corpus.h5  attrs: fps=10, sample_rate=16000, n_acoustic=143, schema_version=1
      views/<work>__<view>  float16 [T, 143]; attrs work_id, composer, split, view,
                            program, instrument, transpose, time_scale, duration_s
      stats/mean [143], stats/std [143]

A view is one rendering of a work (clean, another instrument, melody only, noise, EQ, MP3,
reverb, ±1 semitone, ±5 % tempo). A moment at canonical second ``s`` starts at frame
``round(s * time_scale * fps)`` of a view.

A batch is ``works × passages × views`` clips: P distinct works, from each several passages
at random (non-grid) canonical starts at least ``min_gap_s`` apart, and from each passage
several views with ±``jitter_frames`` of misalignment (a real query is never frame-aligned),
a random gain (a level change shifts every dB band alike) and sometimes a shortened length
(queries are 3–30 s). Batches are a pure function of ``(seed, step)``, so a resumed run sees
the same data it would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cadenza.errors import ConfigError
from encoder import feataug
from encoder.feataug import FeatureAugment
from encoder.features import MEL, N_ACOUSTIC, RMS
from encoder.windowing import DEFAULT_WINDOWING

SPLITS = ("train", "val", "test", "heldout")
#: Work ids of real recordings start with this (``encoder.corpus_real``).
REAL_PREFIX = "real/"


@dataclass(frozen=True)
class ViewInfo:
    name: str  # dataset name under views/
    view: str
    time_scale: float
    n_frames: int


@dataclass(frozen=True)
class WorkInfo:
    work_id: str
    composer: str
    split: str
    views: tuple[ViewInfo, ...]

    def max_start_s(self, *, win_frames: int, fps: int, margin_frames: int = 0) -> float:
        """Latest canonical start whose window (plus ``margin_frames``) fits inside every view."""
        return min((v.n_frames - win_frames - margin_frames) / (v.time_scale * fps) for v in self.views)

    def view(self, name: str) -> ViewInfo | None:
        return next((v for v in self.views if v.view == name), None)


class Corpus:
    """Read-only handle on ``corpus.h5``: an index of works/views plus window reads."""

    def __init__(self, path: Path):
        import h5py

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"no corpus at {path}; build it with `cadenza corpus` or pass --corpus PATH")
        try:
            self._h5 = h5py.File(path, "r")
        except OSError as exc:
            raise ConfigError(
                f"corpus {path} is not a readable HDF5 file ({exc}); rebuild it with `cadenza corpus`"
            ) from None
        self.path = path
        attrs = self._h5.attrs
        try:
            self.fps = int(attrs["fps"])
            n_acoustic = int(attrs["n_acoustic"])
            self.mean = np.asarray(self._h5["stats/mean"][:], dtype=np.float32)
            self.std = np.asarray(self._h5["stats/std"][:], dtype=np.float32)
            group = self._h5["views"]
        except KeyError as exc:
            self.close()
            raise ConfigError(f"corpus {path} lacks {exc}; rebuild it with `cadenza corpus`") from None
        if n_acoustic != N_ACOUSTIC or self.mean.shape != (N_ACOUSTIC,):
            self.close()
            raise ConfigError(
                f"corpus {path} has {n_acoustic} features per frame, expected {N_ACOUSTIC}; rebuild it"
            )
        by_work: dict[str, dict[str, Any]] = {}
        for name, ds in group.items():
            a = ds.attrs
            work_id = str(a["work_id"])
            entry = by_work.setdefault(
                work_id, {"composer": str(a.get("composer", "")), "split": str(a["split"]), "views": []}
            )
            entry["views"].append(
                ViewInfo(
                    name=name,
                    view=str(a["view"]),
                    time_scale=float(a.get("time_scale", 1.0)),
                    n_frames=int(ds.shape[0]),
                )
            )
        self.works: list[WorkInfo] = [
            WorkInfo(
                work_id=w,
                composer=e["composer"],
                split=e["split"],
                views=tuple(sorted(e["views"], key=lambda v: v.name)),
            )
            for w, e in sorted(by_work.items())
        ]

    def split(self, name: str) -> list[WorkInfo]:
        return [w for w in self.works if w.split == name]

    def read(self, *, view: ViewInfo, start: int, n_frames: int) -> np.ndarray:
        """``n_frames`` frames of ``view`` from ``start`` (clipped into the view) → ``[n, 143]`` float32."""
        start = int(min(max(start, 0), max(view.n_frames - n_frames, 0)))
        return np.asarray(self._h5["views"][view.name][start : start + n_frames], dtype=np.float32)

    def read_all(self, *, view: ViewInfo) -> np.ndarray:
        return np.asarray(self._h5["views"][view.name][:], dtype=np.float32)

    def summary(self) -> dict[str, Any]:
        """Works, composers and hours per split and view counts: goes into checkpoint metadata.

        The corpus is named by file name and size, not its path: a checkpoint must not carry one
        machine's folders.
        """
        out: dict[str, Any] = {
            "file": self.path.name,
            "bytes": self.path.stat().st_size,
            "fps": self.fps,
            "splits": {},
        }
        for s in SPLITS:
            works = self.split(s)
            if not works:
                continue
            views: dict[str, int] = {}
            for w in works:
                for v in w.views:
                    views[v.view] = views.get(v.view, 0) + 1
            clean_s = sum((w.view("clean") or w.views[0]).n_frames for w in works) / self.fps
            all_s = sum(v.n_frames for w in works for v in w.views) / self.fps
            out["splits"][s] = {
                "works": len(works),
                "composers": sorted({w.composer for w in works}),
                "hours_clean": round(clean_s / 3600, 2),
                "hours_all_views": round(all_s / 3600, 2),
                "views": views,
            }
        return out

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> Corpus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class BatchSpec:
    works: int = 8
    passages: int = 4
    views: int = 4
    win_frames: int = DEFAULT_WINDOWING.window_frames  # the encoder config's windowing records the same
    min_gap_s: float = 8.0  # passages of one work start this far apart (overlap <= 2 s of 10)
    jitter_frames: int = 2  # per-view misalignment, frames
    gain_db: float = 6.0  # uniform ± level shift on the mel and RMS dB columns
    noise_std: float = 0.5  # dB of per-cell Gaussian noise on the mel columns
    crop_prob: float = 0.15  # chance a clip is shortened (a 3–10 s query)
    min_crop_frames: int = DEFAULT_WINDOWING.min_frames
    # Fresh feature-domain distortions per clip (encoder.feataug); None = only the stored views.
    augment: FeatureAugment | None = None
    # This many composers contribute two works each to a batch (the rest are drawn freely), so
    # the composer-level term always has positives from *other* works.
    composer_pairs: int = 0
    # Relative chance of each kind of stored view (the ``view`` attribute; ``pitch``/``tempo``
    # match any ±): queries in use are other instruments, hummed melodies and degraded clean
    # recordings, while feature augmentation already makes noise/EQ/pitch/tempo versions of
    # every clip. Unlisted kinds weigh 1; empty = uniform over the work's views.
    view_weights: tuple[tuple[str, float], ...] = ()
    # Share of each batch's works drawn from real recordings (work ids "real/..."); None = every
    # work equally likely. A corpus of many real tracks and few rendered works would otherwise
    # starve the rendered skills a fine-tune must keep.
    real_share: float | None = None

    def view_weight(self, view: str) -> float:
        for kind, weight in self.view_weights:
            if view == kind or (kind in ("pitch", "tempo") and view.startswith(kind)):
                return weight
        return 1.0

    @property
    def batch_size(self) -> int:
        return self.works * self.passages * self.views


@dataclass
class Batch:
    windows: np.ndarray  # [B, W, 143] float32 raw acoustic frames; rows past lengths[b] are padding
    lengths: np.ndarray  # [B] int64
    passage_labels: np.ndarray  # [B] int64, unique per (work, passage) within the batch
    work_labels: np.ndarray  # [B] int64
    composer_labels: np.ndarray | None = None  # [B] int64, one per composer in the batch
    views: list[str] = field(default_factory=list)


class PassageSampler:
    """Deterministic batches of ``works × passages × views`` clips from one split."""

    def __init__(self, corpus: Corpus, *, split: str = "train", spec: BatchSpec | None = None, seed: int = 0):
        self.corpus = corpus
        self.spec = spec or BatchSpec()
        self.seed = seed
        margin = self.spec.jitter_frames
        # Any work with one full window takes part; short ones (a 25 s chorale) get fewer passages.
        self.works = [
            w
            for w in corpus.split(split)
            if w.max_start_s(win_frames=self.spec.win_frames, fps=corpus.fps, margin_frames=margin) >= 0
        ]
        if len(self.works) < self.spec.works:
            raise ConfigError(
                f"split {split!r} of {corpus.path} has {len(self.works)} works of at least "
                f"{self.spec.win_frames / corpus.fps:.0f} s, need {self.spec.works}; use a bigger corpus or --batch-works"
            )

    def _pick_works(self, rng: np.random.Generator) -> list[int]:
        """``spec.works`` distinct work indices; ``composer_pairs`` composers give two each;
        with ``real_share`` that share of them from real recordings (pairs split alike)."""
        sp = self.spec
        if sp.real_share is None:
            return self._pick_from(list(range(len(self.works))), sp.works, sp.composer_pairs, rng)
        real = [i for i, w in enumerate(self.works) if w.work_id.startswith(REAL_PREFIX)]
        rendered = [i for i, w in enumerate(self.works) if not w.work_id.startswith(REAL_PREFIX)]
        n_real = min(len(real), max(0, round(sp.works * sp.real_share)))
        n_real = max(n_real, sp.works - len(rendered))
        pairs_real = round(sp.composer_pairs * n_real / sp.works)
        return self._pick_from(real, n_real, pairs_real, rng) + self._pick_from(
            rendered, sp.works - n_real, sp.composer_pairs - pairs_real, rng
        )

    def _pick_from(self, pool: list[int], n: int, pairs: int, rng: np.random.Generator) -> list[int]:
        by_composer: dict[str, list[int]] = {}
        for i in pool:
            by_composer.setdefault(self.works[i].composer, []).append(i)
        paired = sorted(c for c, idx in by_composer.items() if len(idx) >= 2)
        n_pairs = min(pairs, len(paired), n // 2)
        chosen: list[int] = []
        for ci in rng.choice(len(paired), size=n_pairs, replace=False) if n_pairs else []:
            idx = by_composer[paired[int(ci)]]
            chosen += [idx[int(j)] for j in rng.choice(len(idx), size=2, replace=False)]
        rest = [i for i in pool if i not in set(chosen)]
        chosen += [rest[int(j)] for j in rng.choice(len(rest), size=n - len(chosen), replace=False)]
        return chosen

    def batch(self, step: int) -> Batch:
        sp, fps = self.spec, self.corpus.fps
        rng = np.random.default_rng([self.seed, step])
        W = sp.win_frames
        windows = np.zeros((sp.batch_size, W, N_ACOUSTIC), dtype=np.float32)
        lengths = np.full(sp.batch_size, W, dtype=np.int64)
        passage_labels = np.zeros(sp.batch_size, dtype=np.int64)
        work_labels = np.zeros(sp.batch_size, dtype=np.int64)
        composer_labels = np.zeros(sp.batch_size, dtype=np.int64)
        composer_ids: dict[str, int] = {}
        views: list[str] = []
        b = 0
        picked = (
            self._pick_works(rng)
            if sp.composer_pairs or sp.real_share is not None
            else rng.choice(len(self.works), sp.works, False)
        )
        for wi, widx in enumerate(picked):
            work = self.works[int(widx)]
            cid = composer_ids.setdefault(work.composer, len(composer_ids))
            max_s = work.max_start_s(win_frames=W, fps=fps, margin_frames=sp.jitter_frames)
            # As many passages as fit min_gap_s apart (up to sp.passages); the work's clips are
            # shared among them, so a short work gives more views per passage, never fewer clips.
            n_pass = min(sp.passages, 1 + int(max_s // sp.min_gap_s))
            # n_pass sorted starts with gaps >= min_gap_s: spread the slack at random, then add the gaps.
            slack = max_s - (n_pass - 1) * sp.min_gap_s
            starts = np.sort(rng.uniform(0.0, slack, n_pass)) + sp.min_gap_s * np.arange(n_pass)
            per_pass = np.bincount(np.arange(sp.passages * sp.views) % n_pass, minlength=n_pass)
            for pi, (s, count) in enumerate(zip(starts, per_pass, strict=True)):
                replace = int(count) > len(work.views)
                if sp.view_weights:
                    p = np.array([sp.view_weight(v.view) for v in work.views], dtype=np.float64)
                    p /= p.sum()
                    # without replacement numpy needs enough non-zero weights
                    replace = replace or int(count) > int(np.count_nonzero(p))
                    chosen = rng.choice(len(work.views), size=int(count), replace=replace, p=p)
                else:
                    chosen = rng.choice(len(work.views), size=int(count), replace=replace)
                for vidx in chosen:
                    v = work.views[int(vidx)]
                    first = round(s * v.time_scale * fps) + int(
                        rng.integers(-sp.jitter_frames, sp.jitter_frames + 1)
                    )
                    aug = sp.augment
                    rate = aug.draw_rate(rng) if aug is not None else 1.0
                    if rate == 1.0:
                        clip = self.corpus.read(view=v, start=first, n_frames=W).copy()  # [W, 143]
                    else:  # a tempo change: read rate·W frames, resample them to W
                        src = self.corpus.read(view=v, start=first, n_frames=int(np.ceil(W * rate)) + 1)
                        n_out = min(W, int((src.shape[0] - 1) / rate) + 1)
                        clip = feataug.time_stretch(frames=src, rate=rate, n_out=n_out)  # [<=W, 143]
                    if aug is not None:
                        clip = aug.apply(frames=clip, rng=rng)
                    gain = rng.uniform(-sp.gain_db, sp.gain_db)
                    clip[:, MEL] += gain
                    clip[:, RMS] += gain
                    clip[:, MEL] += rng.normal(0.0, sp.noise_std, size=(clip.shape[0], MEL.stop - MEL.start))
                    n = clip.shape[0]
                    if rng.random() < sp.crop_prob:
                        n = int(rng.integers(sp.min_crop_frames, W + 1))
                    windows[b, :n] = clip[:n]
                    lengths[b] = n
                    passage_labels[b] = wi * sp.passages + pi
                    work_labels[b] = wi
                    composer_labels[b] = cid
                    views.append(v.view)
                    b += 1
        return Batch(
            windows=windows,
            lengths=lengths,
            passage_labels=passage_labels,
            work_labels=work_labels,
            composer_labels=composer_labels,
            views=views,
        )
