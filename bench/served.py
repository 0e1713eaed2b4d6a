"""A ``cadenza serve`` process for the benchmarks that load it over loopback (load, faults, speed).

The server runs as its own process on its own ``CADENZA_HOME`` (never the user's library or a
``CADENZA_DATABASE_URL`` from the environment), its output in a log file the report can quote.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: The ``cadenza`` command, quiet, in this interpreter.
CADENZA = [sys.executable, "-m", "cadenza", "-q"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_env(*, home: Path, port: int, **settings: str) -> dict[str, str]:
    """This process' environment for a server on loopback ``port`` over ``home``, plus ``settings``."""
    env = {
        **os.environ,
        "CADENZA_HOME": str(home),
        "CADENZA_HOST": "127.0.0.1",
        "CADENZA_PORT": str(port),
        **settings,
    }
    env.pop("CADENZA_DATABASE_URL", None)
    return env


def wait_until_healthy(server: subprocess.Popen[Any], *, url: str, log_path: Path, timeout_s: float) -> None:
    """Poll ``/healthz`` until it answers 200; a server that exits or stays silent is an error."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"cadenza serve exited: {log_path.read_text()[-800:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"cadenza serve did not answer within {timeout_s:.0f} s")
        time.sleep(0.5)


def stop_server(server: subprocess.Popen[Any], *, timeout_s: float) -> None:
    """Terminate; a server that does not stop within ``timeout_s`` (a hung one) is killed."""
    server.terminate()
    try:
        server.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=timeout_s)


@contextlib.contextmanager
def serving(
    env: dict[str, str], *, log_path: Path, start_timeout_s: float, stop_timeout_s: float
) -> Iterator[tuple[subprocess.Popen[Any], str]]:
    """``cadenza serve`` with ``env``, logging to ``log_path``; yields (the process, its base URL) once healthy."""
    url = f"http://127.0.0.1:{env['CADENZA_PORT']}"
    with open(log_path, "w") as log_file:
        server = subprocess.Popen([*CADENZA, "serve"], env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            wait_until_healthy(server, url=url, log_path=log_path, timeout_s=start_timeout_s)
            yield server, url
        finally:
            stop_server(server, timeout_s=stop_timeout_s)


def process_rss(pid: int) -> Callable[[], float]:
    """RSS (MiB) of a process and its children (decode children included)."""
    import psutil

    proc = psutil.Process(pid)

    def rss() -> float:
        total = 0
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total / 2**20

    return rss
