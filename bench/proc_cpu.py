"""CPU seconds per process of a benchmark's process tree, sampled while it runs.

``getrusage`` sees this process and the children it has waited for; it misses workers that a
pool or Ray's raylet starts and that die with their parent unwaited, and the embedded
PostgreSQL, which runs detached. :class:`TreeCPU` samples ``psutil`` every ``interval`` seconds:
this process, all its descendants and any extra roots (the postmaster) with their descendants,
keeping each process's last reading, so a process that lived a while is counted with at most
``interval`` of its CPU lost at its end. Readings are grouped by what the process is
(:func:`role`), which answers "where did the CPU go" per actor and per server process.

Each process's largest resident size seen is kept too: on a VM whose host takes back freed memory, a page a
process touches for the first time can cost up to ~60× what a reused one does (bench/ray_ingest_runs.py measures that
price before each run), so the memory a run's processes touch is part of where its CPU went.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


def role(name: str, cmdline: list[str], *, self_pid: int, pid: int) -> str:
    """A process's role: "this process", "postgres", a Ray actor/worker title, "raylet", … or its name."""
    if pid == self_pid:
        return "this process (driver)"
    line = " ".join(cmdline)
    if name.startswith("postgres") or "/postgres " in line or line.startswith("postgres"):
        return "postgres"
    if line.startswith("ray::"):
        # Ray titles its workers "ray::ClassName.method" / "ray::IDLE"; keep the class part.
        return line.split()[0].split(".")[0]
    for known in ("raylet", "gcs_server", "dashboard", "runtime_env", "log_monitor", "monitor.py"):
        if known in line:
            return f"ray {known}"
    if " -m cadenza " in line:
        return "cadenza command (driver)"
    if "multiprocessing" in line and "spawn_main" in line:
        return "pool worker"
    if "resource_tracker" in line:
        return "pool resource tracker"
    return name


@dataclass
class TreeCPU:
    """Sample CPU seconds of this process tree (+ ``extra_roots()``' trees) until :meth:`stop`."""

    extra_roots: Callable[[], Iterable[int]] = lambda: ()
    interval: float = 0.25
    #: pid -> (role, cpu seconds at the first reading, at the last reading, largest RSS bytes seen)
    seen: dict[int, list[Any]] = field(default_factory=dict)
    _first: bool = True
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self) -> None:
        import psutil

        me = os.getpid()
        roots = [me, *self.extra_roots()]
        procs: dict[int, Any] = {}
        for r in roots:
            try:
                root = psutil.Process(r)
                for p in (root, *root.children(recursive=True)):
                    procs[p.pid] = p
            except psutil.Error:
                continue
        for pid, p in procs.items():
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    cpu = t.user + t.system  # not children_*: the children are read themselves
                    rss = p.memory_info().rss
                    if pid not in self.seen:
                        # Running at the start: count from here. Started since: count all of it.
                        base = cpu if self._first else 0.0
                        self.seen[pid] = ["", base, cpu, 0]
                    # The latest role: a Ray worker renames itself once it becomes an actor.
                    self.seen[pid][0] = role(p.name(), p.cmdline(), self_pid=me, pid=pid)
                    self.seen[pid][2] = cpu
                    self.seen[pid][3] = max(self.seen[pid][3], rss)
            except psutil.Error:
                continue

    def start(self) -> TreeCPU:
        self._sample()  # the baseline of every process already running
        self._first = False

        def loop() -> None:
            while not self._stop.wait(self.interval):
                self._sample()

        self._thread = threading.Thread(target=loop, name="tree-cpu", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        """Stop sampling; CPU seconds and the summed largest RSS (MB) by role (with process counts), and totals."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        by: dict[str, dict[str, float]] = {}
        for r, first, last, rss in self.seen.values():
            cell = by.setdefault(r, {"processes": 0, "cpu_seconds": 0.0, "rss": 0})
            cell["processes"] += 1
            cell["cpu_seconds"] += max(0.0, last - first)
            cell["rss"] += rss
        total = sum(c["cpu_seconds"] for c in by.values())
        ordered = dict(sorted(by.items(), key=lambda kv: -kv[1]["cpu_seconds"]))
        return {
            "by_role": {
                k: {"processes": int(v["processes"]), "cpu_seconds": round(v["cpu_seconds"], 2),
                    "peak_rss_mb": round(v["rss"] / 2**20)}
                for k, v in ordered.items()
            },
            "total_cpu_seconds": round(total, 2),
            # Each process's own peak, summed: not the tree's peak at one moment (processes come and go).
            "peak_rss_mb": round(sum(c["rss"] for c in by.values()) / 2**20),
        }  # fmt: skip


def timed(
    fn: Callable[[], Any], *, extra_roots: Callable[[], Iterable[int]] = lambda: ()
) -> tuple[Any, dict[str, Any]]:
    """Run ``fn()`` under a :class:`TreeCPU`; returns (its result, the CPU split with wall seconds)."""
    tree = TreeCPU(extra_roots=extra_roots).start()
    t0 = time.perf_counter()
    try:
        out = fn()
    finally:
        wall = time.perf_counter() - t0
        cpu = tree.stop()
    cpu["wall_seconds"] = round(wall, 2)
    cpu["cores_used"] = round(cpu["total_cpu_seconds"] / max(wall, 1e-9), 2)
    return out, cpu
