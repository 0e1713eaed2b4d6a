"""Scores → MIDI → audio, on real music21 corpus works and hand-made MIDI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi
import pytest

from encoder.features import CHROMA, acoustic_features
from encoder.render import GM_PROGRAMS, RenderError, _melody_notes, render, safe_name
from encoder.scores import Work, _abc_tunes, list_works, work_to_midi

SR = 16_000


def scale_midi(*, pitches: list[int], seconds: float = 0.5, drum: bool = False) -> pretty_midi.PrettyMIDI:
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0, is_drum=drum)
    for i, p in enumerate(pitches):
        inst.notes.append(pretty_midi.Note(velocity=90, pitch=p, start=i * seconds, end=(i + 1) * seconds))
    pm.instruments.append(inst)
    return pm


@pytest.fixture(scope="module")
def chorale() -> Work:
    works = list_works(composers=["bach"])
    return next(w for w in works if w.work_id == "bach/bwv66.6")


def test_list_works_is_deterministic_and_deduplicated() -> None:
    a = list_works(composers=["bach", "haydn", "monteverdi"])
    b = list_works(composers=["bach", "haydn", "monteverdi"])
    assert a == b and len(a) > 50
    assert {w.composer for w in a} == {"bach", "haydn", "monteverdi"}
    assert all(w.path.suffix != ".rntxt" for w in a)
    ids = [w.work_id for w in a]
    assert len(ids) == len(set(ids))  # a work stored as .mxl and .krn appears once
    assert ids == sorted(ids) or [w.composer for w in a] == sorted(w.composer for w in a)
    capped = list_works(composers=["bach", "haydn"], max_per_composer=3)
    assert [w.composer for w in capped] == ["bach"] * 3 + ["haydn"] * 3


def test_work_to_midi_caches(tmp_path: Path, chorale: Work) -> None:
    pm = work_to_midi(work=chorale, cache_dir=tmp_path)
    cached = tmp_path / f"{safe_name(chorale.work_id)}.mid"
    assert cached.exists()
    assert 20 < pm.get_end_time() < 200
    again = work_to_midi(work=chorale, cache_dir=tmp_path)  # from the cache file
    assert sum(len(i.notes) for i in again.instruments) == sum(len(i.notes) for i in pm.instruments)


def test_unparseable_work_raises_render_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.abc"
    bad.write_text("this is not a score\n")
    with pytest.raises(RenderError):
        work_to_midi(work=Work("x/broken", "x", "broken", bad), cache_dir=tmp_path)


@pytest.mark.parametrize("program", [0, 48, 19])
def test_render_is_clean_mono_audio(tmp_path: Path, chorale: Work, program: int) -> None:
    pm = work_to_midi(work=chorale, cache_dir=tmp_path)
    y = render(midi=pm, program=program, max_seconds=8.0)
    assert y.dtype == np.float32 and y.ndim == 1
    assert y.size == 8 * SR
    assert abs(float(np.max(np.abs(y))) - 0.9) < 1e-3
    assert abs(float(y.mean())) < 1e-3  # DC removed
    assert float(np.sqrt(np.mean(y**2))) > 0.03


def test_tempo_scale_and_transpose(tmp_path: Path) -> None:
    pm = scale_midi(pitches=[69] * 8, seconds=0.5)  # A4 for 4 s
    base = render(midi=pm, program=0)
    faster = render(midi=pm, program=0, tempo_scale=1.25)
    assert abs(base.size / SR - (4.0 + 1.0)) < 0.01  # + release tail
    assert abs(faster.size / SR - (4.0 / 1.25 + 1.0)) < 0.01
    up = render(midi=pm, program=0, transpose=2)
    c_base = acoustic_features(y=base, sr=SR)[:30, CHROMA].mean(axis=0)
    c_up = acoustic_features(y=up, sr=SR)[:30, CHROMA].mean(axis=0)
    assert int(np.argmax(c_base)) == 9  # A
    assert int(np.argmax(c_up)) == 11  # B


def test_drums_are_not_rendered() -> None:
    pm = scale_midi(pitches=[60, 62, 64, 65])
    pm.instruments.append(scale_midi(pitches=[36, 38, 36, 38], drum=True).instruments[0])
    only_drums = scale_midi(pitches=[36, 38, 36, 38], drum=True)
    assert render(midi=pm, program=0).size > 0
    with pytest.raises(RenderError):
        render(midi=only_drums, program=0)


def test_melody_keeps_the_top_voice() -> None:
    # chords (C4 E4 G4) under a held top note, then a higher melody note
    notes = [
        (0.0, 1.0, 60, 90),
        (0.0, 1.0, 64, 90),
        (0.0, 2.0, 72, 90),
        (1.0, 2.0, 62, 90),
        (2.0, 3.0, 74, 90),
    ]
    top = _melody_notes(notes)
    assert [n[2] for n in top] == [72, 74]
    assert top[0][1] == 2.0


def test_melody_only_render_differs_from_full(tmp_path: Path, chorale: Work) -> None:
    pm = work_to_midi(work=chorale, cache_dir=tmp_path)
    full = render(midi=pm, program=53, max_seconds=6.0)
    melody = render(midi=pm, program=53, melody_only=True, max_seconds=6.0)
    assert melody.size == full.size
    # fewer voices: the melody's chroma is more concentrated than the four-part texture's
    cm = acoustic_features(y=melody, sr=SR)[:, CHROMA]
    cf = acoustic_features(y=full, sr=SR)[:, CHROMA]
    assert float((cm > 0.5).sum(axis=1).mean()) < float((cf > 0.5).sum(axis=1).mean())


def test_program_table_names() -> None:
    assert GM_PROGRAMS[0] == "piano" and GM_PROGRAMS[48] == "strings" and GM_PROGRAMS[19] == "organ"


def test_josquin_voices_are_merged_and_tune_books_concatenated(tmp_path: Path) -> None:
    works = {w.work_id: w for w in list_works(composers=["josquin", "essenFolksong"])}
    chanson = work_to_midi(work=works["josquin/adieuMesAmours"], cache_dir=tmp_path)
    parts = [i for i in chanson.instruments if i.notes]
    assert len(parts) == 4  # four voices sounding together, not one after another
    starts = sorted(min(n.start for n in i.notes) for i in parts)
    assert starts[-1] < 0.25 * chanson.get_end_time()
    text = works["essenFolksong/altdeu10"].path.read_text(encoding="utf-8", errors="replace")
    tunes = _abc_tunes(text)
    assert len(tunes) == sum(1 for line in text.splitlines() if line.startswith("X:")) > 100
    assert all(t.count("\nX:") + t.startswith("X:") == 1 for t in tunes)
    assert "".join(tunes).count("K:") == text.count("K:")  # nothing lost, nothing doubled
    book = work_to_midi(work=works["essenFolksong/altdeu10"], cache_dir=tmp_path)
    assert 300 < book.get_end_time() < 1200  # several tunes, not all 300 of the book
