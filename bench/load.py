"""Conversation load on loopback: N concurrent listeners, each uploading a clip and sending two follow-ups.

Each conversation does what the browser does: load the chat page (cookies and the CSRF token),
post the clip (``POST /chat/messages`` as htmx), read the streamed explanation (SSE), then two
follow-ups the same way. All conversations start at once (asyncio + httpx). Measured: errors,
latency of each POST (p50/p95), the explanation streams, and the server's RSS sampled through
the run (idle, per round, peak) — two rounds, so memory growth between them shows.

``python -m bench.load [--conversations 50] [--rounds 2] [--out bench/results]`` starts its own
``cadenza serve`` on a fresh CADENZA_HOME with a small synthetic library (ingested through the
CLI) and writes ``load.json`` / ``load.md``. ``tests/test_load.py`` runs the same load, smaller.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.served import CADENZA, free_port, process_rss, serve_env, serving

FOLLOW_UPS = ("like #1 but not #2", "more like this but a different composer")


async def converse(
    post: Callable[..., Awaitable[Any]],
    read_explanation: Callable[[str], Awaitable[Any]],
    *,
    name: str,
    clip: bytes,
) -> None:
    """The conversation every listener holds: a clip and its explanation, then each follow-up and its own."""
    r = await post({"text": "", "k": "5"}, files={"file": (name, clip, "audio/wav")})
    cid = r.headers.get("hx-push-url", "").rsplit("/", 1)[-1]
    await read_explanation(r.text)
    for text in FOLLOW_UPS:
        r = await post({"text": text, "conversation_id": cid})
        await read_explanation(r.text)


@dataclass
class LoadResult:
    conversations: int
    rounds: int
    post_ms: list[float] = field(default_factory=list)
    stream_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rss_mib: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MiB)
    round_peak_mib: list[float] = field(default_factory=list)
    round_end_mib: list[float] = field(default_factory=list)
    idle_mib: float = float("nan")
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        from bench.report import percentiles

        return {
            "conversations": self.conversations,
            "rounds": self.rounds,
            "requests": len(self.post_ms) + len(self.errors),
            "errors": len(self.errors),
            "first_errors": self.errors[:5],
            "post_latency_ms": percentiles(self.post_ms),
            "explanation_stream_ms": percentiles(self.stream_ms),
            "rss_idle_mib": self.idle_mib,
            "rss_round_peak_mib": self.round_peak_mib,
            "rss_round_end_mib": self.round_end_mib,
            "rss_peak_mib": max((m for _, m in self.rss_mib), default=float("nan")),
            "wall_s": self.wall_s,
        }


def wav_bytes(y: np.ndarray, sr: int = 16_000) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


async def _conversation(client: Any, clip: bytes, name: str, result: LoadResult) -> None:
    import httpx

    async def timed_post(data: dict[str, str], files: dict[str, Any] | None = None) -> httpx.Response:
        t0 = time.perf_counter()
        r = await client.post("/chat/messages", data=data, files=files, headers={"HX-Request": "true"})
        if r.status_code != 200:
            raise RuntimeError(f"POST /chat/messages → {r.status_code}: {r.text[:160]}")
        result.post_ms.append((time.perf_counter() - t0) * 1000)
        return r

    async def read_explanation(partial: str) -> None:
        m = re.search(r'sse-connect="(/c/[^"]+/explain)"', partial)
        if not m:
            raise RuntimeError("the answer has no explanation stream")
        t0 = time.perf_counter()
        last = ""
        async with client.stream("GET", m.group(1)) as s:
            if s.status_code != 200:
                raise RuntimeError(f"explanation stream → {s.status_code}")
            async for line in s.aiter_lines():
                if line.startswith("event:"):
                    last = line[6:].strip()
        if last != "done":
            raise RuntimeError("the explanation stream ended without 'done'")
        result.stream_ms.append((time.perf_counter() - t0) * 1000)

    try:
        page = await client.get("/")
        m = re.search(r'"X-CSRFToken":\s*"([^"]+)"', page.text)
        if page.status_code != 200 or not m:
            raise RuntimeError(f"chat page → {page.status_code}")
        client.headers["X-CSRFToken"] = m.group(1)
        await converse(timed_post, read_explanation, name=name, clip=clip)
    except Exception as exc:  # every failure is a counted error, never a crash of the load
        result.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")


async def _round(base_url: str, clips: Sequence[bytes], n: int, result: LoadResult, timeout_s: float) -> None:
    import httpx

    limits = httpx.Limits(max_connections=4 * n + 10, max_keepalive_connections=4 * n + 10)

    async def one(i: int) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as client:
            await _conversation(client, clips[i % len(clips)], f"clip{i}.wav", result)

    await asyncio.gather(*(one(i) for i in range(n)))


def run_load(
    *, base_url: str, clips: Sequence[bytes], conversations: int, rounds: int = 2,
    rss: Callable[[], float] | None = None, timeout_s: float = 300.0,
) -> LoadResult:  # fmt: skip
    """Run ``rounds`` rounds of ``conversations`` concurrent conversations; ``rss()`` → server MiB."""
    result = LoadResult(conversations=conversations, rounds=rounds)
    stop = threading.Event()
    t_start = time.perf_counter()
    if rss is not None:
        result.idle_mib = rss()

        def sample() -> None:
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    result.rss_mib.append((time.perf_counter() - t_start, rss()))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    try:
        for _ in range(rounds):
            t0 = time.perf_counter() - t_start
            asyncio.run(_round(base_url, clips, conversations, result, timeout_s))
            if rss is not None:
                now = rss()
                window = [m for t, m in result.rss_mib if t >= t0] + [now]
                result.round_peak_mib.append(max(window))
                result.round_end_mib.append(now)
    finally:
        stop.set()
    result.wall_s = time.perf_counter() - t_start
    return result


# --- the stand-alone benchmark ------------------------------------------------------------------------------


def synthetic_library(folder: Path, n_tracks: int = 8, seconds: float = 40.0) -> list[bytes]:
    """Write ``n_tracks`` chord tracks with a metadata sidecar; returns 12-s query clips cut from them."""
    from cadenza.synth_audio import clicks, random_chord_track, write_audio

    composers = [("J. S. Bach", "Baroque"), ("W. A. Mozart", "Classical"), ("J. Brahms", "Romantic"),
                 ("C. Debussy", "Impressionist")]  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    rows, clips = [], []
    for i in range(n_tracks):
        y = random_chord_track(seconds=seconds, seed=500 + i, key=(i * 5) % 12) + 0.3 * clicks(
            bpm=60 + 10 * i, seconds=seconds
        )
        write_audio(folder / f"t{i}.wav", y)
        composer, era = composers[i % len(composers)]
        rows.append({"path": f"t{i}.wav", "title": f"Load study {i}", "composer": composer, "era": era})
        clips.append(wav_bytes(y[16_000 * 5 : 16_000 * 17]))
    (folder / "metadata.json").write_text(json.dumps(rows))
    return clips


def ingest_library(lib: Path, env: dict[str, str]) -> None:
    """Ingest the synthetic library through the CLI, into the ``CADENZA_HOME`` of ``env``."""
    subprocess.run(
        [*CADENZA, "ingest", str(lib), "--metadata", str(lib / "metadata.json"), "--workers", "1", "--json"],
        env=env, check=True, capture_output=True, timeout=600,
    )  # fmt: skip


def benchmark(*, conversations: int, rounds: int, out: Path) -> dict[str, Any]:

    from bench.report import Report, fmt, machine_info, md_table

    with tempfile.TemporaryDirectory(prefix="cadenza-load-") as tmp:
        home = Path(tmp) / "home"
        lib = Path(tmp) / "library"
        clips = synthetic_library(lib)
        # One loopback address plays every listener here: the per-client limit would refuse them.
        env = serve_env(
            home=home, port=free_port(), CADENZA_RATE_LIMIT="0", CADENZA_LLM_BASE_URL="", OPENAI_BASE_URL=""
        )
        ingest_library(lib, env)
        with serving(env, log_path=Path(tmp) / "server.log", start_timeout_s=120, stop_timeout_s=15) as (
            server,
            url,
        ):
            result = run_load(
                base_url=url,
                clips=clips,
                conversations=conversations,
                rounds=rounds,
                rss=process_rss(server.pid),
            )
    data = result.to_json()
    report = Report(name="load", title="Conversation load on loopback", machine=machine_info(), data=data)
    report.notes += [
        f"{conversations} concurrent conversations × {rounds} rounds against `cadenza serve` (no LLM: offline "
        "explanations); each uploads a 12-s WAV clip, reads the streamed explanation, then sends two follow-ups.",
        "Per-client rate limiting is off for this run (CADENZA_RATE_LIMIT=0): every listener shares 127.0.0.1.",
        "Untrained encoder unless a checkpoint is shipped; the machine is shared (see the load average below).",
    ]
    lat, sse = data["post_latency_ms"], data["explanation_stream_ms"]
    report.section(
        "Results",
        md_table(
            ["requests", "errors", "POST p50 ms", "POST p95 ms", "explanation p95 ms", "wall s"],
            [
                [
                    data["requests"],
                    data["errors"],
                    fmt(lat["p50"]),
                    fmt(lat["p95"]),
                    fmt(sse["p95"]),
                    fmt(data["wall_s"]),
                ]
            ],
        ),  # fmt: skip
    )
    report.section(
        "Server memory (RSS, MiB, server process and its decode children)",
        md_table(
            [
                "idle",
                *[f"round {i + 1} peak" for i in range(rounds)],
                *[f"after round {i + 1}" for i in range(rounds)],
            ],
            [
                [
                    fmt(data["rss_idle_mib"]),
                    *map(fmt, data["rss_round_peak_mib"]),
                    *map(fmt, data["rss_round_end_mib"]),
                ]
            ],
        ),  # fmt: skip
    )
    report.write(out)
    return data


def main(argv: Sequence[str] | None = None) -> int:
    from bench.report import RESULTS_DIR

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    data = benchmark(conversations=args.conversations, rounds=args.rounds, out=args.out)
    print(json.dumps({k: v for k, v in data.items() if k != "first_errors"}, indent=1))
    return 0 if data["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
