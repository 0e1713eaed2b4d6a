"""``cadenza acquire URLS_FILE --out DIR`` and ``cadenza acquire --validate DIR``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cadenza.errors import InputError
from encoder.acquire.downloader import AcquireConfig, Acquirer
from encoder.acquire.items import read_items
from encoder.acquire.pacing import PacingConfig
from encoder.acquire.validate import Bounds, sweep

log = logging.getLogger(__name__)


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "urls_file",
        nargs="?",
        type=Path,
        help="text file: one URL or search query per line, optional TAB-separated key=value metadata",
    )
    parser.add_argument("--out", type=Path, help="output folder (MP3s + manifest.jsonl); a rerun resumes")
    parser.add_argument(
        "--validate", type=Path, metavar="DIR", help="only sweep DIR: decode every file, purge bad ones"
    )
    parser.add_argument("--dry-run", action="store_true", help="with --validate: report, delete nothing")
    parser.add_argument("--workers", type=int, default=2, help="download threads (default 2)")
    parser.add_argument("--attempts", type=int, default=5, help="tries per item and run (default 5)")
    parser.add_argument(
        "--min-seconds", type=float, default=50.0, help="shortest accepted track (default 50)"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=420.0, help="longest accepted track (default 420)"
    )
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between requests to one site when all is well"
    )
    parser.add_argument("--backoff", type=float, default=4.0, help="first retry delay in seconds (doubles)")
    parser.add_argument(
        "--breaker-failures", type=int, default=5, help="consecutive failures that open the breaker"
    )
    parser.add_argument(
        "--breaker-reset", type=float, default=60.0, help="seconds an open breaker waits to probe"
    )
    parser.add_argument("--socket-timeout", type=float, default=30.0, help="network timeout in seconds")
    parser.add_argument("--proxy", help="proxy URL for yt-dlp (http://..., socks5://...)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _positive(value: float, flag: str) -> None:
    if value <= 0:
        raise InputError(f"{flag} must be positive, got {value}")


def run(name: str, args: argparse.Namespace) -> int:
    if args.min_seconds < 0 or args.max_seconds <= args.min_seconds:
        raise InputError(
            f"--min-seconds {args.min_seconds} / --max-seconds {args.max_seconds}: need 0 <= min < max"
        )
    bounds = Bounds(min_s=args.min_seconds, max_s=args.max_seconds)
    if args.validate is not None:
        if args.urls_file is not None:
            raise InputError("give either URLS_FILE --out DIR or --validate DIR, not both")
        if not args.validate.is_dir():
            raise InputError(f"--validate {args.validate}: not a folder; pass the acquisition output folder")
        report = sweep(args.validate, bounds=bounds, dry_run=args.dry_run, progress=not args.no_progress)
        for line in report.lines():
            print(line)
        return 0
    if args.urls_file is None or args.out is None:
        raise InputError("usage: cadenza acquire URLS_FILE --out DIR  (or: cadenza acquire --validate DIR)")
    for value, flag in (
        (args.workers, "--workers"),
        (args.attempts, "--attempts"),
        (args.breaker_failures, "--breaker-failures"),
        (args.breaker_reset, "--breaker-reset"),
        (args.socket_timeout, "--socket-timeout"),
    ):
        _positive(value, flag)
    if args.interval < 0 or args.backoff < 0:
        raise InputError("--interval and --backoff must be >= 0")

    items = read_items(args.urls_file)
    if not items:
        raise InputError(f"{args.urls_file} has no URLs or queries; put one per line")
    pacing = PacingConfig(
        min_interval=args.interval,
        pushback_step=max(args.interval * 2, 1.0),
        fail_max=args.breaker_failures,
        reset_timeout=args.breaker_reset,
    )
    config = AcquireConfig(
        out=args.out,
        workers=args.workers,
        attempts=args.attempts,
        backoff_initial=args.backoff,
        backoff_jitter=args.backoff / 2,
        socket_timeout=args.socket_timeout,
        bounds=bounds,
        pacing=pacing,
        proxy=args.proxy,
    )
    acquirer = Acquirer(config)
    stats = acquirer.run(items, progress=not args.no_progress)
    counts = acquirer.manifest.counts()
    print(
        f"this run: done {stats.done}, failed {stats.failed}, rejected {stats.rejected}, "
        f"already finished {stats.skipped}; manifest: "
        + ", ".join(f"{state} {n}" for state, n in counts.items())
    )
    for record in acquirer.manifest.records():
        if record.state in ("failed", "rejected") and record.key in {i.key for i in items}:
            print(f"  {record.state}: {record.key}: {record.reason}")
    if stats.stopped:
        print(f"stopped: unfinished items stay pending in {acquirer.manifest.path}; run again to resume")
        return 130
    return 1 if counts.get("failed") else 0
