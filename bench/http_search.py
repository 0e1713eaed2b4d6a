"""HTTP search latency against running ``cadenza serve`` processes, beside the same search in process.

    python -m bench.http_search --server new=http://127.0.0.1:8000 [--server old=URL ...] \\
        --clip clip.wav --clip clip.mp3 [--home CADENZA_HOME] [--n 15] [--pid new=PID ...]

Posts each clip to ``POST /api/search`` over loopback, round-robin over the servers (and, with
``--home``, ``retrieval.search.search`` in this process on the same library: decode in process,
no sandboxed child), so a busy machine slows every column alike; one client, sequential, after 2
warm-up rounds. Prints p50/p95 per (server, clip) as JSON. With ``--pid NAME=PID`` (the server's
process) it also reports the server's CPU per request, ``cpu_ms`` (user + system of the server
and of the decode children it waited for, over the counted rounds): less sensitive to a busy
machine than wall time. PostgreSQL's own CPU is not in it.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import percentiles

WARMUP = 2


def _http(url: str, clip: Path) -> Callable[[], None]:
    import httpx

    client = httpx.Client(base_url=url, timeout=120)
    data = clip.read_bytes()

    def post() -> None:
        r = client.post("/api/search", files={"file": (clip.name, data, "application/octet-stream")})
        if r.status_code != 200:
            raise RuntimeError(f"{url} {clip.name}: HTTP {r.status_code} {r.text[:200]}")

    return post


def _cpu_s(pid: int) -> float:
    """User + system seconds of ``pid`` and of its children it has waited for."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def _in_process(home: Path) -> tuple[Callable[[Path], None], Callable[[], None]]:
    import torch

    from assistant.app import load_embedder
    from cadenza.audio import load_audio
    from cadenza.db import open_database
    from cadenza.settings import Settings
    from retrieval.search import search
    from retrieval.types import SearchRequest

    torch.set_num_threads(1)  # as the web app runs it
    try:  # ... and its BLAS, on one thread (where this tree's app does that)
        from retrieval.ingest_steps import one_blas_thread

        one_blas_thread()
    except ImportError:
        pass
    settings = Settings.from_env({"CADENZA_HOME": str(home)})
    embedder = load_embedder(settings)
    db = open_database(settings)

    def run(clip: Path) -> None:
        search(db=db, embedder=embedder, request=SearchRequest(audio=load_audio(path=clip)))

    return run, db.close


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", action="append", default=[], help="NAME=URL of a running cadenza serve")
    ap.add_argument("--clip", type=Path, action="append", required=True)
    ap.add_argument("--n", type=int, default=15)
    ap.add_argument("--home", type=Path, default=None, help="CADENZA_HOME of the served library (in process)")
    ap.add_argument(
        "--pid", action="append", default=[], help="NAME=PID of a server's process: its CPU per request"
    )
    args = ap.parse_args()
    pids = {name: int(pid) for name, pid in (spec.split("=", 1) for spec in args.pid)}
    calls: dict[str, Callable[[], None]] = {}
    close = None
    if args.home is not None:
        run, close = _in_process(args.home)
        for clip in args.clip:
            calls[f"in process {clip.suffix}"] = functools.partial(run, clip)
    for spec in args.server:
        name, url = spec.split("=", 1)
        for clip in args.clip:
            calls[f"http {name} {clip.suffix}"] = _http(url, clip)
    times: dict[str, list[float]] = {k: [] for k in calls}
    cpu_ms: dict[str, float] = dict.fromkeys(calls, 0.0)
    for i in range(WARMUP + args.n):
        for name, call in calls.items():
            pid = pids.get(name.split()[1]) if name.startswith("http ") else None
            c0 = _cpu_s(pid) if pid else 0.0
            t0 = time.perf_counter()
            call()
            if i >= WARMUP:
                times[name].append((time.perf_counter() - t0) * 1000)
                if pid:
                    cpu_ms[name] += (_cpu_s(pid) - c0) * 1000
    if close is not None:
        close()
    out: dict[str, Any] = {k: percentiles(v) for k, v in times.items()}
    for name, total in cpu_ms.items():
        if total:
            out[name]["cpu_ms"] = total / args.n
    print(json.dumps(out))


if __name__ == "__main__":
    main()
