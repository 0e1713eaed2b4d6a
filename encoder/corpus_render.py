"""Render one music21 work in every planned view and compute each view's acoustic frames.

Runs in a build's worker processes and returns a :class:`WorkResult`; only the parent writes the
corpus file (:mod:`encoder.corpus_file`). The real-recording counterpart is
:func:`encoder.corpus_real.process_track`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cadenza.errors import InputError
from encoder import augment
from encoder.corpus_plan import plan_views, split_of
from encoder.corpus_records import WorkResult, dataset_name
from encoder.features import SAMPLE_RATE, acoustic_features
from encoder.render import program_name, render, stable_hash
from encoder.scores import work_to_midi


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    if y.size >= n:
        return y[:n]
    return np.concatenate([y, np.zeros(n - y.size, dtype=np.float32)])


def process_work(
    *, work, cache_dir: Path, max_seconds: float | None, skip: frozenset[str], fluid: bool = False
) -> WorkResult:
    """Render and featurize the views of ``work`` not in ``skip`` (worker side; never raises)."""
    result = WorkResult(work.work_id, work.composer)
    try:
        split = split_of(work_id=work.work_id, composer=work.composer)
        midi = work_to_midi(work=work, cache_dir=cache_dir)
        specs = plan_views(work_id=work.work_id, composer=work.composer, fluid=fluid)
        clean = render(midi=midi, program=specs[0].program, max_seconds=max_seconds)
        if clean.size < SAMPLE_RATE:
            raise InputError(f"{work.work_id} renders to {clean.size / SAMPLE_RATE:.2f} s; too short")
        result.clean_seconds = clean.size / SAMPLE_RATE
        for spec in specs:
            name = dataset_name(work_id=work.work_id, view_name=spec.name)
            if name in skip:
                continue
            rng = np.random.default_rng(stable_hash(f"aug:{work.work_id}:{spec.name}"))
            time_scale = 1.0 / spec.tempo_scale
            n = int(round(clean.size * time_scale))
            if spec.name == "clean":
                audio = clean
            elif spec.source == "noise":
                audio = augment.add_noise(y=clean, rng=rng)
            elif spec.source == "eq":
                audio = augment.random_eq(y=clean, rng=rng)
            elif spec.source == "mp3":
                audio = augment.mp3_roundtrip(y=clean, rng=rng)
            elif spec.source == "reverb":
                audio = augment.reverb(y=clean, rng=rng)
            else:
                audio = render(
                    midi=midi,
                    program=spec.program,
                    transpose=spec.transpose,
                    tempo_scale=spec.tempo_scale,
                    melody_only=spec.melody_only,
                    max_seconds=n / SAMPLE_RATE + 0.1,
                    soundfont=spec.soundfont,
                )
            audio = _fit_length(audio, n)
            frames = acoustic_features(y=audio, sr=SAMPLE_RATE).astype(np.float16)
            attrs = {
                "work_id": work.work_id,
                "composer": work.composer,
                "split": split,
                "view": spec.view,
                "program": int(spec.program),
                "instrument": program_name(spec.program),
                "transpose": int(spec.transpose),
                "time_scale": float(time_scale),
                "duration_s": float(n / SAMPLE_RATE),
            }
            result.views.append((name, frames, attrs))
    except Exception as exc:  # skip-and-log: one bad score must not stop a long build
        result.error = f"{type(exc).__name__}: {exc}"
    return result
