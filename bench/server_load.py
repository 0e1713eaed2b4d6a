"""Peak memory of a ``cadenza serve`` process under a bounded loopback query load (``bench speed``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import percentiles
from bench.served import free_port, process_rss, serve_env, serving

#: How long the server may take to answer its first request, and each search under load.
START_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 30.0


def _sample_peak(rss: Callable[[], float], stop: threading.Event, peak: list[float]) -> None:
    """Append the RSS in MiB to ``peak`` every 50 ms until ``stop`` is set."""
    import psutil

    while not stop.is_set():
        try:
            peak.append(rss())
        except psutil.Error:
            break
        time.sleep(0.05)


def _post_clips(*, url: str, clips: list[Path], n_requests: int, concurrency: int) -> dict[str, Any]:
    """Send ``n_requests`` clip searches from ``concurrency`` threads; latencies, errors, whether it hung."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(n_requests))
    hung = threading.Event()  # the server stopped answering: end the load, say so

    def worker() -> None:
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            while not hung.is_set():
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                clip = clips[i % len(clips)]
                t0 = time.perf_counter()
                try:
                    r = client.post(
                        url + "/api/search",
                        files={"file": (clip.name, clip.read_bytes(), "audio/wav")},
                        # An empty field: the API at the time read it with form.getall(), which
                        # raised KeyError (500) when the field was absent.
                        data={"exclude_composer": ""},
                    )
                    ok = r.status_code == 200
                    msg = "" if ok else f"{r.status_code}: {r.text[:120]}"
                except httpx.TimeoutException:
                    ok, msg = False, f"no answer within {REQUEST_TIMEOUT_S:.0f} s"
                    hung.set()
                except httpx.HTTPError as exc:
                    ok, msg = False, str(exc)
                with lock:
                    if ok:
                        latencies.append((time.perf_counter() - t0) * 1000)
                    else:
                        errors.append(msg)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall_s = time.perf_counter() - t0
    return {
        "wall_s": wall_s,
        "latency_ms": percentiles(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "answered_ok": len(latencies),
        "requests_per_s": len(latencies) / max(wall_s, 1e-9),
        "server_hung": hung.is_set(),
    }


def server_memory(
    *, home: Path, clips: list[Path], n_requests: int, concurrency: int, checkpoint: Path | None
) -> dict[str, Any]:
    """Start ``cadenza serve`` on a loopback port, send ``n_requests`` clip searches, sample its RSS."""
    settings = {"CADENZA_RATE_LIMIT": "100000", "CADENZA_LLM_BASE_URL": "", "OPENAI_BASE_URL": ""}
    if checkpoint is not None:
        settings["CADENZA_CHECKPOINT"] = str(checkpoint)
    env = serve_env(home=home, port=free_port(), **settings)
    server_log = home.parent / "server.log"
    out: dict[str, Any] = {"requests": n_requests, "concurrency": concurrency}
    with serving(env, log_path=server_log, start_timeout_s=START_TIMEOUT_S, stop_timeout_s=10) as (
        server,
        url,
    ):
        rss = process_rss(server.pid)
        out["rss_idle_mib"] = rss()
        peak = [out["rss_idle_mib"]]
        stop = threading.Event()
        sampler = threading.Thread(target=_sample_peak, args=(rss, stop, peak), daemon=True)
        sampler.start()
        load = _post_clips(url=url, clips=clips, n_requests=n_requests, concurrency=concurrency)
        stop.set()
        sampler.join(timeout=2)
        out["wall_s"] = load.pop("wall_s")
        out["rss_peak_mib"] = max(peak)
        out.update(load)
    if out.get("errors"):
        out["server_log_tail"] = server_log.read_text()[-1500:]
    return out
