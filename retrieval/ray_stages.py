"""What runs inside Ray's workers for ``cadenza ingest --ray`` (retrieval/ray_ingest.py is the driver).

Each stage wraps the pool's own per-file steps (retrieval/ingest_steps.py), so both paths store the
same rows. Rows between stages carry the step's dataclass pickled in one bytes column: frames and
descriptors are ragged and nested, and pickle keeps every float bit. Each row also says which
process ran it and how long it took, which the driver sums into the report's per-stage, per-actor
split.
"""

from __future__ import annotations

import json
import os
import pickle
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from cadenza.errors import ConfigError
from encoder.embed import EmbedderSpec
from retrieval.analysis import warm_up
from retrieval.ingest_steps import FileResult, embed_file, featurize_file, keep_freed_memory, one_blas_thread
from retrieval.ingest_store import store_result

#: The analysis stages (``TrackAnalysis.cpu_s`` keys) that run in featurize, before the model.
FEATURIZE_STAGES = frozenset({"decode", "level", "features", "melody"})


def featurize_row(row: dict[str, Any], use_denoise: bool = False) -> dict[str, Any]:
    """Ray task: one file through the CPU stage."""
    t0 = time.perf_counter()
    keep_freed_memory()  # a task's worker process is reused for the next tasks: as the lanes do
    with blas_limited():
        featured = featurize_file(path=Path(row["path"]), digest=row["digest"], use_denoise=use_denoise)
    return {
        "path": row["path"],
        "payload": pickle.dumps(featured, protocol=pickle.HIGHEST_PROTOCOL),
        "featurize_pid": os.getpid(),
        "featurize_s": time.perf_counter() - t0,
        "featurize_at": time.time(),
    }


@contextmanager
def blas_limited() -> Iterator[None]:
    limits = one_blas_thread()
    try:
        yield
    finally:
        if limits is not None:
            limits.restore_original_limits()


class Embed:
    """Actor: holds one embedder for its lifetime (one model load per actor)."""

    def __init__(self, spec: EmbedderSpec, use_gpu: bool) -> None:
        # Wall-clock stamps of this actor's start-up, for the run's timeline.
        started = {**process_up(), "constructor": time.time()}
        import torch

        started["torch_imported"] = time.time()
        # One thread: on a CPU node the actors and the featurize tasks share the cores.
        torch.set_num_threads(1)
        self._limits = one_blas_thread()
        keep_freed_memory()
        self.embedder = spec.build()
        if use_gpu and torch.cuda.is_available():
            self.embedder.to("cuda")
        started["model_loaded"] = time.time()
        # As the pool's lanes do: imports, FFT plans and the melody matrix once, up front, not
        # charged to (and delaying) the first track of each actor.
        warm_up()
        started["warm"] = time.time()
        self.started = json.dumps(started)
        self.ready_cpu = time.process_time()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        payloads, seconds, stamps = [], [], []
        for blob in batch["payload"]:
            t0 = time.perf_counter()
            res = embed_file(pickle.loads(blob), embedder=self.embedder)
            payloads.append(pickle.dumps(res, protocol=pickle.HIGHEST_PROTOCOL))
            seconds.append(time.perf_counter() - t0)
            stamps.append(time.time())
        n = len(payloads)
        return {
            **batch,
            "payload": object_column(payloads),
            "embed_pid": np.full(n, os.getpid()),
            "embed_s": np.asarray(seconds),
            "embed_at": np.asarray(stamps),
            "embed_started": object_column([self.started] * n),
            # This process's CPU so far (all its threads): the driver splits it per actor.
            "embed_ready_cpu": np.full(n, self.ready_cpu),
            "embed_cpu_now": np.full(n, time.process_time()),
        }


class Write:
    """Actor: one database connection; commits a batch of tracks per transaction."""

    def __init__(
        self, url: str, model_version: str, sidecar: dict[Path, dict[str, Any]], replace: dict[str, list[int]]
    ) -> None:
        import psycopg
        from pgvector.psycopg import register_vector

        self.conn = psycopg.connect(url, autocommit=True)
        register_vector(self.conn)
        self.model_version = model_version
        self.sidecar = sidecar
        self.replace = replace

    def close(self) -> None:
        self.conn.close()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        results: list[FileResult] = [pickle.loads(b) for b in batch["payload"]]
        outcomes: list[tuple[str, int | None]] = []
        with self.conn.transaction():  # each write_track below is a savepoint inside it
            for res in results:
                try:
                    outcomes.append(
                        store_result(
                            self.conn, res, model_version=self.model_version, sidecar=self.sidecar,
                            replace_ids=self.replace.get(str(res.path), []),
                        )
                    )  # fmt: skip
                except ConfigError as exc:  # another model on this node: the driver stops the run
                    res.error = str(exc)
                    outcomes.append(("refused", None))
        n = len(results)
        out = {k: v for k, v in batch.items() if k != "payload"}
        return {
            **out,
            "outcome": object_column([o for o, _ in outcomes]),
            "track_id": np.asarray([-1 if t is None else t for _, t in outcomes], dtype=np.int64),
            "error": object_column([r.error or "" for r in results]),
            "segments": np.asarray([len(r.analysis.segments) if r.analysis else 0 for r in results]),
            "audio_s": np.asarray([r.analysis.duration_s if r.analysis else 0.0 for r in results]),
            "cpu_s": object_column([json.dumps(r.analysis.cpu_s if r.analysis else {}) for r in results]),
            "write_pid": np.full(n, os.getpid()),
            "write_s": np.full(n, (time.perf_counter() - t0) / max(n, 1)),
            "write_at": np.full(n, time.time()),
        }


def process_up() -> dict[str, float]:
    """When this process started (``time.time()``), where psutil is there to say (it is not a dependency)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - installed with the benchmarks
        return {}
    return {"process_up": psutil.Process().create_time()}


def object_column(items: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = list(items)
    return out
