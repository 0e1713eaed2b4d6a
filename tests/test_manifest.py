"""encoder/acquire/manifest.py: the acquire manifest survives a crash mid-write and compacts."""

from __future__ import annotations

from pathlib import Path

from encoder.acquire.manifest import MANIFEST_NAME, Manifest


def test_manifest_survives_a_torn_last_line(tmp_path: Path):
    manifest = Manifest.open(tmp_path)
    manifest.set("a", "pending")
    manifest.set("a", "done", file="a.mp3", duration_s=61.0)
    manifest.set("b", "failed", reason="HTTP 503")
    with (tmp_path / MANIFEST_NAME).open("a") as fh:
        fh.write('{"key": "b", "state": "do')  # a crash mid-write
    again = Manifest.open(tmp_path)
    assert again.torn_lines == 1
    assert again.get("a").state == "done" and again.get("b").state == "failed"  # type: ignore[union-attr]
    again.set("c", "rejected", reason="too short")
    third = Manifest.open(tmp_path)
    assert third.get("c").reason == "too short"  # type: ignore[union-attr]
    assert third.counts() == {"pending": 0, "done": 1, "failed": 1, "rejected": 1}
    third.compact()
    assert len((tmp_path / MANIFEST_NAME).read_text().splitlines()) == 3
