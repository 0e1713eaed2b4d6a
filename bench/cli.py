"""``cadenza bench [quality|speed|scale|routes|recorded|humming|likeness|context|all]``: run the benchmarks, write bench/results/.

Each benchmark writes ``<out>/<name>.json``, ``<out>/<name>.md`` and its PNG plots. See
``bench/README.md`` for what each one measures. ``recorded`` and ``likeness`` need a folder of real
recordings (``--audio DIR``; for ``likeness`` one sub-folder per source, as
``scripts/fetch_real_music.sh DIR`` makes it); ``all`` runs ``recorded`` only when ``--audio`` is given.
``context`` runs on the demo library of ``CADENZA_HOME`` (built first when missing), so ``all``
leaves it out too.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.pgbench_db import keep_lock_files_for_the_run
from bench.report import RESULTS_DIR, Report
from cadenza.errors import InputError
from cadenza.settings import Settings

log = logging.getLogger(__name__)

WHICH = ("quality", "speed", "scale", "routes", "recorded", "humming", "likeness", "context", "all")
DEFAULT_SIZES = "10000,100000"


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(float(x)) for x in text.replace("_", "").split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--sizes {text!r} must be comma-separated numbers, e.g. 10000,100000") from None
    if not sizes or min(sizes) < 1000:
        raise InputError("--sizes needs at least one size, each at least 1000 segments")
    return sizes


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "which", nargs="?", choices=WHICH, default="all", help="which benchmark (default: all)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sample sizes: a smoke run in a few minutes"
    )
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: bench/results)")
    parser.add_argument(
        "--sizes",
        default=None,
        help=f"scale: library sizes in segments (default {DEFAULT_SIZES}; --quick 10000)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed for data and queries")
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="encoder checkpoint folder (default: shipped)"
    )
    parser.add_argument(
        "--candidate",
        type=Path,
        default=None,
        help="quality, likeness: a second checkpoint folder measured side by side (the ship decision)",
    )
    parser.add_argument(
        "--product-checkpoint",
        type=Path,
        default=None,
        help="likeness: the checkpoint the product-path rows search with (default: shipped)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="scratch folder for temporary databases and renders (default: a temp folder)",
    )
    parser.add_argument(
        "--midi-cache",
        type=Path,
        default=None,
        help="MIDI cache shared with `cadenza corpus` (default: <CADENZA_HOME>/corpus/midi_cache)",
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="quality: the rendered corpus, whose test/heldout works come first "
        "(default: <CADENZA_HOME>/corpus/corpus.h5)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads for embedding (default 2)")
    parser.add_argument(
        "--no-real-path", action="store_true", help="quality: skip the real ingest + search path"
    )
    parser.add_argument(
        "--audio",
        type=Path,
        default=None,
        help="recorded: folder of real recordings, searched recursively (needed by `recorded`; "
        "`all` runs `recorded` only when it is given)",
    )
    parser.add_argument(
        "--max-tracks", type=int, default=None, help="recorded: use only the first N files (path order)"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="recorded: seconds from the start of each track (default 120; --quick 60; 0 = whole tracks)",
    )
    parser.add_argument(
        "--queries",
        type=int,
        default=None,
        help="recorded: 10-s queries per augmentation (default 32; --quick 8); "
        "context: library moments (default 40; --quick 12)",
    )


@dataclasses.dataclass(frozen=True)
class _Run:
    """What every benchmark of one ``cadenza bench`` call is given."""

    args: argparse.Namespace
    settings: Settings
    out: Path
    work: Path
    sizes: list[int]
    midi_cache: Path

    def rendered(self) -> dict[str, Any]:
        """The arguments of the benchmarks on rendered held-out works."""
        a = self.args
        return {
            "out_dir": self.out, "quick": a.quick, "seed": a.seed, "checkpoint": a.checkpoint,
            "midi_cache": self.midi_cache, "workdir": self.work,
        }  # fmt: skip


def _quality(r: _Run) -> Report:
    from bench.quality import run_quality

    return run_quality(
        **r.rendered(),
        real_path=not r.args.no_real_path,
        corpus=r.args.corpus or (r.settings.paths.corpus / "corpus.h5"),
        candidate=r.args.candidate,
    )


def _speed(r: _Run) -> Report:
    from bench.speed import run_speed

    return run_speed(**r.rendered(), threads=int(r.args.threads))


def _humming(r: _Run) -> Report:
    from bench.humming import run_humming

    return run_humming(**r.rendered())


def _recorded(r: _Run) -> Report:
    from bench.recorded import DEFAULT_MAX_SECONDS, DEFAULT_QUERIES, run_recorded

    a = r.args
    max_s = a.max_seconds if a.max_seconds is not None else (60.0 if a.quick else DEFAULT_MAX_SECONDS)
    return run_recorded(
        audio_dir=a.audio, out_dir=r.out, seed=a.seed, checkpoint=a.checkpoint, max_tracks=a.max_tracks,
        max_seconds=max_s, n_queries=a.queries or (8 if a.quick else DEFAULT_QUERIES),
    )  # fmt: skip


def _routes(r: _Run) -> Report:
    from bench.routes import run_routes

    return run_routes(sizes=r.sizes, out_dir=r.out, quick=r.args.quick, seed=r.args.seed, workdir=r.work)


def _likeness(r: _Run) -> Report:
    from bench.likeness import DEFAULT_MAX_SECONDS, DEFAULT_QUERIES, run_likeness

    a = r.args
    return run_likeness(
        audio_dir=a.audio, out_dir=r.out, workdir=r.work, seed=a.seed, checkpoint=a.checkpoint,
        max_seconds=a.max_seconds if a.max_seconds is not None else (45.0 if a.quick else DEFAULT_MAX_SECONDS),
        n_queries=a.queries or (8 if a.quick else DEFAULT_QUERIES), product=not a.no_real_path,
        candidate=a.candidate, product_checkpoint=a.product_checkpoint,
    )  # fmt: skip


def _context(r: _Run) -> Report:
    from bench.context import run_context

    return run_context(
        settings=r.settings, out_dir=r.out, n_queries=r.args.queries or (12 if r.args.quick else 40),
        seed=r.args.seed,
    )  # fmt: skip


def _scale(r: _Run) -> Report:
    from bench.scale import run_scale

    a = r.args
    return run_scale(
        sizes=r.sizes, out_dir=r.out, quick=a.quick, seed=a.seed, workdir=r.work, checkpoint=a.checkpoint
    )


#: Each benchmark's runner (the heavy imports happen only for the one asked for).
RUNNERS: dict[str, Callable[[_Run], Report]] = {
    "quality": _quality, "speed": _speed, "scale": _scale, "routes": _routes, "recorded": _recorded,
    "humming": _humming, "likeness": _likeness, "context": _context,
}  # fmt: skip


def _which(args: argparse.Namespace) -> list[str]:
    if args.which == "all":
        # recorded needs external audio, so `all` includes it only when a folder is given.
        which = ["quality", "speed", "scale"] + (["recorded"] if args.audio else [])
    else:
        which = [args.which]
    if "recorded" in which and not args.audio:
        raise InputError(
            "bench recorded needs --audio DIR, a folder of real recordings (MP3/WAV/FLAC/OGG/M4A)"
        )
    if "likeness" in which and not args.audio:
        raise InputError(
            "bench likeness needs --audio DIR with one folder per source; fill it with "
            "scripts/fetch_real_music.sh DIR"
        )
    return which


def run(name: str, args: argparse.Namespace) -> int:
    import torch

    settings = Settings.from_env()
    torch.set_num_threads(max(1, int(args.threads)))
    out = Path(args.out) if args.out else RESULTS_DIR
    which = _which(args)
    sizes = _sizes(args.sizes or ("10000" if args.quick else DEFAULT_SIZES))
    midi_cache = args.midi_cache or (settings.paths.corpus / "midi_cache")
    os.environ.setdefault("CADENZA_RATE_LIMIT", "100000")  # the speed benchmark's server must not throttle us
    keep_lock_files_for_the_run()
    base = Path(args.workdir) if args.workdir else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    for bench_name in which:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"cadenza-bench-{bench_name}-", dir=base) as tmp:
            report = RUNNERS[bench_name](
                _Run(
                    args=args, settings=settings, out=out, work=Path(tmp), sizes=sizes, midi_cache=midi_cache
                )
            )
        print(
            f"bench {bench_name}: wrote {out / (report.name + '.md')} in {(time.perf_counter() - t0) / 60:.1f} min"
        )
    return 0
