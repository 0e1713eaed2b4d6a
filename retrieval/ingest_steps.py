"""Ingestion's per-file steps, shared by the in-process pool (retrieval/ingest.py) and Ray (retrieval/ray_ingest.py).

Two pure stages per file, so both paths store the same rows: ``featurize_file`` (decode,
silence check, level, features, tags: CPU only, no model) and ``embed_file`` (the encoder
and the window descriptors). ``process_file`` runs both in one lane.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cadenza.audio import load_audio
from cadenza.errors import CadenzaError
from encoder.protocols import MomentEmbedder
from retrieval.analysis import TrackAnalysis, TrackFeatures, embed_features, featurize_audio
from retrieval.metadata import read_tags

#: A whole file quieter than this (RMS, dBFS) is silence: indexing it only adds moments that match nothing.
SILENT_FILE_DBFS = -60.0
#: glibc malloc in an ingest lane: arrays up to this size come from the heap, not from a fresh mapping each
#: (a 4-min track's audio, STFT and salience are 10-40 MB); glibc's largest allowed value on 64-bit.
LANE_MMAP_THRESHOLD = 32 * 1024 * 1024
#: ... and freed heap memory up to this much stays with the process for the next track instead of going
#: back to the kernel, which zeroes every page again on the next touch.
LANE_TRIM_THRESHOLD = 512 * 1024 * 1024
#: mallopt(3) parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def one_blas_thread() -> Any:
    """Limit BLAS pools to one thread (numpy's OpenBLAS would start one per core per process).

    Only BLAS: torch's OpenMP pool is set with ``torch.set_num_threads``, and restoring an OpenMP
    limit here would undo the caller's torch setting.

    Returns the threadpoolctl limiter (keep it alive; ``restore_original_limits()`` undoes it), or
    None when threadpoolctl (a dependency of librosa's scikit-learn) is missing.
    """
    # scipy ships its own OpenBLAS besides numpy's and loads it on scipy.linalg's first import, which in a
    # lane came after this limit: that second pool ran one thread per core. Loaded here, it is limited too.
    import scipy.linalg  # noqa: F401  (scipy and threadpoolctl come with librosa)

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with librosa
        return None
    return threadpool_limits(limits=1, user_api="blas")


def keep_freed_memory() -> bool:
    """Let this process keep and reuse freed memory across tracks (glibc malloc; elsewhere nothing happens).

    With glibc's defaults each track's large arrays are mapped, page-faulted in (the kernel zeroes every
    page) and unmapped or trimmed again: a third of a lane's CPU was system time. Measured on 24 tracks in
    one process: 200K -> 25K minor page faults, 21.3 -> 16.2 thread CPU-s (system 9.0 -> 4.1 s). The cost
    is resident memory: a lane keeps its largest track's working set (~100-200 MB) between tracks.
    Process-wide and for the process's lifetime, so only lanes (ingest processes, Ray workers) call it.
    Returns whether the settings took.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:  # pragma: no cover - no loadable C library
        mallopt = None
    if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):  # musl / macOS: their own allocators
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, LANE_MMAP_THRESHOLD) == 1
    return mallopt(_M_TRIM_THRESHOLD, LANE_TRIM_THRESHOLD) == 1 and ok


def settle_freed_memory() -> None:
    """After :func:`keep_freed_memory`, in a process that lives on (the pool's driver lane): give the kept memory
    back and keep at most twice the largest heap array from then on, what glibc's own adaptive setting reaches
    (its adaptation stays off once a threshold is set)."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallopt(_M_TRIM_THRESHOLD, 2 * LANE_MMAP_THRESHOLD)
    libc.malloc_trim(0)


@contextmanager
def lane_memory() -> Iterator[None]:
    """:func:`keep_freed_memory` for the block, then :func:`settle_freed_memory`: a process that is a lane
    for one run only and lives on (the pool's driver lane; ``cadenza demo`` goes on serving in it)."""
    kept = keep_freed_memory()
    try:
        yield
    finally:
        if kept:
            settle_freed_memory()


@contextmanager
def single_threaded() -> Iterator[None]:
    """torch and BLAS on one thread in this process for the block, then back to what they were."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    limits = one_blas_thread()
    try:
        yield
    finally:
        if limits is not None:  # first: threadpoolctl's restore also resets OpenMP, torch's pool
            limits.restore_original_limits()
        torch.set_num_threads(before)


def largest_first(jobs: Sequence[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """Jobs by decreasing file size (a proxy for duration): the long ones start early, so the
    lanes (pool processes, Ray actors) finish together instead of one decoding a long file while the others idle."""

    def size(job: tuple[Path, str]) -> int:
        try:
            return job[0].stat().st_size
        except OSError:
            return 0

    return sorted(jobs, key=size, reverse=True)


@dataclass
class FileOutcome:
    """One file after a stage: what it yielded, or ``error`` saying why it yielded nothing."""

    path: Path
    content_hash: str
    tags: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class FeaturedFile(FileOutcome):
    """A file after the CPU stage (decode, silence check, level, features, tags): no model yet."""

    features: TrackFeatures | None = None
    seconds_decode: float = 0.0
    cpu_decode: float = 0.0


@dataclass
class FileResult(FileOutcome):
    """A file after both stages: its analysis, ready to store."""

    analysis: TrackAnalysis | None = None
    #: The process that analysed the file (its lane), for the per-lane split of the report.
    pid: int = field(default_factory=os.getpid)


def featurize_file(
    *, path: Path, digest: str, use_denoise: bool = False, read_metadata: bool = True
) -> FeaturedFile:
    """The CPU stage of one file: decode, level, featurize, read tags. Errors become ``.error``."""
    t0, c0 = time.perf_counter(), time.thread_time()
    try:
        y = load_audio(path=path)
        t1, c1 = time.perf_counter(), time.thread_time()
        if y.size and float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) < 10 ** (SILENT_FILE_DBFS / 20):
            return FeaturedFile(path, digest, error=f"{path.name} is silent; nothing to index")
        features = featurize_audio(y=y, use_denoise=use_denoise)
        tags = read_tags(path) if read_metadata else {}
        return FeaturedFile(
            path, digest, tags=tags, features=features, seconds_decode=t1 - t0, cpu_decode=c1 - c0
        )
    except CadenzaError as exc:
        return FeaturedFile(path, digest, error=str(exc))


def embed_file(featured: FeaturedFile, *, embedder: MomentEmbedder) -> FileResult:
    """The model stage of one file: embed and describe its windows. Errors become ``FileResult.error``."""
    path, digest = featured.path, featured.content_hash
    if featured.error or featured.features is None:
        return FileResult(path, digest, error=featured.error or "no features")
    try:
        analysis = embed_features(features=featured.features, embedder=embedder)
    except CadenzaError as exc:
        return FileResult(path, digest, error=str(exc))
    analysis.seconds_decode = featured.seconds_decode
    analysis.cpu_s["decode"] = featured.cpu_decode
    if not analysis.segments:
        return FileResult(path, digest, error=f"{path.name} is shorter than 5 s of audio; nothing to index")
    return FileResult(path, digest, tags=featured.tags, analysis=analysis)


def process_file(
    *,
    path: Path,
    digest: str,
    embedder: MomentEmbedder,
    use_denoise: bool = False,
    read_metadata: bool = True,
) -> FileResult:
    """Decode, level, featurize, embed and describe one file. Errors become ``FileResult.error``."""
    featured = featurize_file(path=path, digest=digest, use_denoise=use_denoise, read_metadata=read_metadata)
    return embed_file(featured, embedder=embedder)
