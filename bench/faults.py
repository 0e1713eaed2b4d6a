"""Conversation load with faults: the database killed and restarted, the model endpoint hanging.

N listeners hold conversations at once against ``cadenza serve`` (loopback; the same conversation as
:mod:`bench.load`: a clip, then two follow-ups, each answer's explanation read from its stream) while

- the embedded PostgreSQL's postmaster is killed with SIGKILL ``--kills`` times, spread over the run,
  and the server brings it back by itself (cadenza/db.py's watchdog; nobody restarts it here);
- the model endpoint (cadenza/fake_llm.py, a real HTTP server) does not answer its first ``--hangs``
  requests at all (each sleeps far past ``CADENZA_LLM_TIMEOUT``), then answers normally.

A listener does what a well-behaved client does with a 503: waits ``Retry-After`` and sends the
same message again. Counted: every status, every 5xx that is not a designed 503/507 (target 0), the
conversations that finished (target all), each outage from the kill to the first 200 of /healthz,
and what was lost: each answer a listener received is looked up in the database afterwards
(target: none missing).

``python -m bench.faults [--conversations 50] [--kills 2] [--hangs 40] [--out bench/results]``
writes ``faults.json`` / ``faults.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.load import converse, ingest_library, synthetic_library
from bench.served import free_port, serve_env, serving

#: A listener gives up on one message after this long (503s included).
MESSAGE_DEADLINE_S = 600.0
#: The longest a listener waits on a Retry-After before sending again.
MAX_RETRY_WAIT_S = 10.0
#: Seconds the model endpoint sleeps on a hung request (the server's LLM timeout is much shorter).
HANG_S = 120.0


@dataclass
class FaultResult:
    conversations: int
    statuses: Counter[int] = field(default_factory=Counter)
    bad_5xx: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    completed: int = 0
    answers: list[int] = field(default_factory=list)  # message ids of every answer received
    post_ms: list[float] = field(default_factory=list)  # per message, retries included
    retries: int = 0
    outages: list[dict[str, float]] = field(default_factory=list)
    streams_with_offline_notice: int = 0
    wall_s: float = 0.0


async def _conversation(client: Any, clip: bytes, name: str, res: FaultResult) -> None:
    async def send(data: dict[str, str], files: dict[str, Any] | None = None) -> Any:
        t0 = time.perf_counter()
        while True:
            try:
                r = await client.post(
                    "/chat/messages", data=data, files=files, headers={"HX-Request": "true"}
                )
            except Exception as exc:  # a dropped connection is retried like a 503, and counted
                res.statuses[0] += 1
                res.errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
                r = None
            if r is not None:
                res.statuses[r.status_code] += 1
                if r.status_code == 200:
                    res.post_ms.append((time.perf_counter() - t0) * 1000)
                    return r
                if r.status_code >= 500 and r.status_code not in (503, 507):
                    res.bad_5xx.append(f"POST /chat/messages → {r.status_code}: {r.text[:160]}")
                if r.status_code not in (503, 507):
                    raise RuntimeError(f"POST /chat/messages → {r.status_code}: {r.text[:160]}")
            if time.perf_counter() - t0 > MESSAGE_DEADLINE_S:
                raise RuntimeError("no answer within the deadline")
            res.retries += 1
            wait = float(r.headers.get("retry-after", 1)) if r is not None else 1.0
            await asyncio.sleep(min(wait, MAX_RETRY_WAIT_S))

    async def read_explanation(partial: str) -> None:
        m = re.search(r'sse-connect="(/c/[^"]+/m/(\d+)/explain)"', partial)
        if not m:
            raise RuntimeError("the answer has no explanation stream")
        res.answers.append(int(m.group(2)))
        t0 = time.perf_counter()
        while True:
            events, body = [], ""
            async with client.stream("GET", m.group(1)) as s:
                res.statuses[s.status_code] += 1
                if s.status_code == 200:
                    async for line in s.aiter_lines():
                        body += line + "\n"
                        if line.startswith("event:"):
                            events.append(line[6:].strip())
            if events and events[-1] == "done":
                res.streams_with_offline_notice += "notice offline" in body
                return
            if s.status_code >= 500 and s.status_code not in (503, 507):
                res.bad_5xx.append(f"GET explain → {s.status_code}")
            if time.perf_counter() - t0 > MESSAGE_DEADLINE_S:
                raise RuntimeError("the explanation stream never finished")
            res.retries += 1
            await asyncio.sleep(min(float(s.headers.get("retry-after", 1)), MAX_RETRY_WAIT_S))

    try:
        while True:  # the page (and its CSRF token), retried through an outage like the rest
            page = await client.get("/")
            res.statuses[page.status_code] += 1
            m = re.search(r'"X-CSRFToken":\s*"([^"]+)"', page.text)
            if page.status_code == 200 and m:
                break
            if page.status_code != 503:
                raise RuntimeError(f"chat page → {page.status_code}")
            await asyncio.sleep(min(float(page.headers.get("retry-after", 1)), MAX_RETRY_WAIT_S))
        client.headers["X-CSRFToken"] = m.group(1)
        await converse(send, read_explanation, name=name, clip=clip)
        res.completed += 1
    except Exception as exc:  # counted, never a crash of the run
        res.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")


async def _all(base_url: str, clips: Sequence[bytes], n: int, res: FaultResult) -> None:
    import httpx

    limits = httpx.Limits(max_connections=4 * n + 10, max_keepalive_connections=4 * n + 10)

    async def one(i: int) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=MESSAGE_DEADLINE_S, limits=limits) as client:
            await _conversation(client, clips[i % len(clips)], f"clip{i}.wav", res)

    await asyncio.gather(*(one(i) for i in range(n)))


def _postmaster(pgdata: Path) -> int | None:
    from cadenza.embedded_pg import postmaster_pid

    return postmaster_pid(pgdata)


def _killer(
    base_url: str, pgdata: Path, at_s: Sequence[float], res: FaultResult, stop: threading.Event
) -> None:
    """Kill the postmaster at each offset (seconds from the start); time each outage to the first 200."""
    import httpx

    t_start = time.perf_counter()
    for at in at_s:
        if stop.wait(max(0.0, at - (time.perf_counter() - t_start))):
            return
        pid = _postmaster(pgdata)
        if pid is None:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        t_kill = time.perf_counter()
        first_503 = None
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                code = httpx.get(base_url + "/healthz", timeout=5).status_code
                if code == 503 and first_503 is None:
                    first_503 = time.perf_counter() - t_kill
                if code == 200 and _postmaster(pgdata) not in (None, pid):
                    break
            time.sleep(0.1)
        res.outages.append(
            {
                "at_s": round(t_kill - t_start, 1),
                "first_503_s": round(first_503, 2) if first_503 is not None else float("nan"),
                "back_s": round(time.perf_counter() - t_kill, 2),
            }
        )


def _missing_answers(home: Path, answers: Sequence[int]) -> tuple[list[int], int]:
    """(answer ids not in the database, user messages left without an answer after them)."""
    from cadenza.db import open_database, scalar
    from cadenza.settings import Settings

    settings = Settings.from_env({"CADENZA_HOME": str(home)})
    db = open_database(settings, migrate=False)
    try:
        with db.connection() as conn:
            have = {
                r[0] for r in conn.execute("SELECT id FROM messages WHERE id = ANY(%s)", (list(answers),))
            }
            orphans = scalar(
                conn,
                "SELECT count(*) FROM messages u WHERE u.role = 'user' AND NOT EXISTS ("
                " SELECT 1 FROM messages a WHERE a.conversation_id = u.conversation_id AND a.role = 'assistant'"
                " AND a.id > u.id)",
            )
    finally:
        db.close()
    return sorted(set(answers) - have), int(orphans)


def _kill_times(kills: int) -> list[float]:
    """Outages early and in the thick of it: the first while uploads decode, the next ones while
    follow-ups and explanations run."""
    return [8.0 + 25.0 * i for i in range(kills)]


def _run_with_faults(
    tmp: Path, llm: Any, *, conversations: int, kills: int, hangs: int, res: FaultResult
) -> tuple[list[Any], int, int, str]:
    """Serve a synthetic library, hold the conversations while the database is killed and the model hangs.

    Fills ``res``; returns (answers missing in the database, unanswered user turns, LLM requests
    that hung, the server's log).
    """
    home, lib = tmp / "home", tmp / "library"
    clips = synthetic_library(lib)
    env = serve_env(
        home=home, port=free_port(), CADENZA_RATE_LIMIT="0", CADENZA_LLM_BASE_URL=llm.base_url,
        CADENZA_LLM_TIMEOUT="4", CADENZA_LLM_MAX_RETRIES="0", CADENZA_DB_RESTART_TRIES="8",
    )  # fmt: skip
    ingest_library(lib, env)
    log_path = tmp / "server.log"
    stop = threading.Event()
    try:
        with serving(env, log_path=log_path, start_timeout_s=180, stop_timeout_s=30) as (_server, url):
            killer = threading.Thread(
                target=_killer, args=(url, home / "pgdata", _kill_times(kills), res, stop), daemon=True
            )
            t0 = time.perf_counter()
            killer.start()
            asyncio.run(_all(url, clips, conversations, res))
            res.wall_s = time.perf_counter() - t0
            killer.join(timeout=120)
            stop.set()
            missing, orphans = _missing_answers(home, res.answers)
            hung = min(len(llm.requests), hangs)
    finally:
        stop.set()
    return missing, orphans, hung, log_path.read_text()


def _write_report(data: dict[str, Any], res: FaultResult, *, kills: int, hangs: int, out: Path) -> None:
    from bench.report import Report, fmt, machine_info, md_table

    conversations = data["conversations"]
    report = Report(name="faults", title="Conversation load with faults", machine=machine_info(), data=data)
    report.notes += [
        f"{conversations} concurrent conversations on loopback against `cadenza serve` (a clip, then two "
        "follow-ups; each explanation read from its stream); a 503 is retried after its Retry-After.",
        f"Faults: the embedded PostgreSQL's postmaster killed with SIGKILL {kills}× (at "
        f"{', '.join(f'{a:.0f}' for a in _kill_times(kills))} s), brought back by the server's "
        f"watchdog; the model endpoint (a real HTTP server) hung on its first {hangs} requests "
        "(CADENZA_LLM_TIMEOUT=4 s, no retries), then answered.",
        "The machine is shared with other work (load average in the machine block and in the JSON).",
    ]
    lat = data["message_latency_ms"]
    headers = [
        "conversations", "completed", "unexpected 5xx", "503s (retried)", "answers lost", "unanswered user turns",
        "message p50 / p95 s", "wall s",
    ]  # fmt: skip
    row = [
        conversations, res.completed, len(res.bad_5xx), res.statuses.get(503, 0), data["answers_missing_in_db"],
        data["user_messages_without_answer"], f"{fmt(lat['p50'] / 1000)} / {fmt(lat['p95'] / 1000)}", fmt(res.wall_s),
    ]  # fmt: skip
    report.section("Results", md_table(headers, [row]))
    report.section(
        "Database outages (SIGKILL of the postmaster → first 200 of /healthz)",
        md_table(
            ["killed at s", "first 503 after s", "back after s"],
            [[o["at_s"], o["first_503_s"], o["back_s"]] for o in res.outages],
        ),
    )
    report.section(
        "Model endpoint",
        md_table(
            ["requests", "hung", "explanations with the offline notice"],
            [[data["llm_requests"], data["llm_requests_hung"], res.streams_with_offline_notice]],
        ),
    )
    report.write(out)


def benchmark(*, conversations: int, kills: int, hangs: int, out: Path) -> dict[str, Any]:
    from bench.report import percentiles
    from cadenza.fake_llm import FakeLLM, Step

    res = FaultResult(conversations=conversations)
    with tempfile.TemporaryDirectory(prefix="cadenza-faults-") as tmp, FakeLLM() as llm:
        llm.script(*[Step.timeout(HANG_S)] * hangs)
        missing, orphans, hung, server_log = _run_with_faults(
            Path(tmp), llm, conversations=conversations, kills=kills, hangs=hangs, res=res
        )
    # What the server itself logged about the database (its watchdog) and any traceback at all.
    db_log = [line.strip() for line in server_log.splitlines() if "embedded PostgreSQL" in line][:20]
    tracebacks = server_log.count("Traceback (most recent call last)")
    data = {
        "conversations": conversations,
        "completed": res.completed,
        "statuses": {str(k): v for k, v in sorted(res.statuses.items())},
        "unexpected_5xx": len(res.bad_5xx),
        "first_unexpected_5xx": res.bad_5xx[:5],
        "errors": len(res.errors),
        "first_errors": res.errors[:5],
        "retries_after_503": res.retries,
        "answers_received": len(res.answers),
        "answers_missing_in_db": len(missing),
        "user_messages_without_answer": orphans,
        "db_kills": len(res.outages),
        "outages": res.outages,
        "server_db_log": db_log,
        "server_tracebacks_logged": tracebacks,
        "llm_requests": len(llm.requests),
        "llm_requests_hung": hung,
        "explanations_with_offline_notice": res.streams_with_offline_notice,
        "message_latency_ms": percentiles(res.post_ms),
        "wall_s": round(res.wall_s, 1),
        "load_average": list(os.getloadavg()),
    }
    _write_report(data, res, kills=kills, hangs=hangs, out=out)
    return data


def main(argv: Sequence[str] | None = None) -> int:
    from bench.report import RESULTS_DIR

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--hangs", type=int, default=40)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    data = benchmark(conversations=args.conversations, kills=args.kills, hangs=args.hangs, out=args.out)
    print(json.dumps({k: v for k, v in data.items() if not k.startswith("first_")}, indent=1))
    ok = (
        data["unexpected_5xx"] == 0
        and data["completed"] == args.conversations
        and not data["answers_missing_in_db"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
