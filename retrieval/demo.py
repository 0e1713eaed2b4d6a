"""``cadenza demo``: build (once, offline) a demo library from music21 scores, ingest it, serve.

Scores from the corpus in the ``music21`` wheel are rendered with the GM soundfont shipped
in ``pretty_midi`` (:mod:`encoder.render`), written as OGG/Vorbis (in chunks: one long
``sf.write`` of Vorbis segfaults) under ``CADENZA_HOME/demo/audio`` with a metadata CSV,
and ingested. About 1.8 h of audio from 17 composers across six eras, several instruments;
every step is idempotent (rendered files and a manifest are reused, ingest skips known
content), so a second ``cadenza demo`` starts the server in seconds.

The plan's works ship as MIDI (``demo_midi.zip``, 65 files, 0.2 MB), converted once by
:func:`encoder.scores.work_to_midi`: parsing scores with music21 was ~90 % of the render's CPU
(68 of 76 CPU-s on a 27-min sample; one string quartet alone 58 s). A work missing from it
(a changed plan) is converted as before; :func:`pack_midi` refreshes it from a build's cache.

:mod:`encoder.scores` and :mod:`encoder.render` (music21, pretty_midi, tinysoundfont) are imported inside the functions
that render, so importing this module (the CLI, each render worker) stays light.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import multiprocessing
import shutil
import time
import zipfile
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cadenza.errors import CadenzaError
from cadenza.settings import Settings

if TYPE_CHECKING:  # the render workers import this module: they need neither the database nor the encoder
    from cadenza.db import Database
    from encoder.protocols import MomentEmbedder

log = logging.getLogger(__name__)

SR = 16_000


@dataclass(frozen=True)
class ComposerPlan:
    folder: str  # music21 corpus folder
    name: str  # display name
    era: str
    year: int
    programs: tuple[int, ...]  # GM programs, used in turn
    minutes: float  # audio budget for this composer
    max_works: int = 40


#: ≥ 8 composers, six eras, several instruments; ~120 min planned, ~105 min rendered (single-work
#: composers cannot fill their budget; a score music21 cannot expand is skipped).
PLAN: tuple[ComposerPlan, ...] = (
    ComposerPlan("trecento", "Francesco Landini & the Trecento", "Medieval", 1370, (74, 19, 68), 12),
    ComposerPlan("ciconia", "Johannes Ciconia", "Medieval", 1395, (19,), 3),
    ComposerPlan("josquin", "Josquin des Prez", "Renaissance", 1500, (52, 48), 10),
    ComposerPlan("palestrina", "Giovanni Pierluigi da Palestrina", "Renaissance", 1570, (52, 19), 12),
    ComposerPlan("monteverdi", "Claudio Monteverdi", "Baroque", 1605, (48, 52), 11),
    ComposerPlan("corelli", "Arcangelo Corelli", "Baroque", 1689, (48,), 3),
    ComposerPlan("bach", "Johann Sebastian Bach", "Baroque", 1730, (19, 6, 48), 14),
    ComposerPlan("handel", "George Frideric Handel", "Baroque", 1740, (6,), 3),
    ComposerPlan("haydn", "Joseph Haydn", "Classical", 1790, (48, 0), 9),
    ComposerPlan("mozart", "Wolfgang Amadeus Mozart", "Classical", 1785, (0, 48, 71), 10),
    ComposerPlan("beethoven", "Ludwig van Beethoven", "Classical", 1800, (48, 0), 6, max_works=3),
    ComposerPlan("schubert", "Franz Schubert", "Romantic", 1825, (0,), 3),
    ComposerPlan("schumann_robert", "Robert Schumann", "Romantic", 1840, (0, 40), 8),
    ComposerPlan("schumann_clara", "Clara Schumann", "Romantic", 1845, (0,), 4),
    ComposerPlan("verdi", "Giuseppe Verdi", "Romantic", 1853, (48, 61), 3),
    ComposerPlan("joplin", "Scott Joplin", "Modern", 1902, (0,), 3),
    ComposerPlan("schoenberg", "Arnold Schoenberg", "Modern", 1910, (0, 48), 4),
)

MAX_SECONDS_PER_WORK = 240.0
#: The demo works' MIDI as ``work_to_midi`` caches it (file names ``safe_name(work_id).mid``).
SHIPPED_MIDI = Path(__file__).with_name("demo_midi.zip")
#: A fixed member date, so packing the same MIDI gives the same zip bytes.
_ZIP_DATE = (2026, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Job:
    work_id: str
    composer_folder: str
    title: str
    path: str  # score
    program: int
    out: str  # OGG path
    max_seconds: float


def _plan_key(plan: tuple[ComposerPlan, ...], max_seconds: float, works_per: int | None) -> str:
    raw = json.dumps([asdict(p) for p in plan] + [max_seconds, works_per], sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def write_ogg(path: Path, y: np.ndarray, *, sr: int = SR, chunk_s: float = 10.0) -> None:
    """Write mono ``y`` as OGG/Vorbis in chunks, atomically (tmp file, then rename)."""
    import soundfile as sf

    tmp = path.with_name(path.name + ".part")
    step = int(chunk_s * sr)
    with sf.SoundFile(str(tmp), "w", samplerate=sr, channels=1, format="OGG", subtype="VORBIS") as f:
        for i in range(0, len(y), step):
            f.write(np.clip(y[i : i + step], -1.0, 1.0).astype(np.float32))
    tmp.replace(path)


def seed_midi_cache(cache_dir: Path, shipped: Path = SHIPPED_MIDI) -> int:
    """Put the shipped MIDI files into ``cache_dir`` where missing (never over a file there); returns how many."""
    if not shipped.is_file():
        return 0
    cache_dir.mkdir(parents=True, exist_ok=True)
    added = 0
    with zipfile.ZipFile(shipped) as z:
        for name in z.namelist():
            out = cache_dir / Path(name).name  # the bare name: a member never writes outside the cache
            if out.suffix != ".mid" or out.exists():
                continue
            tmp = out.with_suffix(".mid.tmp")
            tmp.write_bytes(z.read(name))
            tmp.replace(out)
            added += 1
    return added


def pack_midi(cache_dir: Path, out: Path = SHIPPED_MIDI) -> int:
    """Write the ``*.mid`` files of a demo build's ``midi-cache`` into ``out`` (sorted, fixed dates); returns how many."""
    files = sorted(Path(cache_dir).glob("*.mid"))
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for f in files:
            z.writestr(zipfile.ZipInfo(f.name, date_time=_ZIP_DATE), f.read_bytes(), zipfile.ZIP_DEFLATED)
    return len(files)


