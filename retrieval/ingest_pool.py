"""Ingestion's lanes: the pure per-file map (retrieval/ingest_steps.py) over a process pool.

This process is one lane (it already holds the embedder and torch) and ``workers - 1`` spawned
processes are the others; only this process writes. Each lane runs torch and BLAS on one thread.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from functools import partial
from pathlib import Path
from typing import Any

from cadenza.procs import die_with_parent
from encoder.embed import EmbedderSpec
from encoder.protocols import MomentEmbedder
from retrieval.analysis import warm_up
from retrieval.ingest_steps import (
    FileResult,
    keep_freed_memory,
    lane_memory,
    largest_first,
    one_blas_thread,
    process_file,
    single_threaded,
)

_WORKER: dict[str, Any] = {}  # per worker *process* (set by the pool initializer), never in the parent


def _fast_exit() -> None:
    """A worker's last atexit hook: leave without tearing down torch/numba (≈ 1–2 s per process)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _init_worker(spec: EmbedderSpec, parent_pid: int | None = None) -> None:
    # First: a worker must not outlive `cadenza ingest` (a kill -9 of it left one blocked on its
    # result pipe forever, holding its memory).
    die_with_parent(parent_pid)
    import torch  # here, as below: importing this module (planning an ingest) does not cost torch

    # One thread per process: N processes × N threads on N cores only adds switching.
    torch.set_num_threads(1)
    _WORKER["limits"] = one_blas_thread()
    keep_freed_memory()
    _WORKER["embedder"] = spec.build()
    warm_up()
    # Registered last, so it runs first at exit: the pool has collected every result by then.
    atexit.register(_fast_exit)


def _work(path: Path, digest: str, use_denoise: bool, read_metadata: bool) -> FileResult:
    return process_file(
        path=path,
        digest=digest,
        embedder=_WORKER["embedder"],
        use_denoise=use_denoise,
        read_metadata=read_metadata,
    )


def map_files(
    jobs: Sequence[tuple[Path, str]],
    *,
    spec: EmbedderSpec,
    embedder: MomentEmbedder | None,
    workers: int,
    use_denoise: bool,
    read_metadata: bool,
) -> Iterator[FileResult]:
    """Run :func:`process_file` over ``jobs`` on ``workers`` lanes; yields results as they finish.

    ``workers <= 1``: in this process, in order. Otherwise this process is one lane (it already
    holds the embedder and torch) and ``workers - 1`` spawned processes are the others: each
    process costs ~3 CPU-s to start (torch, librosa, numba caches), so on 2 cores one helper
    process beats two. The helper takes the largest files first, this process the smallest,
    so it comes back often to hand results to the writer.
    """
    if not jobs:
        return
    # This process is a lane too, for the run only: it may go on serving (`cadenza demo`).
    with lane_memory():
        emb = embedder if embedder is not None else spec.build()
        here = partial(process_file, embedder=emb, use_denoise=use_denoise, read_metadata=read_metadata)
        if workers <= 1 or len(jobs) <= 1:
            warm_up()
            for path, digest in jobs:
                yield here(path=path, digest=digest)
            return
        queue = largest_first(jobs)
        helpers = workers - 1
        ctx = multiprocessing.get_context("spawn")  # the parent holds a DB pool with threads: never fork
        with (
            single_threaded(),
            ProcessPoolExecutor(
                max_workers=helpers, mp_context=ctx, initializer=_init_worker, initargs=(spec, os.getpid())
            ) as ex,
        ):
            pending: set[Future[FileResult]] = set()
            warm = False
            # A few jobs queued per helper so it never waits for this process to finish a file
            # (results are small: embeddings, descriptors, 10-fps chroma), but never more than are
            # left for this process, so two long files still go to two lanes.
            while queue or pending:
                while queue and len(pending) < min(3 * helpers, len(queue)):
                    path, digest = queue.pop(0)
                    pending.add(ex.submit(_work, path, digest, use_denoise, read_metadata))
                if not warm:  # after the first submit: the helpers start while this process warms up
                    warm_up()
                    warm = True
                done, pending = wait(pending, timeout=0, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
                if queue:
                    path, digest = queue.pop()
                    yield here(path=path, digest=digest)
                elif pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        yield fut.result()
