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
composers (:data:`encoder.corpus_plan.HELDOUT_COMPOSERS`) are kept out of training entirely. Hours per composer
are capped so that Palestrina (~60 h in music21) does not drown the rest. The build is
resumable: a work whose views are all present is skipped, a view is only counted once its
last attribute (``duration_s``) is written, and the file is flushed after every work.
Workers render and compute features; only the parent process writes the file.

The pieces: :mod:`encoder.corpus_plan` (splits, views, order), :mod:`encoder.corpus_render`
(one work's views, worker side), :mod:`encoder.corpus_real` (one real recording's views) and
:mod:`encoder.corpus_file` (writing, statistics, summary); this module runs the build and its CLI.
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
from pathlib import Path
from typing import Any

from cadenza.errors import InputError
from encoder import corpus_real
from encoder.corpus_file import complete_views, store_views, summarize, write_header, write_stats
from encoder.corpus_plan import DEFAULT_COMPOSERS, order_works, plan_views
from encoder.corpus_records import WorkResult, dataset_name
from encoder.corpus_render import process_work
from encoder.render import FLUID_SOUNDFONT, soundfont_path
from encoder.scores import list_works

log = logging.getLogger(__name__)


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
    import h5py  # heavy, and the CLI's --help should not pay for it
    from tqdm import tqdm

    if fluid is None:
        fluid = soundfont_path(FLUID_SOUNDFONT) is not None
        log.info("FluidR3_GM views: %s", "yes" if fluid else "no (fluid-soundfont-gm not installed)")
    tracks = corpus_real.list_tracks(Path(real)) if real is not None else []

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir else out.parent / "midi_cache"
    works = order_works(list_works(composers=list(composers)))
    if not works:
        raise InputError(
            f"no music21 works for composers {list(composers)}; check the names (corpus folders)"
        )
    if limit is not None:
        works = works[:limit]
    cap_s = None if hours_per_composer is None else hours_per_composer * 3600.0
    counts = {"done": 0, "skipped": 0, "failed": 0, "capped": 0}
    with h5py.File(out, "a") as h5:
        write_header(h5)
        grp = h5.require_group("views")
        present = complete_views(grp)
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
                if not in_flight:
                    continue
                # A timeout keeps the parent responsive to Ctrl-C while workers render.
                done, _ = cf.wait(in_flight, timeout=1.0, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    in_flight.pop(fut)
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
