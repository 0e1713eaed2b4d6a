"""Decoding untrusted uploads in a child process: a wall-clock limit, an address-space limit, its
own process group killed at the limit, and nothing of the decoder's crash reaching the server.

The child runs :func:`cadenza.audio.load_audio` and hands the samples back through a temporary
``.npy``. :class:`DecodeWorkers` starts such children ahead of the uploads they will serve.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from cadenza.audio import DecodeOptions, load_audio
from cadenza.errors import InputError, StorageError


def _child_limits(memory_bytes: int) -> None:  # the child's first act, before it touches the file
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


#: Exit status of a decode child that could not write its output (disk full): the file was fine.
_EXIT_NO_SPACE = 4

#: What the decode child runs (``python -c``). A module constant so a test can make a child that hangs.
_CHILD_CODE = "from cadenza.decode_sandbox import _child_main; _child_main()"


def _outer_limit(timeout_s: float) -> float:
    """Wall-clock limit of the whole child: its own limit plus a margin for interpreter start-up, so
    the child's ffmpeg limit usually fires first and reports cleanly (60 s → 70 s, 1 s → 1.5 s)."""
    return timeout_s + min(10.0, 0.5 * timeout_s)


def decode_in_subprocess(
    *,
    path: Path,
    options: DecodeOptions = DecodeOptions(),
    memory_bytes: int = 3 << 30,
    workers: DecodeWorkers | None = None,
) -> np.ndarray:
    """``load_audio`` in a child process limited to ``options.timeout_s`` and ``memory_bytes`` of address space.

    For untrusted uploads: a hostile or broken file can hang or blow up a decoder, but only
    the child dies. Returns the ``[n]`` float32 array (passed back through a temporary .npy).
    With ``workers`` the child is one started beforehand (:class:`DecodeWorkers`): the same
    one-use process, limits and kill, without the interpreter start-up on the request.
    """
    path = Path(path)
    timeout_s = options.timeout_s
    with _scratch_dir() as tmp:
        out = Path(tmp) / "audio.npy"
        args = [str(path), str(out), json.dumps(dataclasses.asdict(options)), str(int(memory_bytes))]
        ready = workers.take() if workers is not None else None
        job = (json.dumps(args) + "\n").encode() if ready is not None else None
        with ready or _start_child([_CHILD_CODE, *args], stdin=False) as proc:
            try:
                _, stderr_bytes = proc.communicate(input=job, timeout=_outer_limit(timeout_s))
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise InputError(
                    f"decoding {path.name} took longer than {timeout_s:.0f} s; try a shorter file"
                ) from None
            except BaseException:  # Ctrl-C in the CLI: the child has its own session and would not see it
                _kill_group(proc)
                raise
        stderr = stderr_bytes.decode("utf-8", "replace").strip().splitlines()
        if proc.returncode == 3 and stderr:
            raise InputError(stderr[-1])
        if proc.returncode == _EXIT_NO_SPACE:
            raise StorageError(_no_space(stderr[-1] if stderr else "no space left"))
        if proc.returncode != 0 or not out.exists():
            why = (
                "it needed too much memory"
                if any("MemoryError" in t for t in stderr)
                else "the decoder crashed"
            )
            raise InputError(f"could not decode {path.name} ({why}); try converting it to WAV or MP3")
        return np.load(out)


def _no_space(reason: str) -> str:
    return (
        f"the server has no room to decode the upload ({reason}); try again later "
        "(an operator should check the free space of the temporary folder)"
    )