def _render_job(job: Job, cache_dir: str) -> tuple[str, float, str | None]:
    """Worker: score → MIDI (cached) → audio → OGG. Returns (out, seconds, error)."""
    from encoder.render import render
    from encoder.scores import Work, work_to_midi

    out = Path(job.out)
    try:
        work = Work(job.work_id, job.composer_folder, job.title, Path(job.path))
        midi = work_to_midi(work=work, cache_dir=Path(cache_dir))
        y = render(midi=midi, program=job.program, sr=SR, max_seconds=job.max_seconds)
        if y.size < 6 * SR:
            return job.out, 0.0, "shorter than 6 s"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_ogg(out, y)
        return job.out, y.size / SR, None
    except CadenzaError as exc:
        return job.out, 0.0, str(exc)
    except Exception as exc:  # one bad score must not stop the demo
        return job.out, 0.0, f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class DemoBuild:
    """What to render and how: the plan, its limits, the worker count (render and ingest alike)."""

    plan: tuple[ComposerPlan, ...] = PLAN
    max_seconds_per_work: float = MAX_SECONDS_PER_WORK
    works_per_composer: int | None = None  # None: each composer's own max_works
    workers: int = 2
    rebuild: bool = False  # render again even when the manifest matches
    progress: bool = True


def build_audio(*, demo_dir: Path, build: DemoBuild = DemoBuild()) -> Path:
    """Render the plan into ``demo_dir/audio`` and write ``demo_dir/metadata.csv``; returns the CSV path.

    Reuses everything when ``demo_dir/manifest.json`` matches the plan (``rebuild`` forces a fresh render).
    """
    import soundfile as sf
    from tqdm import tqdm

    from encoder.render import program_name, safe_name
    from encoder.scores import list_works

    audio_dir, meta_csv, manifest = demo_dir / "audio", demo_dir / "metadata.csv", demo_dir / "manifest.json"
    plan, max_seconds_per_work, works_per_composer = (
        build.plan,
        build.max_seconds_per_work,
        build.works_per_composer,
    )
    workers, progress = build.workers, build.progress
    key = _plan_key(plan, max_seconds_per_work, works_per_composer)
    if build.rebuild and demo_dir.exists():
        shutil.rmtree(audio_dir, ignore_errors=True)
        manifest.unlink(missing_ok=True)
    if manifest.exists() and meta_csv.exists():
        try:
            if json.loads(manifest.read_text()).get("plan") == key:
                log.info("demo audio already built in %s; reusing it", audio_dir)
                return meta_csv
        except ValueError:
            pass
    cache_dir = demo_dir / "midi-cache"
    log.info("demo MIDI: %d shipped files added to %s", seed_midi_cache(cache_dir), cache_dir)
    by_folder = {p.folder: p for p in plan}
    works = list_works(composers=list(by_folder))
    rows: list[dict[str, Any]] = []
    budget = {p.folder: p.minutes * 60.0 for p in plan}
    count = {p.folder: 0 for p in plan}
    queue: dict[str, list[Any]] = {p.folder: [] for p in plan}
    for w in works:
        queue[w.composer].append(w)
    t0 = time.perf_counter()
    total_s = 0.0
    bar = tqdm(total=sum(budget.values()) / 60.0, unit="min", desc="render demo", disable=not progress,
               bar_format="{l_bar}{bar}| {n:.1f}/{total:.0f} min audio [{elapsed}<{remaining}]")  # fmt: skip
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=ctx) as ex:
        # One work in flight per composer at a time (so no composer overshoots its budget by
        # more than a work), composers interleaved, the pool kept busy: a slow score (a
        # quartet takes music21 ~10 s) never leaves the other worker idle.
        busy: set[str] = set()
        futs: dict[Any, tuple[Job, ComposerPlan]] = {}

        def next_job(p: ComposerPlan) -> Job | None:
            limit = works_per_composer if works_per_composer is not None else p.max_works
            if budget[p.folder] <= 0 or count[p.folder] >= limit or not queue[p.folder]:
                return None
            w = queue[p.folder].pop(0)
            prog = p.programs[count[p.folder] % len(p.programs)]
            name = f"{safe_name(w.work_id.split('/', 1)[-1])}-{program_name(prog)}.ogg"
            cap = min(max_seconds_per_work, budget[p.folder] + 20.0)
            return Job(
                w.work_id, w.composer, w.title, str(w.path), prog, str(audio_dir / p.folder / name), cap
            )

        def refill() -> None:
            nonlocal total_s
            progressed = True
            while progressed and len(futs) < 2 * max(1, workers):
                progressed = False
                for p in plan:
                    if p.folder in busy or len(futs) >= 2 * max(1, workers):
                        continue
                    job = next_job(p)
                    if job is None:
                        continue
                    progressed = True
                    if Path(job.out).exists():  # rendered by an earlier, interrupted run (atomic writes)
                        seconds = float(sf.info(job.out).duration)
                        _record(rows, job, p, seconds, budget, count)
                        total_s += seconds
                        bar.update(seconds / 60.0)
                        continue
                    busy.add(p.folder)
                    futs[ex.submit(_render_job, job, str(cache_dir))] = (job, p)

        refill()
        while futs:
            done, _ = wait(list(futs), return_when=FIRST_COMPLETED)
            for fut in done:
                job, p = futs.pop(fut)
                busy.discard(p.folder)
                _, seconds, err = fut.result()
                if err:
                    log.warning("skipping %s: %s", job.work_id, err)
                    count[p.folder] += 1
                    continue
                _record(rows, job, p, seconds, budget, count)
                total_s += seconds
                bar.update(seconds / 60.0)
            refill()
    bar.close()
    if not rows:
        raise CadenzaError(
            "no demo work could be rendered; check that music21 and tinysoundfont are installed"
        )
    meta_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(meta_csv, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=["path", "title", "composer", "work", "era", "year", "instrument"])
        wr.writeheader()
        for r in sorted(rows, key=lambda r: r["path"]):
            wr.writerow(r)
    manifest.write_text(json.dumps({"plan": key, "files": len(rows), "seconds": round(total_s, 1)}, indent=1))
    log.info(
        "rendered %d works, %.1f min of audio in %.0f s", len(rows), total_s / 60, time.perf_counter() - t0
    )
    return meta_csv


