"""The acquisition run: worker threads, yt-dlp, retries, breaker, manifest, validation.

One item goes through::

    manifest says done/rejected? -> skip (never download twice)
    tenacity retry loop (exponential backoff + jitter, Retry-After as a floor):
        site breaker (waits while open; one probe when half-open)
            yt-dlp extract+download into DIR/.work/<id>/, every HTTP request paced
    ffmpeg -> 16 kHz mono MP3 -> full-decode validation -> DIR/<id>.mp3 -> manifest done

yt-dlp's own retries are off (``retries=0``): tenacity is the one place that retries,
and every HTTP request yt-dlp makes goes through :class:`_PacedYoutubeDL.urlopen`, which
waits for the host's pacer and reads Retry-After off refused responses (yt-dlp itself
ignores that header).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import tenacity
import yt_dlp
from yt_dlp.networking.exceptions import HTTPError

from encoder.acquire.faults import PUSHBACK, AttemptNotes, Permanent, Transient, classify, is_site_failure
from encoder.acquire.items import Item
from encoder.acquire.manifest import Manifest
from encoder.acquire.pacing import PacingConfig, SiteGuards, Stopped, parse_retry_after, stoppable_sleep
from encoder.acquire.standardize import BITRATE, SAMPLE_RATE, UnusableMedia, standardize
from encoder.acquire.validate import Bounds, check_file

log = logging.getLogger(__name__)

WORK_DIR = ".work"


@dataclass(frozen=True)
class AcquireConfig:
    """Everything a run needs besides its items. Times in seconds."""

    out: Path
    workers: int = 2
    attempts: int = 5  # per item and run, including the first
    backoff_initial: float = 4.0
    backoff_max: float = 300.0
    backoff_jitter: float = 2.0  # < backoff_initial keeps each wait longer than the last
    socket_timeout: float = 30.0
    bounds: Bounds = field(default_factory=Bounds)
    pacing: PacingConfig = field(default_factory=PacingConfig)
    sample_rate: int = SAMPLE_RATE
    bitrate: str = BITRATE
    max_filesize: int | None = 500 * 1024 * 1024
    proxy: str | None = None
    format: str = "bestaudio/best"


@dataclass
class RunStats:
    """Live counters for the progress bar and the final summary; thread-safe."""

    total: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    rejected: int = 0
    stopped: bool = False
    started: float = field(default_factory=time.monotonic)
    #: (item key, attempt number that failed, seconds slept before the next one)
    backoffs: list[tuple[str, int, float]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, state: str) -> None:
        with self._lock:
            setattr(self, state, getattr(self, state) + 1)

    def rate_per_min(self) -> float:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return 60.0 * self.done / elapsed


class _PacedYoutubeDL(yt_dlp.YoutubeDL):
    """A YoutubeDL whose every HTTP request waits for its host's pacer."""

    def __init__(
        self,
        params: dict[str, Any],
        *,
        guards: SiteGuards,
        sleep: Callable[[float], None],
        notes: AttemptNotes,
    ) -> None:
        super().__init__(params)
        self._guards = guards
        self._sleep = sleep
        self._notes = notes

    def urlopen(self, req):  # type: ignore[no-untyped-def]
        url = req if isinstance(req, str) else getattr(req, "url", None) or req.get_full_url()
        guard = self._guards((urlparse(url).hostname or "?").lower())
        guard.pacer.acquire(self._sleep)
        try:
            response = super().urlopen(req)
        except HTTPError as exc:
            self._notes.status = exc.status
            if exc.status in PUSHBACK:
                retry_after = parse_retry_after(exc.response.get_header("Retry-After"))
                self._notes.retry_after = retry_after
                guard.pacer.push_back(retry_after)
                log.info("%s answered %d (Retry-After %s)", guard.host, exc.status, retry_after)
            raise
        guard.pacer.succeeded()
        return response


def duration_filter(bounds: Bounds, notes: AttemptNotes, *, slack_s: float = 2.0):
    """A yt-dlp ``match_filter``: skip, before downloading, what the site says is out of bounds.

    Sites such as YouTube report ``duration`` up front; a direct file does not (then the
    check after standardizing decides). ``slack_s`` allows for the site rounding.
    """

    def match(info: dict[str, Any], *, incomplete: bool = False) -> str | None:
        duration = info.get("duration")
        if incomplete or not isinstance(duration, int | float):
            return None
        if duration < bounds.min_s - slack_s:
            notes.skipped = f"too short: {duration:.1f} s < {bounds.min_s:g} s (site metadata)"
        elif duration > bounds.max_s + slack_s:
            notes.skipped = f"too long: {duration:.1f} s > {bounds.max_s:g} s (site metadata)"
        return notes.skipped

    return match