@contextmanager
def _scratch_dir() -> Iterator[str]:
    """A private temporary folder; a full or unwritable temporary folder is a StorageError (507)."""
    try:
        tmp = tempfile.TemporaryDirectory(prefix="cadenza-decode-")
    except OSError as exc:
        raise StorageError(_no_space(exc.strerror or str(exc))) from None
    with tmp as name:
        yield name


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group (the child and anything it started), then reap the child."""
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _start_child(code_and_args: list[str], *, stdin: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", *code_and_args],
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        # No preexec_fn: Python code between fork and exec can deadlock in a threaded parent
        # (the web server); the child limits itself before it opens the file (_child_main).
        # Its own session: at the limit the whole group dies, ffmpeg grandchild included.
        start_new_session=True,
    )


#: What a pre-started decode child runs: imports done, it waits on stdin for one job (a JSON list
#: of _child_main's arguments), runs it and exits. A closed stdin (the server stopped) ends it.
_WORKER_CODE = "from cadenza.decode_sandbox import _worker_main; _worker_main()"


class DecodeWorkers:
    """Decode children started ahead of the uploads they will serve, each for ONE upload.

    Every protection of :func:`decode_in_subprocess` stays: a fresh process per upload, its
    address-space limit set when the job arrives and before the file is opened, the wall-clock
    limit, its own process group killed at the limit. What moves off the request is the
    interpreter start-up and imports (≈ 0.2 s, seconds on a busy machine); each taken child is
    replaced at once, from a background thread. Thread-safe; :meth:`close` ends the idle ones.
    """

    def __init__(self, size: int) -> None:
        self.size = max(1, int(size))
        self._ready: list[subprocess.Popen[bytes]] = []
        self._starting = 0  # replacements being started by _refill threads
        self._lock = threading.Lock()
        self._closed = False

    def take(self) -> subprocess.Popen[bytes] | None:
        """A started child for one job (None once closed); replacements start in the background."""
        with self._lock:
            if self._closed:
                return None
            for dead in (p for p in self._ready if p.poll() is not None):
                dead.communicate()  # reap it (it should not die idle; a kill from outside might)
            self._ready = [p for p in self._ready if p.returncode is None]
            proc = self._ready.pop(0) if self._ready else None
        if proc is None:  # the first upload, or a burst that took every ready child
            proc = _start_child([_WORKER_CODE], stdin=True)
        # Off the request: starting a child forks this (large) process, ~10 ms measured.
        threading.Thread(target=self._refill, name="cadenza-decode-refill", daemon=True).start()
        return proc

    def _refill(self) -> None:
        """Start children until ``size`` are ready or starting; one started after close() is ended."""
        while True:
            with self._lock:
                if self._closed or len(self._ready) + self._starting >= self.size:
                    return
                self._starting += 1
            child = _start_child([_WORKER_CODE], stdin=True)
            with self._lock:
                self._starting -= 1
                if not self._closed:
                    self._ready.append(child)
                    continue
            _kill_group(child)
            return

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._ready = self._ready, []
        for proc in idle:
            _kill_group(proc)


def _worker_main() -> None:
    """Entry point of a pre-started decode child: import what decoding needs, then wait for one job."""
    # Imported and run once before the job: that is the point of starting early. soxr's first
    # resample sets up its filter (~20-40 ms under load), which an MP3 upload would otherwise pay.
    import soundfile  # noqa: F401
    import soxr

    soxr.resample(np.zeros(441, np.float32), 44_100, 16_000, quality="HQ")
    line = sys.stdin.readline()
    if not line.strip():
        sys.exit(0)  # the server stopped before giving this child a job
    sys.argv[1:] = [str(a) for a in json.loads(line)]
    _child_main()


def _exit_now(code: int) -> None:
    """End the decode child at once: its output is written and closed, and the interpreter's own
    teardown (numpy, cffi, the codecs) took 100-150 ms on a busy machine, which the upload waited for."""
    sys.stderr.flush()
    os._exit(code)


def _child_main() -> None:
    """Entry point of the decode child: argv = path out options(JSON of DecodeOptions) memory."""
    path, out, options, memory = sys.argv[1:5]
    try:
        _child_limits(int(memory))
    except MemoryError:  # the limit is below what this interpreter already uses
        print("MemoryError", file=sys.stderr)
        _exit_now(1)
    try:
        y = load_audio(path=Path(path), options=DecodeOptions(**json.loads(options)))
    except InputError as exc:
        print(str(exc), file=sys.stderr)
        _exit_now(3)
    try:
        np.save(out, y)
    except OSError as exc:  # a full disk is the server's problem, not the file's
        print(exc.strerror or str(exc), file=sys.stderr)
        _exit_now(_EXIT_NO_SPACE)
    _exit_now(0)