def _record(
    rows: list[dict[str, Any]], job: Job, p: ComposerPlan, seconds: float, budget: dict, count: dict
) -> None:
    from encoder.render import program_name

    budget[p.folder] -= seconds
    count[p.folder] += 1
    rows.append(
        {
            "path": str(Path(job.out).relative_to(Path(job.out).parents[2])),
            "title": f"{job.title} ({program_name(job.program)})",
            "composer": p.name,
            "work": job.title,
            "era": p.era,
            "year": p.year,
            "instrument": program_name(job.program),
        }
    )


def build_demo(
    *,
    settings: Settings,
    db: Database | None = None,
    build: DemoBuild = DemoBuild(),
    embedder: MomentEmbedder | None = None,
) -> dict[str, Any]:
    """Render (once) and ingest the demo library. Returns a summary (files, minutes, ingest report)."""
    # Here, not at the top: the render workers import this module and need neither.
    from cadenza.db import open_database
    from encoder.embed import resolve_embedder
    from retrieval.ingest import ingest, reindex

    t0 = time.perf_counter()
    demo_dir = settings.paths.demo
    meta_csv = build_audio(demo_dir=demo_dir, build=build)
    t_render = time.perf_counter() - t0
    spec = None
    if embedder is None:
        embedder, spec = resolve_embedder(settings.checkpoint)
    own = db is None
    lib = open_database(settings) if db is None else db
    try:
        report = ingest(
            db=lib, paths=[demo_dir / "audio"], embedder=embedder, spec=spec, metadata_file=meta_csv,
            workers=build.workers, progress=build.progress,
        )  # fmt: skip
        # A library built by an earlier checkpoint is unchanged audio with stale embeddings
        # (search only compares segments of the current model): re-embed those tracks.
        stale = reindex(db=lib, embedder=embedder, spec=spec, workers=build.workers, progress=build.progress)
    finally:
        if own:
            lib.close()
    manifest = json.loads((demo_dir / "manifest.json").read_text())
    return {
        "demo_dir": str(demo_dir),
        "files": manifest.get("files"),
        "audio_minutes": round(float(manifest.get("seconds", 0)) / 60, 1),
        "render_seconds": round(t_render, 1),
        "ingest": report.to_json(),
        "reindexed": len(stale.replaced),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "model_version": embedder.model_version,
    }
