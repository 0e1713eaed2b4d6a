"""The evaluation library: held-out works of the music21 corpus, re-rendered to audio.

The training corpus stores features only, so the benchmarks render the audio again with
:mod:`encoder.render`, using exactly the corpus' split rule (:func:`encoder.corpus_plan.split_of`:
``test`` = held-out works of training composers, ``heldout`` = composers never trained on)
and each work's primary program (:func:`encoder.corpus_plan.plan_views`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
#: Era of each music21 corpus folder (the folders are the "composers").
COMPOSER_ERA: dict[str, str] = {
    "bach": "Baroque",
    "beethoven": "Classical",
    "haydn": "Classical",
    "mozart": "Classical",
    "josquin": "Renaissance",
    "palestrina": "Renaissance",
    "monteverdi": "Renaissance",
    "trecento": "Medieval",
    "schumann_clara": "Romantic",
    "schumann_robert": "Romantic",
    "essenFolksong": "Folk",
    "oneills1850": "Folk",
    "ryansMammoth": "Folk",
}


@dataclass(frozen=True)
class EvalWork:
    work_id: str
    composer: str
    era: str
    split: str  # 'test' | 'heldout'
    primary: int  # GM program of the library render
    other: int  # another program for the cross-instrument queries
    work: Any  # encoder.scores.Work


def corpus_heldout_ids(corpus: Path | None, splits: tuple[str, ...] = ("test", "heldout")) -> set[str]:
    """Work ids of the rendered corpus' held-out splits; empty when there is no readable corpus."""
    if corpus is None or not Path(corpus).is_file():
        return set()
    from cadenza.errors import ConfigError
    from encoder.data import Corpus

    try:
        with Corpus(Path(corpus)) as c:
            return {w.work_id for w in c.works if w.split in splits}
    except (ConfigError, OSError) as exc:
        log.warning("cannot read the corpus %s (%s); choosing works by the split rule alone", corpus, exc)
        return set()


def select_works(
    *,
    per_composer: int,
    seed: int = 0,
    splits: tuple[str, ...] = ("test", "heldout"),
    prefer: set[str] | frozenset[str] = frozenset(),
) -> list[EvalWork]:
    """Up to ``per_composer`` works of each composer from the held-out splits (random, seeded).

    Works in ``prefer`` (the rendered corpus' own test/heldout works) are taken first; the rest
    are other works the split rule also keeps out of training (the corpus caps hours per
    composer, so it holds only some of them).
    """
    from encoder.corpus_plan import DEFAULT_COMPOSERS, plan_views, split_of
    from encoder.scores import list_works

    rng = np.random.default_rng(seed)
    by_comp: dict[str, list] = {}
    for w in list_works(composers=DEFAULT_COMPOSERS):
        s = split_of(work_id=w.work_id, composer=w.composer)
        if s in splits:
            by_comp.setdefault(w.composer, []).append((w, s))
    out: list[EvalWork] = []
    for comp in sorted(by_comp):
        items = by_comp[comp]
        order = rng.permutation(len(items)).tolist()
        order = [i for i in order if items[i][0].work_id in prefer] + [
            i for i in order if items[i][0].work_id not in prefer
        ]
        pick = order[:per_composer]
        for i in sorted(pick):
            w, s = items[i]
            views = plan_views(work_id=w.work_id, composer=w.composer)
            primary = views[0].program
            others = [v.program for v in views if v.view == "instrument"]
            out.append(
                EvalWork(
                    work_id=w.work_id,
                    composer=w.composer,
                    era=COMPOSER_ERA.get(w.composer, "Unknown"),
                    split=s,
                    primary=primary,
                    other=others[0] if others else (0 if primary != 0 else 48),
                    work=w,
                )
            )
    return out


class Renderer:
    """Renders variants of evaluation works, caching MIDI on disk and audio in memory."""

    def __init__(self, *, midi_cache: Path, max_seconds: float):
        self.midi_cache = Path(midi_cache)
        self.max_seconds = max_seconds
        self._midi: dict[str, object] = {}
        self._audio: dict[tuple, np.ndarray] = {}

    def midi(self, ew: EvalWork):
        from encoder.scores import work_to_midi

        if ew.work_id not in self._midi:
            self._midi[ew.work_id] = work_to_midi(work=ew.work, cache_dir=self.midi_cache)
        return self._midi[ew.work_id]

    def audio(
        self,
        ew: EvalWork,
        *,
        program: int | None = None,
        transpose: int = 0,
        tempo_scale: float = 1.0,
        melody_only: bool = False,
        keep: bool = True,
    ) -> np.ndarray:
        """Mono 16 kHz float32 of the first ``max_seconds`` (of the clean timeline) of a variant."""
        from encoder.render import render

        prog = ew.primary if program is None else program
        key = (ew.work_id, prog, transpose, tempo_scale, melody_only)
        if key in self._audio:
            return self._audio[key]
        y = render(
            midi=self.midi(ew),
            program=prog,
            transpose=transpose,
            tempo_scale=tempo_scale,
            melody_only=melody_only,
            max_seconds=self.max_seconds / tempo_scale,
        )
        if keep:
            self._audio[key] = y
        return y


def render_library(
    works: list[EvalWork], *, renderer: Renderer, out_dir: Path | None = None
) -> tuple[list[EvalWork], dict[str, np.ndarray], Path | None]:
    """Clean renders of ``works`` (works that fail to render are dropped, and logged).

    With ``out_dir``, also writes one WAV per work plus ``metadata.json`` (the ingest sidecar:
    title, composer, work, era). Returns (kept works, {work_id: audio}, sidecar path).
    """
    import soundfile as sf

    from encoder.render import RenderError, safe_name

    kept, audio = [], {}
    sidecar: dict[str, dict[str, str]] = {}
    for ew in tqdm(works, desc="render library", unit="work", leave=False):
        try:
            y = renderer.audio(ew)
        except RenderError as exc:
            log.warning("skipping %s: %s", ew.work_id, exc)
            continue
        if y.size < 12 * SAMPLE_RATE:  # shorter than a segment plus a query: useless here
            log.info("skipping %s: only %.1f s", ew.work_id, y.size / SAMPLE_RATE)
            continue
        kept.append(ew)
        audio[ew.work_id] = y
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            name = f"{safe_name(ew.work_id)}.wav"
            sf.write(str(out_dir / name), y, SAMPLE_RATE, subtype="PCM_16")
            sidecar[name] = {"title": ew.work_id, "composer": ew.composer, "work": ew.work_id, "era": ew.era}
    side_path = None
    if out_dir is not None:
        side_path = out_dir / "metadata.json"
        side_path.write_text(json.dumps(sidecar, indent=1))
    return kept, audio, side_path