class _YdlLogger:
    """yt-dlp's chatter goes to debug; we record failures ourselves."""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    info = debug

    def warning(self, msg: str) -> None:
        log.debug("yt-dlp warning: %s", msg)

    def error(self, msg: str) -> None:
        log.debug("yt-dlp error: %s", msg)


class Acquirer:
    """Runs items through download -> standardize -> validate with a worker pool."""

    def __init__(self, config: AcquireConfig, *, stop: threading.Event | None = None) -> None:
        self.config = config
        self.out = Path(config.out).resolve()
        self.stop = stop or threading.Event()
        self.sleep = stoppable_sleep(self.stop)
        self.guards = SiteGuards(config.pacing, is_site_failure)
        self.manifest = Manifest.open(self.out)
        self.stats = RunStats()

    # -- one attempt ---------------------------------------------------------------

    def _ydl_params(self, work: Path, notes: AttemptNotes) -> dict[str, Any]:
        cfg = self.config

        def hook(_status: dict[str, Any]) -> None:
            if self.stop.is_set():
                raise Stopped("stopping")

        params: dict[str, Any] = {
            "format": cfg.format,
            "outtmpl": str(work / "source.%(ext)s"),
            "quiet": True,
            "no_warnings": True,
            "noprogress": True,
            "noplaylist": True,
            "retries": 0,
            "fragment_retries": 0,
            "extractor_retries": 0,
            "file_access_retries": 0,
            "socket_timeout": cfg.socket_timeout,
            "continuedl": False,
            "overwrites": True,
            "cachedir": False,
            "logger": _YdlLogger(),
            "progress_hooks": [hook],
            "match_filter": duration_filter(cfg.bounds, notes),
        }
        if cfg.max_filesize:
            params["max_filesize"] = cfg.max_filesize
        if cfg.proxy:
            params["proxy"] = cfg.proxy
        return params

    def _download_once(self, item: Item, work: Path) -> tuple[Path, dict[str, Any]]:
        """One yt-dlp attempt under the site's breaker; the downloaded file and its info."""
        guard = self.guards(item.host)
        notes = AttemptNotes()
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        with guard.attempt(self.sleep):
            try:
                with _PacedYoutubeDL(
                    self._ydl_params(work, notes), guards=self.guards, sleep=self.sleep, notes=notes
                ) as ydl:
                    info = ydl.extract_info(item.target, download=True) or {}
            except Stopped:
                raise
            except Exception as exc:
                if self.stop.is_set():
                    raise Stopped("stopping") from exc
                raise classify(exc, notes) from exc
        files = [p for p in work.iterdir() if p.is_file() and not p.name.endswith((".part", ".ytdl"))]
        if notes.skipped:
            raise Permanent(notes.skipped, rejected=True)
        if not files:
            raise Permanent(
                "not downloaded: yt-dlp produced no file (too large or no audio format)", rejected=True
            )
        if info.get("_type") == "playlist" and info.get("entries"):
            info = next((e for e in info["entries"] if e), info)
        return max(files, key=lambda p: p.stat().st_size), info

    def _record_backoff(self, state: tenacity.RetryCallState) -> None:
        key = state.args[0].key if state.args else "?"
        seconds = state.next_action.sleep if state.next_action else 0.0
        exc = state.outcome.exception() if state.outcome else None
        with self.stats._lock:
            self.stats.backoffs.append((key, state.attempt_number, float(seconds)))
        log.info("retry %s in %.2f s (attempt %d): %s", key, seconds, state.attempt_number, exc)

    def _download(self, item: Item, work: Path, tries: list[int]) -> tuple[Path, dict[str, Any]]:
        """Download with retries; ``tries[0]`` counts the attempts made (also on failure)."""
        cfg = self.config
        backoff = tenacity.wait_exponential_jitter(
            initial=cfg.backoff_initial, max=cfg.backoff_max, jitter=cfg.backoff_jitter
        )

        def wait(state: tenacity.RetryCallState) -> float:
            # Retry-After is a floor for this item; the site's pacer holds the others too.
            exc = state.outcome.exception() if state.outcome else None
            floor = exc.retry_after if isinstance(exc, Transient) and exc.retry_after else 0.0
            return max(backoff(state), min(floor, cfg.pacing.max_retry_after))

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(cfg.attempts),
            wait=wait,
            retry=tenacity.retry_if_exception_type(Transient),
            sleep=self.sleep,
            before_sleep=self._record_backoff,
            reraise=True,
        )

        def once(it: Item) -> tuple[Path, dict[str, Any]]:
            tries[0] += 1
            return self._download_once(it, work)

        return retrying(once, item)

    # -- one item ------------------------------------------------------------------

    def process(self, item: Item) -> str:
        """Take one item to a final state (or leave it pending when stopped)."""
        record = self.manifest.get(item.key)
        if record is not None and record.state == "done" and not (self.out / (record.file or "")).is_file():
            log.warning("%s: %s is gone from %s; fetching it again", item.key, record.file, self.out)
        elif record is not None and record.state in ("done", "rejected"):
            self.stats.add("skipped")
            return "skipped"
        final = self.out / f"{item.file_id}.mp3"
        work = self.out / WORK_DIR / item.file_id
        meta = dict(item.meta)
        tries = [0]
        try:
            # A file left by a run that stopped between writing it and the manifest.
            if final.exists():
                verdict = check_file(final, bounds=self.config.bounds)
                if verdict.ok:
                    return self._finish(
                        item, "done", file=final.name, duration_s=verdict.duration_s, meta=meta
                    )
                final.unlink()
            source, info = self._download(item, work, tries)
            for name in ("title", "artist", "uploader"):
                if info.get(name) and name not in meta:
                    meta[name] = str(info[name])
            if info.get("webpage_url"):
                meta.setdefault("source_url", str(info["webpage_url"]))
            staged = work / "standard.mp3"
            standardize(
                source,
                staged,
                sample_rate=self.config.sample_rate,
                bitrate=self.config.bitrate,
                metadata=meta,
                timeout_s=max(600.0, self.config.bounds.max_s * 2),
            )
            verdict = check_file(staged, bounds=self.config.bounds)
            if not verdict.ok:
                return self._finish(item, "rejected", reason=verdict.reason, meta=meta, attempts=tries[0])
            staged.replace(final)
            return self._finish(
                item,
                "done",
                file=final.name,
                duration_s=round(verdict.duration_s or 0.0, 3),
                meta=meta,
                attempts=tries[0],
            )
        except Stopped:
            return "stopped"  # stays pending; the partial work folder is removed below
        except UnusableMedia as exc:
            return self._finish(item, "rejected", reason=str(exc), meta=meta, attempts=tries[0])
        except Permanent as exc:
            state = "rejected" if exc.rejected else "failed"
            return self._finish(item, state, reason=exc.reason, meta=meta, attempts=tries[0])
        except Transient as exc:
            reason = f"gave up after {tries[0]} attempts: {exc.reason}"
            return self._finish(item, "failed", reason=reason, meta=meta, attempts=tries[0])
        except Exception as exc:  # a bug or a local problem (disk full): record it, keep the pool going
            log.exception("unexpected error on %s", item.key)
            reason = f"error: {type(exc).__name__}: {exc}"
            return self._finish(item, "failed", reason=reason, meta=meta, attempts=tries[0])
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _finish(self, item: Item, state: str, *, attempts: int = 0, **fields: Any) -> str:
        previous = self.manifest.get(item.key)
        total_attempts = (previous.attempts if previous is not None else 0) + attempts
        self.manifest.set(item.key, state, attempts=total_attempts, **fields)
        self.stats.add(state)
        if state == "done":
            log.info("done %s -> %s", item.key, fields.get("file"))
        else:
            log.info("%s %s: %s", state, item.key, fields.get("reason"))
        return state

    # -- the pool ------------------------------------------------------------------

    def breaker_states(self) -> str:
        return " ".join(f"{g.host}:{g.state}" for g in self.guards.all()) or "-"

    def run(self, items: list[Item], *, progress: bool = True) -> RunStats:
        """Process ``items`` with ``workers`` threads. Ctrl-C (KeyboardInterrupt in this
        thread) or :attr:`stop` ends the run cleanly: in-flight items stay ``pending``."""
        from tqdm import tqdm

        shutil.rmtree(self.out / WORK_DIR, ignore_errors=True)  # leftovers of a killed run
        for item in items:
            if self.manifest.get(item.key) is None:
                self.manifest.set(item.key, "pending", meta=dict(item.meta))
        self.stats = RunStats(total=len(items))
        bar = tqdm(total=len(items), desc="acquire", unit="item", disable=not progress)
        pool = cf.ThreadPoolExecutor(max_workers=max(1, self.config.workers), thread_name_prefix="acquire")
        futures = {pool.submit(self.process, item): item for item in items}
        pending = set(futures)
        try:
            while pending:
                finished, pending = cf.wait(pending, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    future.result()
                    bar.update(1)
                s = self.stats
                bar.set_postfix_str(
                    f"done {s.done} failed {s.failed} rejected {s.rejected} skipped {s.skipped} "
                    f"{s.rate_per_min():.1f}/min breaker {self.breaker_states()}",
                    refresh=True,
                )
                if self.stop.is_set():
                    break
        except KeyboardInterrupt:
            log.warning("interrupted: finishing in-flight manifest writes, leaving unfinished items pending")
            self.stop.set()
        finally:
            if self.stop.is_set():
                self.stats.stopped = True
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
            shutil.rmtree(self.out / WORK_DIR, ignore_errors=True)
        return self.stats
