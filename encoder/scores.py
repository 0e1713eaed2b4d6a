"""Scores from the music21 corpus → MIDI (:class:`pretty_midi.PrettyMIDI`); :mod:`encoder.render` plays them.

* :func:`list_works` walks the corpus shipped in the ``music21`` wheel. The composer is the
  corpus folder name (85 % of entries carry no composer metadata); Roman-numeral analyses
  (``.rntxt``) are skipped and a work present in two formats (``x.mxl`` and ``x.krn``) is
  listed once.
* :func:`work_to_midi` parses a score and converts it to a :class:`pretty_midi.PrettyMIDI`,
  caching the ``.mid`` on disk because music21 → MIDI takes ~11 s for a quartet movement.
  A book of tunes becomes its first tunes played one after another; an ``Opus`` whose
  "tunes" share a title (Josquin: one per voice) is merged into one score.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from encoder.render import RenderError, safe_name

log = logging.getLogger(__name__)

#: Formats music21 parses well, best first (used to de-duplicate a work stored twice).
_FORMAT_PREFERENCE = (".mxl", ".musicxml", ".xml", ".krn", ".abc")
#: At most this many tunes of a tune book become one "work".
MAX_TUNES_PER_BOOK = 40
#: ... or this many seconds of them.
MAX_BOOK_SECONDS = 600.0


@dataclass(frozen=True)
class Work:
    work_id: str  # corpus-relative path without extension, e.g. "bach/bwv66.6"
    composer: str  # corpus folder name, e.g. "bach", "ryansMammoth"
    title: str
    path: Path


def _corpus_root() -> Path:
    import music21

    return Path(music21.corpus.__file__).parent


def _title(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts[1:])
    return " / ".join(parts) if parts else rel.stem


def list_works(*, composers: Sequence[str] | None = None, max_per_composer: int | None = None) -> list[Work]:
    """Works of the music21 core corpus, deterministic order (composer, then path).

    ``composers`` are corpus folder names (``bach``, ``palestrina``, ``ryansMammoth`` …);
    ``max_per_composer`` keeps the first N of each in that order.
    """
    import music21

    root = _corpus_root()
    wanted = set(composers) if composers is not None else None
    best: dict[tuple[str, str], Path] = {}
    for raw in music21.corpus.corpora.CoreCorpus().getPaths():
        path = Path(str(raw))
        suffix = path.suffix.lower()
        if suffix not in _FORMAT_PREFERENCE:
            continue  # .rntxt analyses and anything exotic
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        if len(rel.parts) < 2:
            continue
        composer = rel.parts[0]
        if wanted is not None and composer not in wanted:
            continue
        key = (str(rel.parent), rel.stem)
        old = best.get(key)
        if old is None or _FORMAT_PREFERENCE.index(suffix) < _FORMAT_PREFERENCE.index(old.suffix.lower()):
            best[key] = path
    works = []
    for path in best.values():
        rel = path.relative_to(root)
        works.append(Work(str(rel.with_suffix("")), rel.parts[0], _title(rel), path))
    works.sort(key=lambda w: (w.composer, w.work_id))
    if max_per_composer is not None:
        kept: list[Work] = []
        count: dict[str, int] = {}
        for w in works:
            if count.get(w.composer, 0) < max_per_composer:
                kept.append(w)
                count[w.composer] = count.get(w.composer, 0) + 1
        works = kept
    return works


def _set_max_tick() -> None:
    import pretty_midi

    # music21 writes 10,080 ticks per quarter; pretty_midi's default guard rejects long works.
    pretty_midi.pretty_midi.MAX_TICK = 1e9


def _stream_to_pretty(stream) -> pretty_midi.PrettyMIDI:  # type: ignore[name-defined]  # noqa: F821
    import pretty_midi
    from music21.midi import translate

    mf = translate.streamToMidiFile(stream)
    return pretty_midi.PrettyMIDI(io.BytesIO(mf.writestr()))


def _concatenate(pms: list, gap: float = 1.0):
    """Tunes of a book one after another: part i of every tune goes to instrument i."""
    import pretty_midi

    out = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    instruments: list = []
    offset = 0.0
    for pm in pms:
        end = pm.get_end_time()
        for i, inst in enumerate(x for x in pm.instruments if not x.is_drum):
            while len(instruments) <= i:
                instruments.append(pretty_midi.Instrument(program=0))
            for n in inst.notes:
                instruments[i].notes.append(
                    pretty_midi.Note(
                        velocity=n.velocity, pitch=n.pitch, start=n.start + offset, end=n.end + offset
                    )
                )
        offset += end + gap
    out.instruments = instruments
    return out


def _abc_tunes(text: str) -> list[str]:
    """Split an ABC file at its ``X:`` lines; the text before the first one is shared header."""
    chunks = re.split(r"(?m)^(?=X:)", text)
    header, tunes = (chunks[0], chunks[1:]) if chunks and not chunks[0].startswith("X:") else ("", chunks)
    return [header + t for t in tunes]


def _convert(work: Work):
    import music21

    if work.path.suffix.lower() == ".abc":
        tunes = _abc_tunes(work.path.read_text(encoding="utf-8", errors="replace"))
        if len(tunes) > 1:
            titles = {m.group(1).strip() for t in tunes if (m := re.search(r"(?m)^T:(.*)$", t))}
            if len(titles) > 1:
                return _tune_book(work, tunes)
    parsed = music21.converter.parse(str(work.path))
    if isinstance(parsed, music21.stream.Opus):
        # Josquin's files hold one "tune" per voice of the same piece: play them together.
        parsed = parsed.mergeScores()
    try:
        return _stream_to_pretty(parsed)
    except Exception as exc:
        if "repeat" not in str(exc).lower():
            raise
        # Badly formed repeats (two Haydn movements): play the score once, straight through.
        log.info("%s: %s; rendering without repeats", work.work_id, exc)
        return _stream_to_pretty(_without_repeats(parsed))


def _without_repeats(score):
    import music21

    marks = list(
        score.recurse().getElementsByClass((music21.repeat.RepeatMark, music21.repeat.RepeatExpression))
    )
    for mark in marks:
        for site in list(mark.sites.get()):
            if site is not None and mark in site:
                site.remove(mark)
    for measure in score.recurse().getElementsByClass(music21.stream.Measure):
        for side in ("leftBarline", "rightBarline"):
            if isinstance(getattr(measure, side), music21.bar.Repeat):
                setattr(measure, side, music21.bar.Barline("regular"))
    return score


def _tune_book(work: Work, tunes: list[str]):
    """The first tunes of a book (up to MAX_BOOK_SECONDS), parsed one by one: music21 would
    otherwise parse hundreds of tunes to use a few."""
    import music21

    pms = []
    total = 0.0
    for tune in tunes[:MAX_TUNES_PER_BOOK]:
        try:
            pm = _stream_to_pretty(music21.converter.parseData(tune, format="abc"))
        except Exception as exc:  # one broken tune must not lose the book
            log.debug("skipping a tune of %s: %s", work.work_id, exc)
            continue
        pms.append(pm)
        total += pm.get_end_time()
        if total >= MAX_BOOK_SECONDS:
            break
    if not pms:
        raise RenderError(f"no tune of {work.work_id} could be parsed")
    return _concatenate(pms)


def work_to_midi(*, work: Work, cache_dir: Path):
    """Parse ``work`` with music21 and return a ``pretty_midi.PrettyMIDI`` (cached as ``.mid``).

    Raises :class:`RenderError` when the score cannot be parsed or has no notes.
    """
    import pretty_midi

    _set_max_tick()
    cache = Path(cache_dir) / f"{safe_name(work.work_id)}.mid"
    if cache.exists():
        try:
            return pretty_midi.PrettyMIDI(str(cache))
        except Exception:  # a truncated cache file from a killed run: rebuild it
            log.warning("unreadable MIDI cache %s; converting again", cache)
    try:
        pm = _convert(work)
    except Exception as exc:
        raise RenderError(
            f"cannot convert {work.work_id} to MIDI ({type(exc).__name__}: {exc}); skip it"
        ) from exc
    if not any(inst.notes for inst in pm.instruments if not inst.is_drum):
        raise RenderError(f"{work.work_id} has no notes; skip it")
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".mid.tmp")
    pm.write(str(tmp))
    tmp.replace(cache)  # atomic: a killed run never leaves a half-written cache
    return pm
