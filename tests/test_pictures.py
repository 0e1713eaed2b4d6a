"""Server-side SVG pictures: the aligned chroma overlay is readable at 1x and aligns the match."""

from __future__ import annotations

import re

import numpy as np

from assistant.pictures import chroma_overlay_svg
from retrieval.descriptors import KEY_NAMES


def _pitch_rows(svg: str) -> list[tuple[str, float]]:
    return [
        (name, float(y))
        for y, name in re.findall(r'<text class="pitch" x="[^"]+" y="([^"]+)"[^>]*>([^<]+)<', svg)
    ]


def test_the_overlay_names_all_twelve_pitches_at_twelve_px_or_more():
    q = np.eye(12, dtype=np.float32)[np.arange(100) % 12]
    svg = chroma_overlay_svg(query=q, match=q, label="x")
    rows = _pitch_rows(svg)
    assert sorted(n for n, _ in rows) == sorted(KEY_NAMES)
    ys = sorted(y for _, y in rows)
    assert min(b - a for a, b in zip(ys, ys[1:], strict=False)) >= 12
    width, height = (float(v) for v in re.search(r'width="(\d+)" height="(\d+)"', svg).groups())
    assert width <= 340  # fits a phone-wide card at 1x, so rows are never scaled below 12 px
    assert 'font-size="11"' in svg and "style=" not in svg and "<script" not in svg


def test_the_match_is_rotated_by_the_key_offset_so_a_transposed_passage_agrees_everywhere():
    rng = np.random.default_rng(1)
    q = rng.random((100, 12)).astype(np.float32) ** 4
    moved = np.roll(q, 3, axis=1)  # the same passage 3 semitones up
    aligned = chroma_overlay_svg(query=q, match=moved, key_shift=3)
    unaligned = chroma_overlay_svg(query=q, match=moved, key_shift=0)

    def stretch(svg):
        return sum(float(w) for w in re.findall(r'class="stretch" x="[^"]+" y="[^"]+" width="([^"]+)"', svg))

    assert stretch(aligned) == 300  # every column agrees: one band over the whole grid
    assert stretch(unaligned) < 150
    assert "match moved -3 semitones" in aligned
