"""``cadenza ingest | search | library | remove | reindex | relink | path``.

Each subcommand imports what it runs inside its function: ``cadenza --help`` and a one-line usage
error must not pay for torch, psycopg, ray or librosa at start-up.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from cadenza.errors import InputError
from retrieval.types import (
    DEFAULT_DIVERSITY,
    DEFAULT_K,
    MAX_K,
    Aspects,
    Filters,
    MomentRef,
    SearchRequest,
    check_diversity,
)

if TYPE_CHECKING:  # types only: importing these at start-up is what the lazy imports avoid
    from cadenza.db import Database
    from cadenza.settings import Settings
    from encoder.embed import EmbedderSpec
    from encoder.protocols import MomentEmbedder
    from retrieval.ingest_report import IngestReport

log = logging.getLogger(__name__)

#: A process that never embeds a batch runs or reads the encoder in numpy: importing torch was ~1.5 s of
#: `cadenza search`; the driver of `cadenza ingest --ray` needs only the model's version.
QUERY_BACKEND = "numpy"


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "ingest":
        parser.add_argument(
            "paths", nargs="*", type=Path, help="audio files or folders (searched recursively)"
        )
        parser.add_argument(
            "--metadata", type=Path, help="CSV/JSON with a 'path' column: title, composer, work, era, year"
        )
        parser.add_argument(
            "--workers", type=int, default=None, help="decode/embed processes (default 2; with --ray: actors)"
        )
        parser.add_argument("--denoise", action="store_true", help="spectral-gating noise reduction first")
        parser.add_argument(
            "--ray",
            nargs="?",
            const="",
            default=None,
            metavar="ADDRESS",
            help="run as a Ray Data pipeline (needs the ray extra); ADDRESS of a cluster, or none for a "
            "local Ray started for the run. --workers then counts embedding actors (default: one per CPU/GPU)",
        )
        parser.add_argument("--json", action="store_true", help="print the report as JSON")
    elif name == "library":
        parser.add_argument("--json", action="store_true", help="machine-readable output")
    elif name == "remove":
        parser.add_argument("track_id", type=int, help="id from `cadenza library`")
    elif name == "relink":
        parser.add_argument("old_dir", type=Path, help="the folder the library's files were ingested from")
        parser.add_argument("new_dir", type=Path, help="the folder they are in now (same layout below it)")
        parser.add_argument("--dry-run", action="store_true", help="only say what would change")
    elif name == "reindex":
        parser.add_argument("--workers", type=int, default=2, help="decode/embed processes (default 2)")
    elif name == "path":
        parser.add_argument(
            "--from",
            dest="from_",
            required=True,
            type=_moment_type("from"),
            metavar="ID:SECONDS",
            help="the first moment",
        )
        parser.add_argument(
            "--to", required=True, type=_moment_type("to"), metavar="ID:SECONDS", help="the last moment"
        )
        parser.add_argument(
            "--steps", type=int, default=5, help="passages on the path, both ends included (2-20)"
        )
        parser.add_argument(
            "--json", action="store_true", help='print {"steps": [...]} as POST /api/path returns it'
        )
    elif name == "search":
        parser.add_argument("audio", nargs="?", type=Path, help="an audio clip (3 s – 10 min)")
        parser.add_argument(
            "--start", type=float, help="start of the moment in the clip (default: most representative)"
        )
        parser.add_argument(
            "--duration", type=float, help="seconds from --start (default: one moment of the encoder, 10 s)"
        )
        parser.add_argument("--track", type=int, help="query by a library moment: track id (with --at)")
        parser.add_argument("--at", type=float, default=0.0, help="start of the library moment, seconds")
        parser.add_argument(
            "--k", type=int, default=DEFAULT_K, help=f"results (default {DEFAULT_K}, at most {MAX_K})"
        )
        parser.add_argument("--json", action="store_true", help="print the SearchResponse JSON")
        parser.add_argument("--composer", action="append", default=[], help="only these composers")
        parser.add_argument("--exclude-composer", action="append", default=[], help="never these composers")
        parser.add_argument("--era", action="append", default=[], help="only these eras")
        parser.add_argument("--exclude-track", action="append", type=int, default=[])
        parser.add_argument("--key", help="tonic, e.g. C, F#, Bb")
        parser.add_argument("--mode", choices=["major", "minor"])
        parser.add_argument("--min-bpm", type=float)
        parser.add_argument("--max-bpm", type=float)
        parser.add_argument("--all-windows", action="store_true", help="allow several moments per track")
        parser.add_argument(
            "--same-key",
            action="store_true",
            help="search the clip only as it is (by default it is also searched a semitone up and down)",
        )
        parser.add_argument(
            "--diversity", type=float, default=DEFAULT_DIVERSITY,
            help=f"0 = plain ranking, 1 = spread composers as much as possible (default {DEFAULT_DIVERSITY})",
        )  # fmt: skip
        for aspect in ("sound", "harmony", "rhythm", "melody"):
            parser.add_argument(
                f"--{aspect}", type=float, default=1.0, metavar="W",
                help=f"weight of the {aspect} aspect of likeness, 0-10 (default 1; 0 ignores it)",
            )  # fmt: skip


def run(name: str, args: argparse.Namespace) -> int:
    from cadenza.db import database
    from cadenza.settings import Settings

    settings = Settings.from_env()
    with database(settings) as db:
        return int(_COMMANDS[name](settings, db, args) or 0)


def _embedder(settings: Settings, *, backend: str = "torch") -> tuple[MomentEmbedder, EmbedderSpec]:
    from encoder.embed import resolve_embedder
    from retrieval.ingest_steps import one_blas_thread

    if backend == QUERY_BACKEND:
        # One query's matrices are small: a second BLAS thread only adds hand-offs, and on a busy
        # machine its spinning made the encoder 5-20x slower (3 s for three windows, measured).
        one_blas_thread()
    return resolve_embedder(settings.checkpoint, backend=backend)


def _one_lane_threads(workers: int) -> AbstractContextManager[None]:
    """``--workers 1`` analyses in this process: on one core (torch and BLAS on one thread), as each pool lane
    does. torch's and BLAS's own pools took every core for little speed: 3.5x the CPU seconds and 2.6x the
    wall time on a loaded 2-core machine (40 files)."""
    from retrieval.ingest_steps import single_threaded

    return single_threaded() if workers <= 1 else nullcontext()


def _ingest(settings: Settings, db: Database, args: argparse.Namespace) -> int:
    from retrieval.ingest import ingest

    if args.workers is not None and args.workers < 0:
        raise InputError("--workers must be 0 or more")
    if not args.paths and not args.ray:
        raise InputError("give audio files or folders to ingest")
    if args.ray is not None:
        from encoder.embed import resolve_embedder

        # This process plans and writes while Ray's actors embed, so it needs only the model's version, which
        # the numpy backend reads without importing torch (~1.5 s and ~300 MB of a fresh process); nor does it
        # need a query's one-thread BLAS limit (scipy.linalg's import, 0.2 s).
        embedder: MomentEmbedder
        embedder, spec = resolve_embedder(settings.checkpoint, backend=QUERY_BACKEND)
        report = _ingest_on_ray(db, args, embedder, spec)
    else:
        embedder, spec = _embedder(settings)
        workers = 2 if args.workers is None else args.workers
        with _one_lane_threads(workers):
            report = ingest(
                db=db, paths=args.paths, embedder=embedder, spec=spec, metadata_file=args.metadata,
                workers=workers, use_denoise=args.denoise, progress=not args.json,
            )  # fmt: skip
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        r = report.to_json()
        print(
            f"added {r['added']}, replaced {r['replaced']}, updated {r['updated']}, unchanged {r['unchanged']}, "
            f"failed {len(r['failed'])}; "
            f"{r['segments']} segments, {r['audio_seconds'] / 60:.1f} min of audio in {r['wall_seconds']:.1f} s "
            f"({r['realtime_factor']}x realtime)"
        )
        for f in r["failed"]:
            print(f"  failed: {f['path']}: {f['error']}")
        _stale_hint(db, embedder.model_version)
    return (
        1
        if report.failed and not (report.added or report.replaced or report.updated or report.unchanged)
        else 0
    )


def _ingest_on_ray(
    db: Database, args: argparse.Namespace, embedder: MomentEmbedder, spec: EmbedderSpec
) -> IngestReport:
    from retrieval.ray_ingest import ray_ingest

    paths, address = list(args.paths), args.ray or None
    if address and Path(address).expanduser().exists():
        # `cadenza ingest --ray ~/music`: argparse gave the folder to --ray; it is a path, not a cluster.
        paths, address = [*paths, Path(address).expanduser()], None
    if not paths:
        raise InputError("give audio files or folders to ingest")
    return ray_ingest(
        db=db, paths=paths, spec=spec, model_version=embedder.model_version, address=address,
        metadata_file=args.metadata, workers=args.workers or None,
        use_denoise=args.denoise, progress=not args.json,
    )  # fmt: skip


def _library(settings: Settings, db: Database, args: argparse.Namespace) -> int:
    from retrieval.store import list_tracks

    with db.connection() as conn:
        tracks = list_tracks(conn)
    if args.json:
        print(json.dumps([t.to_json() for t in tracks], indent=2))
        return 0
    if not tracks:
        print("the library is empty; add music with `cadenza ingest PATH` or run `cadenza demo`")
        return 0
    for t in tracks:
        print(f"{t.id:6d}  {t.duration_s / 60:5.1f} min  {t.n_segments:4d} seg  {t.composer or '?':20.20s}  "
              f"{t.era or '':12.12s}  {t.title}")  # fmt: skip
    print(f"{len(tracks)} tracks, {sum(t.duration_s for t in tracks) / 3600:.2f} h")
    _stale_hint(db, _embedder(settings, backend=QUERY_BACKEND)[0].model_version)
    return 0


def _stale_hint(db: Database, model_version: str) -> None:
    """Say so when some tracks were embedded by another checkpoint: search does not see them."""
    from retrieval.store import stale_track_count

    with db.connection() as conn:
        n = stale_track_count(conn, model_version)
    if n:
        print(
            f"{n} track{'s were' if n != 1 else ' was'} embedded by another model than {model_version} and "
            f"{'are' if n != 1 else 'is'} not searched; run `cadenza reindex`"
        )


def _remove(settings: Settings, db: Database, args: argparse.Namespace) -> int:
    from retrieval.store import remove_track

    with db.connection() as conn:
        info = remove_track(conn, args.track_id)
    print(f"removed track {info.id} ({info.title}) and its {info.n_segments} segments")
    return 0


def _relink(settings: Settings, db: Database, args: argparse.Namespace) -> int:
    """A moved library: every track under OLD_DIR whose file is now at the same place under NEW_DIR
    gets that path (a track whose new file is missing keeps its old path and is listed)."""
    from retrieval.store import relink_plan, update_track

    old_dir, new_dir = args.old_dir.expanduser().resolve(), args.new_dir.expanduser().resolve()
    if not new_dir.is_dir():
        raise InputError(f"{new_dir} is not a folder; give the folder the library was moved to")
    with db.connection() as conn:
        rows = conn.execute("SELECT id, path FROM tracks").fetchall()
        plan = relink_plan(rows, old_dir=old_dir, new_dir=new_dir)
        if not plan:
            raise InputError(
                f"no track of the library is under {old_dir}; check the old folder (`cadenza library --json`)"
            )
        found = [(tid, new) for tid, _, new in plan if Path(new).is_file()]
        missing = [old for _, old, new in plan if not Path(new).is_file()]
        if not args.dry_run:
            with conn.transaction():
                for tid, new in found:
                    update_track(conn, tid, {"path": new})
    verb = "would relink" if args.dry_run else "relinked"
    print(f"{verb} {len(found)} of {len(plan)} tracks under {old_dir} to {new_dir}")
    for old in missing:
        print(f"  not found under {new_dir}: {old}")
    return 1 if missing and not found else 0


def _reindex(settings: Settings, db: Database, args: argparse.Namespace) -> int:
    from retrieval.ingest import reindex

    embedder, spec = _embedder(settings)
    with _one_lane_threads(args.workers):
        report = reindex(db=db, embedder=embedder, spec=spec, workers=args.workers)
    r = report.to_json()
    print(f"re-embedded {r['replaced']} tracks ({r['segments']} segments) with {embedder.model_version}; "
          f"{r['unchanged']} already current; {len(r['failed'])} failed"
          + (f"; harmony vectors written for {r['harmony_filled']} segments" if r["harmony_filled"] else ""))  # fmt: skip
    for f in r["failed"]:
        print(f"  failed: {f['path']}: {f['error']}")
    return 0


def _search(settings: Settings, db: Database, args: argparse.Namespace) -> int:
    from cadenza.audio import DecodeOptions, load_audio
    from retrieval.search import search

    if (args.audio is None) == (args.track is None):
        raise InputError("give an audio clip or --track ID --at SECONDS (one of them)")
    timings: dict[str, float] = {}
    audio = None
    if args.audio is not None:
        t0 = time.perf_counter()
        audio = load_audio(
            path=args.audio,
            options=DecodeOptions(
                timeout_s=settings.limits.decode_timeout_s, max_seconds=settings.limits.max_clip_seconds
            ),
        )
        timings["decode"] = (time.perf_counter() - t0) * 1000
    filters = Filters(
        composers=tuple(args.composer), exclude_composers=tuple(args.exclude_composer), eras=tuple(args.era),
        exclude_tracks=tuple(args.exclude_track), key=args.key, mode=args.mode, min_bpm=args.min_bpm,
        max_bpm=args.max_bpm,
    )  # fmt: skip
    embedder, _ = _embedder(settings, backend=QUERY_BACKEND)
    request = SearchRequest(
        audio=audio,
        start_s=args.start,
        duration_s=embedder.windowing.window_s if args.duration is None else args.duration,
        moments=(MomentRef(args.track, args.at),) if args.track is not None else (),
        k=args.k,
        filters=filters,
        one_per_track=not args.all_windows,
        transpose_probes=() if args.same_key else SearchRequest().transpose_probes,
        diversity=check_diversity(args.diversity),
        aspects=Aspects(
            **{n: getattr(args, n) for n in ("sound", "harmony", "rhythm", "melody")}
        ).validated(),
    )
    response = search(db=db, embedder=embedder, request=request)
    response.timings_ms = {**timings, **response.timings_ms}
    if args.json:
        print(json.dumps(response.to_json(), indent=2, default=float))
        return 0
    q = response.query
    print(f"query {q.get('start', 0):.1f}–{q.get('end', 0):.1f} s: {q.get('key', '?')} {q.get('mode', '')}, "
          f"{q.get('tempo_bpm') or '?'} BPM")  # fmt: skip
    if response.nothing_similar:
        print(
            "nothing in the library is really similar to this"
            + (" (closest shown)" if response.results else "")
        )
    for r in response.results:
        print(f"{r.rank:2d}. {r.composer or '?'} — {r.title}  @ {r.start:.1f}–{r.end:.1f} s  "
              f"likeness {r.likeness:.0f}  match {r.match:.0%}")  # fmt: skip
        print(f"    {r.reason}")
        if r.also_at:
            print("    this passage also plays at " + _spoken_list([f"{a:.1f} s" for a in r.also_at]))
        if r.moved_reason:
            print(f"    {r.moved_reason}")
    print("timings " + ", ".join(f"{k} {v:.0f} ms" for k, v in response.timings_ms.items()))
    return 0


def _spoken_list(items: list[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def moment_arg(raw: str, name: str) -> tuple[int, float]:
    """ "12:30.5" → (12, 30.5): a track id and seconds into it."""
    track, sep, seconds = raw.partition(":")
    try:
        tid, at = int(track), float(seconds) if sep else 0.0
    except ValueError:
        raise InputError(
            f"--{name} {raw!r} is not ID:SECONDS; give e.g. --{name} 12:30 (track 12 at 30 s)"
        ) from None
    if tid <= 0 or not 0 <= at < float("inf"):
        raise InputError(f"--{name} {raw!r}: the track id must be positive and the seconds ≥ 0")
    return tid, at


def _moment_type(name: str) -> Callable[[str], tuple[int, float]]:
    """An argparse type: a bad ID:SECONDS is a one-line usage error before any database is opened."""

    def parse(raw: str) -> tuple[int, float]:
        try:
            return moment_arg(raw, name)
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _path(settings: Settings, db: Database, args: argparse.Namespace) -> int:
    from retrieval.moment_path import moment_path

    start, end = args.from_, args.to
    embedder, _ = _embedder(settings, backend=QUERY_BACKEND)
    steps = moment_path(db=db, embedder=embedder, start=start, end=end, steps=args.steps)
    if args.json:
        print(json.dumps({"steps": [s.to_json() for s in steps]}, indent=2))
        return 0
    for i, s in enumerate(steps, start=1):
        like = "start" if i == 1 else f"likeness {s.likeness * 100:.0f}% to the step before"
        print(f"{i:2d}. track {s.track_id} {s.start:.1f}–{s.end:.1f} s  {s.title}  ({like})")
    return 0


_COMMANDS = {
    "path": _path,
    "ingest": _ingest,
    "library": _library,
    "remove": _remove,
    "reindex": _reindex,
    "relink": _relink,
    "search": _search,
}
