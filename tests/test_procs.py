"""cadenza/procs.py and its users: no process of ours outlives the one that started it.

- ``kill -9`` of ``cadenza ingest`` while ``cadenza serve`` runs on the same embedded PostgreSQL: the
  ingest workers die with it, and stopping the server afterwards still stops PostgreSQL (the killed
  ingest's pid no longer keeps it running from pgserver's handle list).
- ``kill -9`` of one ingest worker: the CLI says so in one line (exit 2), no ``BrokenProcessPool``
  traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from cadenza.embedded_pg import pid_alive, postmaster_pid
from cadenza.synth_audio import random_chord_track, write_audio
from tests.helpers_app import free_port

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only")


def _library(folder: Path, n: int, seconds: float = 30.0) -> Path:
    for i in range(n):
        write_audio(folder / f"t{i}.wav", random_chord_track(seconds=seconds, seed=300 + i, key=i % 12))
    return folder


def _workers(pid: int) -> list[psutil.Process]:
    """The multiprocessing children of ``pid`` (spawned pool workers, resource tracker)."""
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [k for k in kids if "multiprocessing" in " ".join(_cmdline(k))]


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def _wait_for(what: str, check, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(0.1)


def _pool_worker(pid: int, timeout_s: float = 120) -> psutil.Process:
    """Wait until ``cadenza ingest`` (``pid``) has started a pool worker; return it."""
    found: list[psutil.Process] = []

    def started() -> bool:
        found[:] = [w for w in _workers(pid) if "spawn_main" in " ".join(_cmdline(w))]
        return bool(found)

    _wait_for("an ingest worker", started, timeout_s)
    return found[0]


def test_kill_9_of_ingest_leaves_no_process_behind_and_the_last_server_stops_postgres(tmp_path):
    home = tmp_path / "home"
    lib = _library(tmp_path / "lib", n=8)
    env = {k: v for k, v in os.environ.items() if k != "CADENZA_DATABASE_URL"}
    env.update({"CADENZA_HOME": str(home), "CADENZA_RATE_LIMIT": "0"})
    port = free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "cadenza", "-q", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    ingest = None
    try:
        _wait_for("the server", lambda: _healthy(port) or serve.poll() is not None, 180)
        assert serve.poll() is None, serve.stderr.read().decode()[-2000:] if serve.stderr else ""
        pgdata = home / "pgdata"
        postmaster = postmaster_pid(pgdata)
        assert postmaster is not None and pid_alive(postmaster)

        ingest = subprocess.Popen(
            [sys.executable, "-m", "cadenza", "-q", "ingest", str(lib), "--workers", "2"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        worker = _pool_worker(ingest.pid)
        ours = [worker.pid, *(w.pid for w in _workers(ingest.pid))]
        _wait_for("ingest to hold the database", lambda: ingest.pid in _handles(pgdata), 60)
        time.sleep(1.0)  # the worker is importing or embedding: either way it must not survive
        os.kill(ingest.pid, signal.SIGKILL)
        ingest.wait(timeout=30)
        _wait_for("the ingest workers to die with their parent", lambda: not any(map(pid_alive, ours)), 30)

        # The killed ingest's pid is still in pgserver's list; the server's exit must not mind it.
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=120)
        _wait_for("PostgreSQL to stop with the last server", lambda: not pid_alive(postmaster), 60)
        assert not any(map(pid_alive, [serve.pid, ingest.pid, *ours]))
        leftovers = [
            p.pid
            for p in psutil.process_iter()
            if str(home) in " ".join(_cmdline(p)) or str(lib) in " ".join(_cmdline(p))
        ]
        assert leftovers == []
    finally:
        for proc in (ingest, serve):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        pid = postmaster_pid(home / "pgdata")
        if pid is not None and pid_alive(pid):  # never leave a PostgreSQL behind, even on failure
            os.kill(pid, signal.SIGTERM)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _handles(pgdata: Path) -> list[int]:
    try:
        return list(json.loads((pgdata / ".handle_pids.json").read_text()))
    except (OSError, ValueError):
        return []


def test_a_killed_worker_is_a_one_line_error(db, tmp_path, settings):
    lib = _library(tmp_path / "lib", n=6)
    env = {**os.environ, "CADENZA_HOME": str(settings.paths.home), "CADENZA_DATABASE_URL": db.url}
    cli = subprocess.Popen(
        [sys.executable, "-m", "cadenza", "-q", "ingest", str(lib), "--workers", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        worker = _pool_worker(cli.pid)
        worker.kill()
        _, err = cli.communicate(timeout=180)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()
    assert cli.returncode == 2, err[-2000:]
    # The progress bar shares stderr (it is redrawn with \r, one line per redraw here; its rate
    # reads "track/s" or, below one a second, "s/track").
    lines = [line for line in err.strip().splitlines() if line.strip() and not line.startswith("ingest:")]
    assert len(lines) == 1 and "worker process died" in lines[0], err[-2000:]
    assert "Traceback" not in err and "BrokenProcessPool" not in err
