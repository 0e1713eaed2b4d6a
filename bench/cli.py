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
import logging
import os
import tempfile
import time
from pathlib import Path

from cadenza.errors import InputError

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


def run(name: str, args: argparse.Namespace) -> int:
    import torch

    from bench.report import RESULTS_DIR
    from cadenza.settings import Settings

    settings = Settings.from_env()
    torch.set_num_threads(max(1, int(args.threads)))
    out = Path(args.out) if args.out else RESULTS_DIR
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
    sizes = _sizes(args.sizes or ("10000" if args.quick else DEFAULT_SIZES))
    midi_cache = args.midi_cache or (settings.paths.corpus / "midi_cache")
    os.environ.setdefault("CADENZA_RATE_LIMIT", "100000")  # the speed benchmark's server must not throttle us
    # The embedded server keeps lock files under XDG_RUNTIME_DIR for the whole process; cadenza.db would point it
    # into the first temporary database's folder, which is deleted while the process still runs.
    run_dir = Path(tempfile.gettempdir()) / f"cadenza-bench-run-{os.getuid()}"
    run_dir.mkdir(mode=0o700, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(run_dir))
    base = Path(args.workdir) if args.workdir else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    for bench_name in which:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"cadenza-bench-{bench_name}-", dir=base) as tmp:
            work = Path(tmp)
            if bench_name == "quality":
                from bench.quality import run_quality

                report = run_quality(
                    out_dir=out,
                    quick=args.quick,
                    seed=args.seed,
                    checkpoint=args.checkpoint,
                    midi_cache=midi_cache,
                    workdir=work,
                    real_path=not args.no_real_path,
                    corpus=args.corpus or (settings.paths.corpus / "corpus.h5"),
                    candidate=args.candidate,
                )
            elif bench_name == "speed":
                from bench.speed import run_speed

                report = run_speed(
                    out_dir=out,
                    quick=args.quick,
                    seed=args.seed,
                    checkpoint=args.checkpoint,
                    midi_cache=midi_cache,
                    workdir=work,
                    threads=int(args.threads),
                )
            elif bench_name == "recorded":
                from bench.recorded import DEFAULT_MAX_SECONDS, DEFAULT_QUERIES, run_recorded

                max_s = (
                    args.max_seconds
                    if args.max_seconds is not None
                    else (60.0 if args.quick else DEFAULT_MAX_SECONDS)
                )
                report = run_recorded(
                    audio_dir=args.audio,
                    out_dir=out,
                    seed=args.seed,
                    checkpoint=args.checkpoint,
                    max_tracks=args.max_tracks,
                    max_seconds=max_s,
                    n_queries=args.queries or (8 if args.quick else DEFAULT_QUERIES),
                )
            elif bench_name == "humming":
                from bench.humming import run_humming

                report = run_humming(
                    out_dir=out,
                    quick=args.quick,
                    seed=args.seed,
                    checkpoint=args.checkpoint,
                    midi_cache=midi_cache,
                    workdir=work,
                )
            elif bench_name == "routes":
                from bench.routes import run_routes

                report = run_routes(sizes=sizes, out_dir=out, quick=args.quick, seed=args.seed, workdir=work)
            elif bench_name == "likeness":
                from bench.likeness import DEFAULT_MAX_SECONDS as LIKE_MAX_S
                from bench.likeness import DEFAULT_QUERIES as LIKE_QUERIES
                from bench.likeness import run_likeness

                report = run_likeness(
                    audio_dir=args.audio,
                    out_dir=out,
                    workdir=work,
                    seed=args.seed,
                    checkpoint=args.checkpoint,
                    max_seconds=args.max_seconds
                    if args.max_seconds is not None
                    else (45.0 if args.quick else LIKE_MAX_S),
                    n_queries=args.queries or (8 if args.quick else LIKE_QUERIES),
                    product=not args.no_real_path,
                    candidate=args.candidate,
                    product_checkpoint=args.product_checkpoint,
                )
            elif bench_name == "context":
                from bench.context import run_context

                report = run_context(
                    settings=settings, out_dir=out, n_queries=args.queries or (12 if args.quick else 40),
                    seed=args.seed,
                )  # fmt: skip
            else:
                from bench.scale import run_scale

                report = run_scale(
                    sizes=sizes,
                    out_dir=out,
                    quick=args.quick,
                    seed=args.seed,
                    workdir=work,
                    checkpoint=args.checkpoint,
                )
        print(
            f"bench {bench_name}: wrote {out / (report.name + '.md')} in {(time.perf_counter() - t0) / 60:.1f} min"
        )
    return 0
