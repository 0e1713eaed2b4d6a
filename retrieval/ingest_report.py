"""What an ingest run reports: outcomes per file, audio seconds, CPU seconds per stage, the progress bar."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from retrieval.ingest_steps import FileResult

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    added: list[int] = field(default_factory=list)
    replaced: list[int] = field(default_factory=list)
    #: Known content whose path (a moved file) or metadata (edited tags, sidecar) changed.
    updated: list[int] = field(default_factory=list)
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    segments: int = 0
    #: Segments whose harmony vector reindex wrote from the stored chroma (libraries from before migration 009).
    harmony_filled: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    #: CPU seconds per analysis stage, summed over the lanes (see ``TrackAnalysis.cpu_s``), and
    #: "write": the writing thread's CPU in :func:`retrieval.ingest_store.store_result`.
    stage_cpu_s: dict[str, float] = field(default_factory=dict)
    #: Per lane (the analysing process id): tracks, audio seconds and analysis CPU seconds stored.
    lanes: dict[int, dict[str, float]] = field(default_factory=dict)
    #: When the run began (``time.perf_counter``), and per stored track (seconds since then, its
    #: audio seconds): a run's steady rate, apart from its start-up and its tail.
    started: float = field(default_factory=time.perf_counter)
    done_at: list[tuple[float, float]] = field(default_factory=list)

    def record(self, res: FileResult, outcome: str, track_id: int | None) -> None:
        """Count one file's outcome from :func:`store_result`."""
        a = res.analysis
        self.count(
            outcome, track_id, path=str(res.path), error=res.error,
            segments=len(a.segments) if a else 0, audio_seconds=a.duration_s if a else 0.0,
            cpu_s=a.cpu_s if a else {}, lane=res.pid,
        )  # fmt: skip

    def add_cpu(self, stage: str, seconds: float) -> None:
        self.stage_cpu_s[stage] = self.stage_cpu_s.get(stage, 0.0) + seconds

    def count(
        self,
        outcome: str,
        track_id: int | None,
        *,
        path: str,
        error: str | None,
        segments: int,
        audio_seconds: float,
        cpu_s: dict[str, float],
        lane: int | None = None,
    ) -> None:
        """Count one outcome from its figures (what a remote writer sends back instead of the analysis)."""
        if outcome == "failed":
            log.warning("skipped %s: %s", path, error)
            self.failed.append((path, error or "no analysis"))
        elif outcome == "unchanged":
            self.unchanged += 1
        else:
            assert track_id is not None
            (self.replaced if outcome == "replaced" else self.added).append(track_id)
            self.done_at.append((time.perf_counter() - self.started, audio_seconds))
            self.segments += segments
            self.audio_seconds += audio_seconds
            for k, v in cpu_s.items():
                self.add_cpu(k, v)
            if lane is not None:
                cell = self.lanes.setdefault(lane, {"tracks": 0, "audio_seconds": 0.0, "cpu_seconds": 0.0})
                cell["tracks"] += 1
                cell["audio_seconds"] += audio_seconds
                cell["cpu_seconds"] += sum(cpu_s.values())

    def rate(self, elapsed: float) -> str:
        """The progress bar's postfix: tracks, tracks/s and realtime factor so far."""
        n = len(self.added) + len(self.replaced)
        return (
            f"{n} tracks, {n / max(elapsed, 1e-9):.2f} tracks/s, "
            f"{self.audio_seconds / max(elapsed, 1e-9):.0f}x realtime"
        )

    @property
    def realtime_factor(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "added": len(self.added),
            "replaced": len(self.replaced),
            "updated": len(self.updated),
            "unchanged": self.unchanged,
            "failed": [{"path": p, "error": e} for p, e in self.failed],
            "segments": self.segments,
            "harmony_filled": self.harmony_filled,
            "audio_seconds": round(self.audio_seconds, 1),
            "wall_seconds": round(self.wall_seconds, 2),
            "realtime_factor": round(self.realtime_factor, 1),
            "stage_cpu_seconds": {k: round(v, 2) for k, v in self.stage_cpu_s.items()},
            "lanes": {str(pid): {k: round(v, 2) for k, v in c.items()} for pid, c in self.lanes.items()},
        }


def progress_bar(total: int, enabled: bool, desc: str):
    return tqdm(total=total, unit="track", desc=desc, disable=not enabled, dynamic_ncols=True)
