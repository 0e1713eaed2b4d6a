"""What ``cadenza ingest --ray`` reports besides the pool's figures: where the time went, per stage, per
actor, and when (retrieval/ray_ingest.py fills it from the pipeline's rows)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from retrieval.ingest_report import IngestReport


@dataclass
class StageTimes:
    """Where the time went, from the pipeline's own rows (seconds, summed over tracks)."""

    #: stage -> wall seconds inside the step functions.
    stage_s: dict[str, float] = field(default_factory=dict)
    #: "stage:pid" -> (tracks, wall seconds): the per-worker / per-actor split.
    worker: dict[str, list[float]] = field(default_factory=dict)
    #: When things happened, in seconds since the run began (wall clock, so stamps taken in Ray's worker
    #: processes line up with the driver's): event -> seconds. "first_*" / "last_*" keep the earliest /
    #: latest stamp of their kind; "actor_<n>_*" are the embedding actors' start-up steps, in the order
    #: they were first seen.
    timeline: dict[str, float] = field(default_factory=dict)
    t0_wall: float = field(default_factory=time.time)
    #: embedding actor pid -> [its process's CPU seconds when ready (Ray worker start, imports, model
    #: load, warm-up), its latest CPU reading, CPU seconds of its tracks' analysis stages].
    actor_cpu: dict[int, list[float]] = field(default_factory=dict)

    def add(self, stage: str, pid: int, seconds: float) -> None:
        self.stage_s[stage] = self.stage_s.get(stage, 0.0) + seconds
        cell = self.worker.setdefault(f"{stage}:{pid}", [0, 0.0])
        cell[0] += 1
        cell[1] += seconds

    def mark(self, event: str, at: float | None = None) -> None:
        """Stamp ``event`` (``at``: a ``time.time()`` taken elsewhere, default now)."""
        self.timeline[event] = (time.time() if at is None else at) - self.t0_wall

    def first_last(self, kind: str, at: float) -> None:
        """Keep the earliest and the latest ``at`` of a kind of event (first_<kind>, last_<kind>)."""
        t = at - self.t0_wall
        self.timeline[f"first_{kind}"] = min(t, self.timeline.get(f"first_{kind}", t))
        self.timeline[f"last_{kind}"] = max(t, self.timeline.get(f"last_{kind}", t))

    def actor_started(self, pid: int, stamps: dict[str, float]) -> None:
        """An embedding actor's start-up stamps (process up, torch imported, model loaded, warm), once per actor."""
        n = len({k.split("_")[1] for k in self.timeline if k.startswith("actor_")})
        if pid in self.actor_cpu:  # seen before
            return
        for step, at in stamps.items():
            self.timeline[f"actor_{n + 1}_{step}"] = at - self.t0_wall

    def add_actor_cpu(self, pid: int, *, ready_cpu: float, cpu_now: float, stages_cpu: float) -> None:
        cell = self.actor_cpu.setdefault(pid, [ready_cpu, 0.0, 0.0])
        cell[1] = max(cell[1], cpu_now)
        cell[2] += stages_cpu

    def to_json(self) -> dict[str, Any]:
        return {
            "timeline": {k: round(v, 2) for k, v in sorted(self.timeline.items(), key=lambda kv: kv[1])},
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_s.items()},
            "workers": {
                k: {"tracks": int(n), "seconds": round(s, 3)} for k, (n, s) in sorted(self.worker.items())
            },
            # Where an actor's CPU went: start-up, the analysis stages, and the rest (Ray Data's
            # per-block work, moving rows, pickling, tag reading, Ray's threads in the process).
            "actor_cpu": {
                str(pid): {
                    "startup_cpu_s": round(ready, 2),
                    "after_startup_cpu_s": round(now - ready, 2),
                    "in_stages_cpu_s": round(stages, 2),
                    "outside_stages_cpu_s": round(now - ready - stages, 2),
                }
                for pid, (ready, now, stages) in sorted(self.actor_cpu.items())
            },
        }


@dataclass
class RayIngestReport(IngestReport):
    """An :class:`IngestReport` plus the pipeline's time split."""

    times: StageTimes = field(default_factory=StageTimes)
    ray_start_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "ray": {"start_seconds": round(self.ray_start_seconds, 2), **self.times.to_json()},
        }
