"""Decoding audio files into mono float32 at a fixed rate, safely.

``load_audio`` tries libsndfile (WAV, FLAC, OGG/Vorbis, Opus, MP3) first because it is the
fastest, then PyAV (M4A/AAC and anything FFmpeg knows), then the static ``ffmpeg`` binary
from imageio-ffmpeg under a time limit. Every failure a person can fix becomes one
:class:`~cadenza.errors.InputError` line. ``decode_in_subprocess`` runs the same decode in
a child process with a wall-clock and an address-space limit, for untrusted uploads.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from cadenza.errors import InputError, StorageError

#: Library tracks longer than this are refused (a 4-h file is almost surely a mistake).
DEFAULT_MAX_SECONDS = 4 * 3600.0
AUDIO_EXTENSIONS = frozenset({".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".mp4"})


class _Fallback(Exception):
    """This decoder cannot read the file; try the next one."""


def content_hash(path: Path) -> str:
    """sha256 of the file's bytes, read in 1 MiB chunks (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def resample(*, y: np.ndarray, orig_sr: int, sr: int) -> np.ndarray:
    """``y`` [n] float32 at ``orig_sr`` → [m] float32 at ``sr`` (soxr HQ, else polyphase)."""
    if orig_sr == sr:
        return y.astype(np.float32, copy=False)
    try:
        import soxr

        return np.asarray(soxr.resample(y, orig_sr, sr, quality="HQ"), dtype=np.float32)
    except ImportError:  # pragma: no cover - soxr ships with librosa
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(orig_sr), int(sr))
        return resample_poly(y, sr // g, orig_sr // g).astype(np.float32)


def _too_long(name: str, seconds: float, max_seconds: float) -> InputError:
    return InputError(
        f"{name} is {seconds / 60:.1f} min long; the limit is {max_seconds / 60:.1f} min — trim it first"
    )


def _read_soundfile(
    path: Path, *, offset_s: float, duration_s: float | None, max_seconds: float
) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile: "Format not recognised" and friends
        raise _Fallback(str(exc)) from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise _Fallback("libsndfile reports no frames")
    total_s = info.frames / info.samplerate
    wanted = max(0.0, total_s - offset_s) if duration_s is None else min(duration_s, total_s - offset_s)
    if wanted > max_seconds:
        raise _too_long(path.name, wanted, max_seconds)
    start = int(round(offset_s * info.samplerate))
    frames = -1 if duration_s is None else int(round(duration_s * info.samplerate))
    try:
        data, rate = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except Exception as exc:
        raise _Fallback(str(exc)) from None
    return downmix(data), int(rate)


def downmix(data: np.ndarray) -> np.ndarray:
    """``[n, channels]`` float32 → ``[n]``: the channels' mean, summed column by column.

    ``data.mean(axis=1)`` reduces over the short, strided axis: 60 ms against 5 ms for 106 s
    of 44.1-kHz stereo, which made it a third of the decode on real recordings.
    """
    if data.shape[1] == 1:
        return data[:, 0]
    y = data[:, 0].copy()
    for c in range(1, data.shape[1]):
        y += data[:, c]
    y *= np.float32(1.0 / data.shape[1])
    return y


def _read_pyav(
    path: Path, *, sr: int, offset_s: float, duration_s: float | None, max_seconds: float
) -> tuple[np.ndarray, int]:
    import av

    try:
        container = av.open(str(path))
    except Exception as exc:
        raise _Fallback(str(exc)) from None
    with container:
        if not container.streams.audio:
            raise InputError(f"{path.name} has no audio stream; upload a file that contains sound")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        skip = int(round(offset_s * sr))
        limit = max_seconds if duration_s is None else min(duration_s, max_seconds)
        keep = int(round(limit * sr))
        chunks: list[np.ndarray] = []
        got = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    arr = out.to_ndarray().reshape(-1)
                    if skip:
                        drop = min(skip, arr.size)
                        arr, skip = arr[drop:], skip - drop
                    chunks.append(arr)
                    got += arr.size
                if got > keep:
                    if duration_s is None:
                        raise _too_long(path.name, got / sr, max_seconds)
                    break
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except InputError:
            raise
        except Exception as exc:
            raise _Fallback(str(exc)) from None
    y = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if duration_s is not None:
        y = y[: int(round(duration_s * sr))]
    return y.astype(np.float32, copy=False), sr


def _read_ffmpeg(
    path: Path, *, sr: int, offset_s: float, duration_s: float | None, timeout_s: float, max_seconds: float
) -> tuple[np.ndarray, int]:
    import imageio_ffmpeg

    limit = max_seconds if duration_s is None else min(duration_s, max_seconds)
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error"]
    if offset_s > 0:
        cmd += ["-ss", f"{offset_s:.3f}"]
    # Ask for one sample more than allowed so "too long" is detectable without decoding it all.
    cmd += [
        "-i",
        str(path),
        "-t",
        f"{limit + 1.0 / sr:.4f}",
        "-vn",
        "-ac",
        "1",
        "-ar",
        str(sr),
        "-f",
        "f32le",
        "-",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise InputError(
            f"decoding {path.name} took longer than {timeout_s:.0f} s; try a shorter file"
        ) from None
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        last = msg[-1] if msg else f"exit status {proc.returncode}"
        if "does not contain any stream" in last or "matches no streams" in last:
            raise InputError(f"{path.name} has no audio stream; upload a file that contains sound")
        raise _Fallback(last)
    y = np.frombuffer(proc.stdout[: len(proc.stdout) // 4 * 4], dtype="<f4").astype(np.float32)
    if duration_s is None and y.size > int(round(max_seconds * sr)):
        raise _too_long(path.name, y.size / sr, max_seconds)
    return y, sr


def load_audio(
    *,
    path: Path,
    sr: int = 16_000,
    offset_s: float = 0.0,
    duration_s: float | None = None,
    timeout_s: float = 60.0,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> np.ndarray:
    """Decode ``path`` (or its ``[offset_s, offset_s + duration_s)`` part) → ``[n]`` mono float32 at ``sr``.

    Raises :class:`InputError` for a missing/empty/non-audio file, a file with no audio
    stream, NaN/inf samples, or more than ``max_seconds`` of audio.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file; check the path")
    if path.stat().st_size == 0:
        raise InputError(f"{path.name} is empty (0 bytes); upload the audio file itself")
    if offset_s < 0 or (duration_s is not None and duration_s <= 0):
        raise InputError(
            f"bad time range offset={offset_s} duration={duration_s}; use offset ≥ 0 and duration > 0"
        )
    errors: list[str] = []
    y: np.ndarray | None = None
    rate = sr
    for reader in ("soundfile", "pyav", "ffmpeg"):
        try:
            if reader == "soundfile":
                y, rate = _read_soundfile(
                    path, offset_s=offset_s, duration_s=duration_s, max_seconds=max_seconds
                )
            elif reader == "pyav":
                y, rate = _read_pyav(
                    path, sr=sr, offset_s=offset_s, duration_s=duration_s, max_seconds=max_seconds
                )
            else:
                y, rate = _read_ffmpeg(
                    path,
                    sr=sr,
                    offset_s=offset_s,
                    duration_s=duration_s,
                    timeout_s=timeout_s,
                    max_seconds=max_seconds,
                )
            break
        except _Fallback as exc:
            errors.append(f"{reader}: {exc}")
    if y is None:
        detail = errors[-1] if errors else "unknown format"
        raise InputError(
            f"{path.name} is not an audio file Cadenza can decode ({detail[:120]}); use MP3, WAV, FLAC, OGG or M4A"
        )
    y = resample(y=np.asarray(y, dtype=np.float32), orig_sr=rate, sr=sr)
    return check_audio(y=y, name=path.name, sr=sr, max_seconds=max_seconds)


def check_audio(
    *, y: np.ndarray, name: str, sr: int = 16_000, max_seconds: float = DEFAULT_MAX_SECONDS
) -> np.ndarray:
    """Validate decoded audio ``[n]``: non-empty, finite, not too long. Returns it as float32."""
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    if y.size == 0:
        raise InputError(f"{name} decoded to no audio at all; check that the file plays")
    if not np.all(np.isfinite(y)):
        raise InputError(f"{name} contains invalid samples (NaN or infinity); re-export the file")
    if y.size > int(round(max_seconds * sr)) + 1:
        raise _too_long(name, y.size / sr, max_seconds)
    return y


def _child_limits(memory_bytes: int) -> None:  # the child's first act, before it touches the file
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


#: Exit status of a decode child that could not write its output (disk full): the file was fine.
_EXIT_NO_SPACE = 4

#: What the decode child runs (``python -c``). A module constant so a test can make a child that hangs.
_CHILD_CODE = "from cadenza.audio import _child_main; _child_main()"


def _outer_limit(timeout_s: float) -> float:
    """Wall-clock limit of the whole child: its own limit plus a margin for interpreter start-up, so
    the child's ffmpeg limit usually fires first and reports cleanly (60 s → 70 s, 1 s → 1.5 s)."""
    return timeout_s + min(10.0, 0.5 * timeout_s)


def decode_in_subprocess(
    *,
    path: Path,
    sr: int = 16_000,
    offset_s: float = 0.0,
    duration_s: float | None = None,
    timeout_s: float = 60.0,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    memory_bytes: int = 3 << 30,
    workers: DecodeWorkers | None = None,
) -> np.ndarray:
    """``load_audio`` in a child process limited to ``timeout_s`` and ``memory_bytes`` of address space.

    For untrusted uploads: a hostile or broken file can hang or blow up a decoder, but only
    the child dies. Returns the ``[n]`` float32 array (passed back through a temporary .npy).
    With ``workers`` the child is one started beforehand (:class:`DecodeWorkers`): the same
    one-use process, limits and kill, without the interpreter start-up on the request.
    """
    path = Path(path)
    with _scratch_dir() as tmp:
        out = Path(tmp) / "audio.npy"
        args = [
            str(path),
            str(out),
            str(sr),
            repr(offset_s),
            repr(duration_s),
            repr(timeout_s),
            repr(max_seconds),
            str(int(memory_bytes)),
        ]
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
    import contextlib
    import signal

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
_WORKER_CODE = "from cadenza.audio import _worker_main; _worker_main()"


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
    """Entry point of the decode child: argv = path out sr offset duration timeout max_seconds memory."""
    path, out, sr, offset, duration, timeout, max_seconds, memory = sys.argv[1:9]
    try:
        _child_limits(int(memory))
    except MemoryError:  # the limit is below what this interpreter already uses
        print("MemoryError", file=sys.stderr)
        _exit_now(1)
    try:
        y = load_audio(
            path=Path(path),
            sr=int(sr),
            offset_s=float(offset),
            duration_s=None if duration == "None" else float(duration),
            timeout_s=float(timeout),
            max_seconds=float(max_seconds),
        )
    except InputError as exc:
        print(str(exc), file=sys.stderr)
        _exit_now(3)
    try:
        np.save(out, y)
    except OSError as exc:  # a full disk is the server's problem, not the file's
        print(exc.strerror or str(exc), file=sys.stderr)
        _exit_now(_EXIT_NO_SPACE)
    _exit_now(0)
