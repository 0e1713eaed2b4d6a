"""The outer wall-clock limit of the decode child: a decoder that hangs is killed at the limit, with
anything it started, and the caller gets one clear InputError (400 through the API) while the server
keeps answering.

The hang is a real child process: ``cadenza.decode_sandbox._CHILD_CODE`` (what the child runs) is replaced by
code that starts a grandchild (as the ffmpeg fallback does) and then never returns.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from assistant.app import load_embedder
from cadenza import audio, decode_sandbox
from cadenza.audio import DecodeOptions
from cadenza.errors import InputError
from cadenza.settings import LimitSettings
from cadenza.synth_audio import SR, write_audio
from tests.helpers_app import running_app, wav_bytes


def _hanging_child(pid_file: Path) -> str:
    """Child code: write "<own pid> <grandchild pid>" to ``pid_file``, then hang forever."""
    return (
        "import os, subprocess, time\n"
        "g = subprocess.Popen(['sleep', '300'])\n"
        f"open({str(pid_file)!r} + '.tmp', 'w').write(f'{{os.getpid()}} {{g.pid}}')\n"
        f"os.replace({str(pid_file)!r} + '.tmp', {str(pid_file)!r})\n"
        "time.sleep(300)\n"
    )


def _hanging_worker(pid_file: Path) -> str:
    """Pre-started child code (the server's): the first job hangs as :func:`_hanging_child`; jobs
    after it (children started while the first one hung) run the real decode."""
    return (
        "import json, os, sys\n"
        "line = sys.stdin.readline()\n"
        f"if os.path.exists({str(pid_file)!r}):\n"
        "    sys.argv[1:] = [str(a) for a in json.loads(line)]\n"
        "    from cadenza.decode_sandbox import _child_main\n"
        "    _child_main()\n"
        "    sys.exit(0)\n" + _hanging_child(pid_file)
    )


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that never comes counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _pids(pid_file: Path, *, wait_s: float = 30.0) -> list[int]:
    deadline = time.monotonic() + wait_s
    while not pid_file.exists():
        assert time.monotonic() < deadline, "the decode child never started"
        time.sleep(0.05)
    return [int(p) for p in pid_file.read_text().split()]


def _assert_gone(pids: list[int]) -> None:
    # SIGKILL is immediate, but the orphaned grandchild is reaped by whoever adopts it: give it a moment.
    deadline = time.monotonic() + 5.0
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if _alive(p)], "a decode process outlived the limit"


def _clip(tmp_path: Path) -> Path:
    t = np.arange(5 * SR) / SR
    return write_audio(tmp_path / "fine.wav", (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))


def test_a_hanging_decoder_is_killed_at_the_limit_with_what_it_started(tmp_path, monkeypatch):
    clip = _clip(tmp_path)
    pid_file = tmp_path / "pids"
    monkeypatch.setattr(decode_sandbox, "_CHILD_CODE", _hanging_child(pid_file))
    with pytest.raises(InputError, match=r"decoding fine\.wav took longer than 1 s; try a shorter file"):
        decode_sandbox.decode_in_subprocess(path=clip, options=DecodeOptions(timeout_s=1.0))
    pids = _pids(pid_file, wait_s=0)
    assert len(pids) == 2
    _assert_gone(pids)
    monkeypatch.undo()
    # The real child decodes the same file within the same limit.
    y = decode_sandbox.decode_in_subprocess(path=clip, options=DecodeOptions(timeout_s=30.0))
    assert y.dtype == np.float32 and y.size == 5 * SR


def test_a_hanging_upload_is_a_400_and_the_server_keeps_answering(
    session_db, settings, tmp_path, monkeypatch
):
    limits = LimitSettings(decode_timeout_s=2.0, requests_per_minute=0)
    app_settings = dataclasses.replace(settings, limits=limits)
    clip = wav_bytes(np.asarray(audio.load_audio(path=_clip(tmp_path))))
    pid_file = tmp_path / "pids"
    with (
        running_app(app_settings, db=session_db, embedder=load_embedder(app_settings)) as url,
        httpx.Client(base_url=url, timeout=60) as c,
    ):
        # The server decodes in children it started beforehand (decode_sandbox.DecodeWorkers).
        monkeypatch.setattr(decode_sandbox, "_WORKER_CODE", _hanging_worker(pid_file))
        answer: dict[str, httpx.Response] = {}

        def upload() -> None:
            answer["r"] = c.post("/api/search", files={"file": ("hang.wav", clip, "audio/wav")})

        t = threading.Thread(target=upload)
        t.start()
        pids = _pids(pid_file)
        # While the decode child hangs, the server answers other requests.
        health = httpx.get(f"{url}/healthz", timeout=20)
        assert health.status_code == 200 and _alive(pids[0]), "healthz was not answered during the hang"
        t.join(timeout=30)
        assert not t.is_alive(), "the hung upload was not answered"
        r = answer["r"]
        assert r.status_code == 400, r.text
        # Named as the listener named it, not as the server's temporary file.
        assert r.json()["error"] == "decoding hang.wav took longer than 2 s; try a shorter file"
        _assert_gone(pids)

        monkeypatch.undo()  # the real decode child again: a file it cannot read is the usual 400
        r = c.post("/api/search", files={"file": ("x.wav", b"not audio at all" * 64, "audio/wav")})
        assert r.status_code == 400 and "not an audio file" in r.json()["error"], r.text
