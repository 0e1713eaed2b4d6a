"""Ingestion's per-file steps, shared by the in-process pool (retrieval/ingest.py) and Ray (retrieval/ray_ingest.py).

Two pure stages per file, so both paths store the same rows: ``featurize_file`` (decode,
silence check, level, features, tags: CPU only, no model) and ``embed_file`` (the encoder
and the window descriptors). ``process_file`` runs both in one lane.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cadenza.audio import load_audio
from cadenza.errors import CadenzaError, ConfigError
from retrieval.analysis import TrackAnalysis, TrackFeatures, embed_features, featurize_audio
from retrieval.metadata import read_tags

log = logging.getLogger(__name__)

#: A whole file quieter than this (RMS, dBFS) is silence: indexing it only adds moments that match nothing.
SILENT_FILE_DBFS = -60.0


@dataclass(frozen=True)
class EmbedderSpec:
    """How a worker process gets its embedder: a checkpoint folder, or untrained weights (seed)."""

    checkpoint: Path | None = None
    untrained_seed: int | None = None

    def build(self) -> Any:
        from encoder.embed import Embedder

        if self.untrained_seed is not None:
            return Embedder.untrained(seed=self.untrained_seed)
        return Embedder.load(self.checkpoint)


def resolve_embedder(checkpoint: Path | None, *, backend: str = "torch") -> tuple[Any, EmbedderSpec]:
    """The product's embedder: the checkpoint, or — loudly — untrained weights when none is shipped.

    ``backend`` "numpy" for a query-only process (see ``encoder.embed.BACKENDS``); untrained
    weights are always torch (they are drawn by torch's initializers).
    """
    from encoder.embed import Embedder

    try:
        emb = Embedder.load(checkpoint, backend=backend)
        return emb, EmbedderSpec(checkpoint=checkpoint)
    except ConfigError as exc:
        log.warning(
            "NO TRAINED ENCODER (%s). Falling back to UNTRAINED random weights: results will be poor. "
            "Run `cadenza train` and re-run `cadenza reindex`.",
            exc,
        )
        return Embedder.untrained(seed=0), EmbedderSpec(untrained_seed=0)


def spec_for(embedder: Any) -> EmbedderSpec:
    """A spec that rebuilds ``embedder`` in a worker: untrained seed N, else the shipped checkpoint."""
    version = str(embedder.model_version)
    if version.startswith("untrained-seed"):
        return EmbedderSpec(untrained_seed=int(version.removeprefix("untrained-seed")))
    return EmbedderSpec(checkpoint=None)


def one_blas_thread() -> Any:
    """Limit BLAS pools to one thread (numpy's OpenBLAS would start one per core per process).

    Only BLAS: torch's OpenMP pool is set with ``torch.set_num_threads``, and restoring an OpenMP
    limit here would undo the caller's torch setting.

    Returns the threadpoolctl limiter (keep it alive; ``restore_original_limits()`` undoes it), or
    None when threadpoolctl (a dependency of librosa's scikit-learn) is missing.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with librosa
        return None
    return threadpool_limits(limits=1, user_api="blas")


@dataclass
class FeaturedFile:
    """A file after the CPU stage (decode, silence check, level, features, tags): no model yet."""

    path: Path
    content_hash: str
    tags: dict[str, Any] = field(default_factory=dict)
    features: TrackFeatures | None = None
    error: str | None = None
    seconds_decode: float = 0.0
    cpu_decode: float = 0.0


@dataclass
class FileResult:
    path: Path
    content_hash: str
    tags: dict[str, Any] = field(default_factory=dict)
    analysis: TrackAnalysis | None = None
    error: str | None = None
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


def embed_file(featured: FeaturedFile, *, embedder: Any) -> FileResult:
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
    *, path: Path, digest: str, embedder: Any, use_denoise: bool = False, read_metadata: bool = True
) -> FileResult:
    """Decode, level, featurize, embed and describe one file. Errors become ``FileResult.error``."""
    featured = featurize_file(path=path, digest=digest, use_denoise=use_denoise, read_metadata=read_metadata)
    return embed_file(featured, embedder=embedder)
