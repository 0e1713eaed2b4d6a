"""The real-recordings benchmark (bench/recorded.py) end to end on a tiny folder of synthesized
tracks, the tempo ground truth (a clip cut from sped-up audio maps back to the right library
second), and the CLI's refusal to run it without ``--audio``."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import soundfile as sf

from bench import recorded
from bench.queries import AUGMENTATIONS
from cadenza.errors import InputError
from cadenza.synth_audio import SR, random_chord_track, tone


def test_library_time_of_a_sped_up_clip():
    # 1.05× faster: 10 s into the stretched audio is 10.5 s into the original; slower the other way.
    assert recorded.library_time(stretched_s=10.0, rate=1.05) == pytest.approx(10.5)
    assert recorded.library_time(stretched_s=10.0, rate=0.95) == pytest.approx(9.5)
    assert recorded.library_time(stretched_s=3.0, rate=1.0) == 3.0


def _onsets(y: np.ndarray, *, thresh: float = 0.05) -> np.ndarray:
    """Seconds where the 5-ms envelope first rises above ``thresh`` after ≥ 0.3 s below it."""
    hop = SR // 200
    env = np.abs(y[: len(y) // hop * hop]).reshape(-1, hop).max(1)
    above = np.flatnonzero(env > thresh)
    keep = above[np.insert(np.diff(above) > 60, 0, True)]
    return keep * hop / SR


@pytest.mark.parametrize("kind", ["tempo+5", "tempo-5", "pitch+1"])
def test_cut_query_ground_truth_follows_the_stretch(kind):
    # Short bursts at known library seconds: each burst in the query must map back to its own time.
    events = np.array([1.0, 9.3, 11.1, 13.6, 16.2, 18.9, 21.4])
    y = np.zeros(25 * SR, np.float32)
    for e in events:
        b = tone(hz=880.0, seconds=0.2, amp=0.5)
        y[int(e * SR) : int(e * SR) + b.size] += b
    clip, start = recorded.cut_query(y=y, t=8.0, kind=kind, rng=np.random.default_rng(0))
    assert clip.size == 10 * SR
    assert start == pytest.approx(8.0, abs=1e-3)
    _, rate = recorded._variant(kind)
    found = start + _onsets(clip) * rate  # library seconds of the bursts the query shows
    expect = events[(events >= 8.0) & (events < 8.0 + 10 * rate - 0.3)]
    assert len(found) == len(expect) >= 4
    # The phase vocoder smears an onset by about a frame; the wrong mapping (t / rate) is off by ≥ 0.4 s here.
    assert np.abs(found - expect).max() < 0.08


def test_recorded_benchmark_end_to_end(tmp_path):
    audio = tmp_path / "audio"
    (audio / "sub").mkdir(parents=True)
    for i in range(3):  # one file in a subfolder: the library is searched recursively
        path = (audio / "sub" if i == 2 else audio) / f"track{i}.{'ogg' if i % 2 == 0 else 'flac'}"
        sf.write(str(path), random_chord_track(seconds=30.0, seed=i, key=2 * i), SR)
    (audio / "notes.txt").write_text("not audio")
    out = tmp_path / "out"
    report = recorded.run_recorded(audio_dir=audio, out_dir=out, seed=0, max_seconds=25.0, n_queries=4)

    data = json.loads((out / "recorded.json").read_text())["results"]
    md = (out / "recorded.md").read_text()
    assert (out / "recorded_per_augmentation.png").is_file()
    assert data["library"]["tracks"] == 3
    assert data["library"]["track_seconds"]["sub/track2.ogg"] == 25.0
    assert "real recorded" in md.lower() and str(audio) in md and "## Machine" in md
    systems = list(dict.fromkeys(r["system"] for r in data["passage"]))
    assert systems[:2] == ["mfcc+chroma stats", "untrained"]
    assert {"cadenza", "cadenza+key probes"} <= set(systems), report.notes  # the shipped checkpoint loads
    cells = {(r["augmentation"], r["system"]): r for r in data["passage"]}
    assert set(cells) == {(a, s) for a in AUGMENTATIONS for s in systems}
    for r in data["passage"]:
        assert r["n"] == 4
        for m in ("top1", "top10", "mrr", "work_top1", "work_top10"):
            assert 0.0 <= r[m] <= 1.0
        assert r["top1"] <= r["top10"] and r["top1"] <= r["mrr"] <= r["top10"]
    for s in ("mfcc+chroma stats", "cadenza"):
        assert cells[("clean", s)]["top10"] >= 0.75, (s, cells[("clean", s)])
    for a in AUGMENTATIONS:
        assert f"| {a} |" in md
    assert "mean (clean excluded)" in md


def test_cli_recorded_needs_audio(tmp_path):
    from bench import cli

    parser = argparse.ArgumentParser()
    cli.configure("bench", parser)
    with pytest.raises(InputError, match="--audio"):
        cli.run("bench", parser.parse_args(["recorded", "--out", str(tmp_path)]))
