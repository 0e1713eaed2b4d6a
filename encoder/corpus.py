"""``cadenza corpus build``: render music21 scores in many versions and store their features.

The training corpus is ONE HDF5 file holding acoustic frames (never audio), readable one
random window at a time (chunked, LZF-compressed)::

    corpus.h5
      root attrs: fps=10, sample_rate=16000, n_acoustic=143, schema_version=1
      views/<safe work_id>__<view-name>   float16 [T, 143], chunks (200, 143), lzf
          attrs: work_id, composer, split ('train'|'val'|'test'|'heldout'), view, program,
                 instrument, transpose, time_scale, duration_s
      stats/mean, stats/std               float32 [143], from the train split's clean + instrument views

``<safe work_id>`` is the work id with characters outside ``[A-Za-z0-9_.-]`` replaced by
``_``. ``<view-name>`` equals the ``view`` attribute, except that the ``instrument`` views
are named ``instrument-<program>`` (a work has two or three) and the second melody-only
view ``melody-<program>``. Frame ``round(s * time_scale * 10)``
of a view shows the moment at ``s`` seconds of the work's ``clean`` view; every view of a
work has exactly ``round(clean_samples * time_scale)`` samples.

Splits are by work (a stable hash of the work id: 80 % train, 10 % val, 10 % test) and two
composers (:data:`HELDOUT_COMPOSERS`) are kept out of training entirely. Hours per composer
are capped so that Palestrina (~60 h in music21) does not drown the rest. The build is
resumable: a work whose views are all present is skipped, a view is only counted once its
last attribute (``duration_s``) is written, and the file is flushed after every work.
Workers render and compute features; only the parent process writes the file.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import functools
import logging
import multiprocessing
import signal
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cadenza.errors import InputError
from encoder.corpus_records import WorkResult, dataset_name
from encoder.features import FPS, N_ACOUSTIC, SAMPLE_RATE

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CHUNK_FRAMES = 200

#: Corpus folders with enough material; the default composer set.
DEFAULT_COMPOSERS: tuple[str, ...] = (
    "bach",
    "beethoven",
    "essenFolksong",
    "haydn",
    "josquin",
    "monteverdi",
    "mozart",
    "oneills1850",
    "palestrina",
    "ryansMammoth",
    "schumann_clara",
    "schumann_robert",
    "trecento",
)
#: Never trained on: a classical quartet writer and a Renaissance one (their neighbours in
#: style, Mozart/Beethoven and Palestrina, are in training), for honest generalization tests.
HELDOUT_COMPOSERS: tuple[str, ...] = ("haydn", "josquin")

_CHORAL = (52, 19, 48)
_QUARTET = (48, 0, 19)
_FOLK = (73, 0, 24, 40)
#: Primary ("clean") program choices per composer; others get :data:`_DEFAULT_PRIMARY`.
PRIMARY_PROGRAMS: dict[str, tuple[int, ...]] = {
    "bach": (19, 0, 52, 6),
    "palestrina": _CHORAL,
    "josquin": _CHORAL,
    "monteverdi": _CHORAL,
    "trecento": (52, 6, 48),
    "beethoven": _QUARTET,
    "haydn": _QUARTET,
    "mozart": _QUARTET,
    "schumann_robert": (0, 48),
    "schumann_clara": (0, 48),
    "ryansMammoth": _FOLK,
    "oneills1850": _FOLK,
    "essenFolksong": (73, 0, 52),
}
_DEFAULT_PRIMARY = (0, 48, 19)
#: Programs for the 'instrument' views.
OTHER_PROGRAMS: tuple[int, ...] = (0, 6, 19, 24, 42, 48, 52, 56, 71, 73)
MELODY_PROGRAMS: tuple[int, ...] = (53, 74)


@dataclass(frozen=True)
class ViewSpec:
    name: str  # dataset suffix
    view: str  # the 'view' attribute
    program: int
    transpose: int = 0
    tempo_scale: float = 1.0  # render speed; time_scale = 1 / tempo_scale
    melody_only: bool = False
    source: str = "render"  # 'render' or an augmentation of the clean audio
    soundfont: str = "timgm6mb"  # encoder.render.DEFAULT_SOUNDFONT / FLUID_SOUNDFONT


def split_of(*, work_id: str, composer: str) -> str:
    from encoder.render import stable_hash

    if composer in HELDOUT_COMPOSERS:
        return "heldout"
    bucket = stable_hash("split:" + work_id) % 10
    return "train" if bucket < 8 else ("val" if bucket == 8 else "test")


def plan_views(*, work_id: str, composer: str, fluid: bool = False) -> list[ViewSpec]:
    """The views rendered for one work (deterministic in the work id); ``fluid`` adds the clean
    program played by the second soundfont (FluidR3_GM), when it is installed."""
    from encoder.render import FLUID_SOUNDFONT, stable_hash

    h = stable_hash("plan:" + work_id)
    choices = PRIMARY_PROGRAMS.get(composer, _DEFAULT_PRIMARY)
    primary = choices[h % len(choices)]
    others = [p for p in OTHER_PROGRAMS if p != primary]
    # Cross-instrument and melody re-finding were the weakest benchmark rows with 1-2 other
    # instruments and one melody timbre per work; 2-3 and both timbres give more such pairs.
    # The first instrument(s) and the 'melody' view keep their earlier programs, so a corpus
    # built with fewer views only gains the new ones when the build is resumed.
    n_instr = 2 + (h >> 8) % 2
    start = (h >> 16) % len(others)
    instr = [others[(start + 3 * i) % len(others)] for i in range(n_instr)]
    semis = 1 if (h >> 24) % 2 else -1
    faster = bool((h >> 32) % 2)
    specs = [ViewSpec("clean", "clean", primary)]
    specs += [ViewSpec(f"instrument-{p}", "instrument", p) for p in instr]
    melody = MELODY_PROGRAMS[(h >> 40) % 2]
    specs.append(ViewSpec("melody", "melody", melody, melody_only=True))
    specs += [ViewSpec(f"melody-{p}", "melody", p, melody_only=True) for p in MELODY_PROGRAMS if p != melody]
    specs += [ViewSpec(v, v, primary, source=v) for v in ("noise", "eq", "mp3", "reverb")]
    specs.append(ViewSpec(f"pitch{semis:+d}", f"pitch{semis:+d}", primary, transpose=semis))
    pct = 5 if faster else -5
    specs.append(ViewSpec(f"tempo{pct:+d}", f"tempo{pct:+d}", primary, tempo_scale=1.0 + pct / 100.0))
    if fluid:
        # Same notes, same program, another synthesizer: a production change, not an arrangement
        # change, so timbre is not one soundfont's (the real recordings vary production too).
        specs.append(ViewSpec("fluid", "soundfont", primary, soundfont=FLUID_SOUNDFONT))
    return specs


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    if y.size >= n:
        return y[:n]
    return np.concatenate([y, np.zeros(n - y.size, dtype=np.float32)])


def process_work(
    *, work, cache_dir: Path, max_seconds: float | None, skip: frozenset[str], fluid: bool = False
) -> WorkResult:
    """Render and featurize the views of ``work`` not in ``skip`` (worker side; never raises)."""
    from encoder import augment
    from encoder.features import acoustic_features
    from encoder.render import program_name, render, stable_hash, work_to_midi

    result = WorkResult(work.work_id, work.composer)
    try:
        split = split_of(work_id=work.work_id, composer=work.composer)
        midi = work_to_midi(work=work, cache_dir=cache_dir)
        specs = plan_views(work_id=work.work_id, composer=work.composer, fluid=fluid)
        clean = render(midi=midi, program=specs[0].program, max_seconds=max_seconds)
        if clean.size < SAMPLE_RATE:
            raise InputError(f"{work.work_id} renders to {clean.size / SAMPLE_RATE:.2f} s; too short")
        result.clean_seconds = clean.size / SAMPLE_RATE
        for spec in specs:
            name = dataset_name(work_id=work.work_id, view_name=spec.name)
            if name in skip:
                continue
            rng = np.random.default_rng(stable_hash(f"aug:{work.work_id}:{spec.name}"))
            time_scale = 1.0 / spec.tempo_scale
            n = int(round(clean.size * time_scale))
            if spec.name == "clean":
                audio = clean
            elif spec.source == "noise":
                audio = augment.add_noise(y=clean, rng=rng)
            elif spec.source == "eq":
                audio = augment.random_eq(y=clean, rng=rng)
            elif spec.source == "mp3":
                audio = augment.mp3_roundtrip(y=clean, rng=rng)
            elif spec.source == "reverb":
                audio = augment.reverb(y=clean, rng=rng)
            else:
                audio = render(
                    midi=midi,
                    program=spec.program,
                    transpose=spec.transpose,
                    tempo_scale=spec.tempo_scale,
                    melody_only=spec.melody_only,
                    max_seconds=n / SAMPLE_RATE + 0.1,
                    soundfont=spec.soundfont,
                )
            audio = _fit_length(audio, n)
            frames = acoustic_features(y=audio, sr=SAMPLE_RATE).astype(np.float16)
            attrs = {
                "work_id": work.work_id,
                "composer": work.composer,
                "split": split,
                "view": spec.view,
                "program": int(spec.program),
                "instrument": program_name(spec.program),
                "transpose": int(spec.transpose),
                "time_scale": float(time_scale),
                "duration_s": float(n / SAMPLE_RATE),
            }
            result.views.append((name, frames, attrs))
    except Exception as exc:  # skip-and-log: one bad score must not stop a long build
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def _complete_views(views) -> set[str]:
    # duration_s is written last: a view without it was cut short by a killed build.
    return {name for name, ds in views.items() if "duration_s" in ds.attrs}


def _order(works: list, hours_cap: float | None) -> list:
    """Round-robin over composers, each composer's works in a stable pseudo-random order."""
    from encoder.render import stable_hash

    by_comp: dict[str, list] = defaultdict(list)
    for w in works:
        by_comp[w.composer].append(w)
    queues = [
        sorted(ws, key=lambda w: stable_hash("order:" + w.work_id)) for _, ws in sorted(by_comp.items())
    ]
    out: list = []
    for i in range(max((len(q) for q in queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return out


def store_views(grp, present: set[str], views: list[tuple[str, np.ndarray, dict]]) -> None:
    """Write finished views into the ``views`` group (parent side), ``duration_s`` last."""
    for name, frames, attrs in views:
        if name in grp:
            del grp[name]
        ds = grp.create_dataset(
            name,
            data=frames,
            dtype="float16",
            chunks=(min(CHUNK_FRAMES, frames.shape[0]), N_ACOUSTIC),
            compression="lzf",
        )
        attrs = dict(attrs)
        duration = attrs.pop("duration_s")
        ds.attrs.update(attrs)
        ds.attrs["duration_s"] = duration
        present.add(name)


def write_stats(h5) -> int:
    """(Re)compute ``stats/mean`` and ``stats/std`` from train clean + instrument views; returns frames used."""
    total = np.zeros(N_ACOUSTIC, dtype=np.float64)
    total_sq = np.zeros(N_ACOUSTIC, dtype=np.float64)
    count = 0
    for ds in h5["views"].values():
        if ds.attrs.get("split") == "train" and ds.attrs.get("view") in ("clean", "instrument"):
            x = ds[()].astype(np.float64)
            total += x.sum(axis=0)
            total_sq += (x**2).sum(axis=0)
            count += x.shape[0]
    if "stats" in h5:
        del h5["stats"]
    grp = h5.create_group("stats")
    if count < 2:
        log.warning("no train frames yet: stats are mean 0 / std 1")
        mean, std = np.zeros(N_ACOUSTIC), np.ones(N_ACOUSTIC)
    else:
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
        std = np.maximum(std, 1e-3)
    grp.create_dataset("mean", data=mean.astype(np.float32))
    grp.create_dataset("std", data=std.astype(np.float32))
    grp.attrs["frames"] = count
    return count


def summarize(*, path: Path) -> str:
    """A human-readable summary: hours of clean music per composer and split, views, size."""
    import h5py

    seconds: dict[tuple[str, str], float] = defaultdict(float)
    works: dict[str, set[str]] = defaultdict(set)
    views: dict[str, int] = defaultdict(int)
    frames = 0
    with h5py.File(path, "r") as h5:
        for ds in h5["views"].values():
            a = ds.attrs
            if "duration_s" not in a:
                continue
            views[str(a["view"])] += 1
            frames += ds.shape[0]
            works[str(a["split"])].add(str(a["work_id"]))
            if a["view"] == "clean":
                seconds[(str(a["composer"]), str(a["split"]))] += float(a["duration_s"])
        stats_frames = int(h5["stats"].attrs.get("frames", 0)) if "stats" in h5 else 0
    lines = [f"corpus: {path}", f"file size: {path.stat().st_size / 1e6:.1f} MB"]
    lines.append(
        f"works: {sum(len(v) for v in works.values())} ("
        + ", ".join(f"{k} {len(v)}" for k, v in sorted(works.items()))
        + ")"
    )
    lines.append(
        f"views: {sum(views.values())} (" + ", ".join(f"{k} {v}" for k, v in sorted(views.items())) + ")"
    )
    lines.append(f"frames (all views): {frames} ({frames / FPS / 3600:.2f} h)")
    lines.append(f"stats fitted on {stats_frames} train clean+instrument frames")
    lines.append("hours of clean (canonical) music per composer and split:")
    composers = sorted({c for c, _ in seconds})
    for c in composers:
        parts = {s: seconds.get((c, s), 0.0) / 3600 for s in ("train", "val", "test", "heldout")}
        cells = ", ".join(f"{s} {h:.2f}" for s, h in parts.items() if h > 0)
        lines.append(f"  {c:18s} {sum(parts.values()):5.2f} h  ({cells})")
    total = sum(seconds.values()) / 3600
    lines.append(f"  {'TOTAL':18s} {total:5.2f} h")
    return "\n".join(lines)


def build(
    *,
    out: Path,
    composers: Sequence[str] = DEFAULT_COMPOSERS,
    hours_per_composer: float | None = 1.0,
    limit: int | None = None,
    workers: int = 2,
    max_seconds: float | None = 180.0,
    cache_dir: Path | None = None,
    fluid: bool | None = None,
    real: Path | None = None,
    real_max_seconds: float | None = None,
) -> dict[str, int]:
    """Build or resume the corpus at ``out``; returns counts (works done / skipped / failed).

    ``fluid``: add the FluidR3_GM views (None = when the soundfont is installed). ``real``: a
    folder of real recordings, one sub-folder per source (:mod:`encoder.corpus_real`), added
    next to the rendered works (first ``real_max_seconds`` of each track; None = default cap).
    """
    import h5py
    from tqdm import tqdm

    from encoder import corpus_real
    from encoder.render import FLUID_SOUNDFONT, list_works, soundfont_path

    if fluid is None:
        fluid = soundfont_path(FLUID_SOUNDFONT) is not None
        log.info("FluidR3_GM views: %s", "yes" if fluid else "no (fluid-soundfont-gm not installed)")
    tracks = corpus_real.list_tracks(Path(real)) if real is not None else []

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir else out.parent / "midi_cache"
    works = _order(list_works(composers=list(composers)), hours_per_composer)
    if not works:
        raise InputError(
            f"no music21 works for composers {list(composers)}; check the names (corpus folders)"
        )
    if limit is not None:
        works = works[:limit]
    cap_s = None if hours_per_composer is None else hours_per_composer * 3600.0
    counts = {"done": 0, "skipped": 0, "failed": 0, "capped": 0}
    with h5py.File(out, "a") as h5:
        h5.attrs.update(
            {
                "fps": FPS,
                "sample_rate": SAMPLE_RATE,
                "n_acoustic": N_ACOUSTIC,
                "schema_version": SCHEMA_VERSION,
            }
        )
        grp = h5.require_group("views")
        present = _complete_views(grp)
        for name in set(grp.keys()) - present:
            del grp[name]  # half-written by a killed build
        seconds: dict[str, float] = defaultdict(float)
        for name in present:
            if name.endswith("__clean"):
                seconds[str(grp[name].attrs["composer"])] += float(grp[name].attrs["duration_s"])

        def wanted(w) -> frozenset[str] | None:
            names = {
                dataset_name(work_id=w.work_id, view_name=s.name)
                for s in plan_views(work_id=w.work_id, composer=w.composer, fluid=fluid)
            }
            missing = names - present
            return frozenset(names - missing) if missing else None

        def store(res: WorkResult) -> None:
            if res.error:
                counts["failed"] += 1
                log.warning("skipped %s: %s", res.work_id, res.error)
                return
            store_views(grp, present, res.views)
            h5.flush()
            if any(n.endswith("__clean") for n, _, _ in res.views):
                seconds[res.composer] += res.clean_seconds
            counts["done"] += 1

        bar = tqdm(total=len(tracks) + len(works), desc="corpus", unit="work")
        in_flight: dict[cf.Future, Any] = {}
        busy: dict[str, int] = defaultdict(int)
        # the real recordings first: few, cheap to featurize, and the reason for a rebuild
        pending: list[Any] = [*tracks, *works]
        executor = (
            cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
            if workers > 1
            else None
        )
        try:
            while pending or in_flight:
                while pending and len(in_flight) < max(1, 2 * workers):
                    w = pending.pop(0)
                    real_track = isinstance(w, corpus_real.RealTrack)
                    skip = corpus_real.wanted(w, present) if real_track else wanted(w)
                    if skip is None:
                        counts["skipped"] += 1
                        bar.update(1)
                        continue
                    # the cap decides which works enter; a work already in still gains new views
                    entered = dataset_name(work_id=w.work_id, view_name="clean") in present
                    if not (real_track or entered or cap_s is None) and seconds[w.composer] >= cap_s:
                        counts["capped"] += 1
                        bar.update(1)
                        continue
                    job: Any = (
                        functools.partial(
                            corpus_real.process_track, track=w, max_seconds=real_max_seconds, skip=skip
                        )
                        if real_track
                        else functools.partial(
                            process_work,
                            work=w,
                            cache_dir=cache_dir,
                            max_seconds=max_seconds,
                            skip=skip,
                            fluid=fluid,
                        )
                    )
                    if executor is None:
                        store(job())
                        bar.update(1)
                        continue
                    fut = executor.submit(job)
                    in_flight[fut] = w
                    busy[w.composer] += 1
                if not in_flight:
                    continue
                # A timeout keeps the parent responsive to Ctrl-C while workers render.
                done, _ = cf.wait(in_flight, timeout=1.0, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    w = in_flight.pop(fut)
                    busy[w.composer] -= 1
                    store(fut.result())
                    bar.update(1)
                    bar.set_postfix(hours=f"{sum(seconds.values()) / 3600:.2f}", failed=counts["failed"])
        except BaseException:
            # Ctrl-C or a crashed worker: stop the renders now (a music21 parse can take a
            # minute); the file stays consistent and the next run resumes.
            if executor is not None:
                for proc in list((getattr(executor, "_processes", None) or {}).values()):
                    proc.terminate()
                executor.shutdown(wait=False, cancel_futures=True)
                executor = None
            raise
        finally:
            if executor is not None:
                executor.shutdown(wait=True)
            bar.close()
        frames = write_stats(h5)
        log.info("stats fitted on %d frames", frames)
    return counts


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="render works and store their features (resumable)")
    b.add_argument("--out", type=Path, default=None, help="HDF5 file (default: <home>/corpus/corpus.h5)")
    b.add_argument("--limit", type=int, default=None, help="consider only the first N works (quick runs)")
    b.add_argument("--hours-per-composer", type=float, default=1.0, help="cap on clean hours per composer")
    b.add_argument("--workers", type=int, default=2, help="render processes (1 = in this process)")
    b.add_argument("--composers", type=str, default=None, help="comma-separated corpus folders")
    b.add_argument("--max-seconds", type=float, default=180.0, help="cut each work after this many seconds")
    b.add_argument("--cache-dir", type=Path, default=None, help="MIDI cache (default: next to --out)")
    b.add_argument(
        "--real",
        type=Path,
        default=None,
        help="also real recordings: a folder with one sub-folder per source (scripts/fetch_real_music.sh); "
        "the held-out sources (encoder.corpus_real.HELDOUT_SOURCES) are left out",
    )
    b.add_argument(
        "--real-max-seconds",
        type=float,
        default=None,
        help="use the first N s of each real track (default 240)",
    )
    b.add_argument(
        "--no-fluid",
        action="store_true",
        help="no FluidR3_GM views even when fluid-soundfont-gm is installed (default: use it when present)",
    )
    b.add_argument(
        "--ready-file", type=Path, default=None, help="write the summary here when the build completes"
    )


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(name: str, args: argparse.Namespace) -> int:
    from cadenza.settings import Settings

    out = args.out or Settings.from_env().paths.corpus / "corpus.h5"
    composers = (
        tuple(c.strip() for c in args.composers.split(",") if c.strip())
        if args.composers
        else DEFAULT_COMPOSERS
    )
    # `kill` (SIGTERM) ends a build like Ctrl-C does: workers stopped, file closed, resumable.
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    counts = build(
        out=out,
        composers=composers,
        hours_per_composer=args.hours_per_composer,
        limit=args.limit,
        workers=args.workers,
        max_seconds=args.max_seconds,
        cache_dir=args.cache_dir,
        fluid=False if args.no_fluid else None,
        real=args.real,
        real_max_seconds=args.real_max_seconds,
    )
    wall = time.monotonic() - started
    text = summarize(path=Path(out))
    text += f"\nthis run: {counts} in {wall / 60:.1f} min wall ({args.workers} workers)\n"
    print(text)
    if args.ready_file:
        args.ready_file.write_text(text)
    return 0
