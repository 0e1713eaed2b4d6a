"""Validation sweeps: decode every file fully, purge what is broken or out of bounds.

``check_file`` is what the downloader runs on each new file and what ``cadenza acquire
--validate DIR`` runs on every audio file in a folder. A file is purged when it

* cannot be opened or decodes to nothing (``corrupt``),
* decodes to less than its header declares (``truncated``; MP3 Xing frame count),
* is not 16 kHz mono MP3 (``nonstandard``; only with ``require_standard``),
* lasts less than ``min_s`` or more than ``max_s`` (``too_short`` / ``too_long``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from encoder.acquire.manifest import MANIFEST_NAME, Manifest
from encoder.acquire.standardize import SAMPLE_RATE

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = frozenset({".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".webm"})
#: Kinds that say the file is damaged (a rerun may fetch it again), not that the music is unusable.
DAMAGED = frozenset({"corrupt", "truncated", "nonstandard"})


@dataclass(frozen=True)
class Bounds:
    """Accepted track length in seconds (defaults: 50 s to 7 min)."""

    min_s: float = 50.0
    max_s: float = 420.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_s < self.max_s:
            raise ValueError(f"duration bounds must satisfy 0 <= min < max, got {self.min_s}..{self.max_s}")


@dataclass(frozen=True)
class Verdict:
    path: Path
    kind: str  # ok | corrupt | truncated | nonstandard | too_short | too_long
    reason: str | None
    duration_s: float | None

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


def check_file(
    path: Path,
    *,
    bounds: Bounds,
    require_standard: bool = True,
    truncation_tolerance_s: float = 1.0,
) -> Verdict:
    """Decode ``path`` completely with soundfile and judge it (no side effects)."""
    path = Path(path)
    try:
        info = sf.info(str(path))
        decoded = 0
        finite = True
        # SoundFile.read trims a short read; sf.blocks would pad up to the declared length.
        with sf.SoundFile(str(path)) as fh:
            while True:
                block = fh.read(1 << 16, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                decoded += block.shape[0]
                finite = finite and bool(np.isfinite(block).all())
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        return Verdict(path, "corrupt", f"corrupt: cannot decode ({str(exc).strip()[:160]})", None)
    sr = info.samplerate
    if decoded == 0 or sr <= 0:
        return Verdict(path, "corrupt", "corrupt: decodes to no audio", None)
    if not finite:
        return Verdict(path, "corrupt", "corrupt: decodes to NaN/inf samples", None)
    duration = decoded / sr
    declared = info.frames / sr if info.frames > 0 else None
    if declared is not None and declared - duration > max(truncation_tolerance_s, 0.02 * declared):
        return Verdict(
            path,
            "truncated",
            f"truncated: decodes to {duration:.1f} s of {declared:.1f} s declared",
            duration,
        )
    if require_standard and (sr != SAMPLE_RATE or info.channels != 1 or info.format != "MP3"):
        return Verdict(
            path,
            "nonstandard",
            f"nonstandard: {info.format} {sr} Hz {info.channels} ch, expected MP3 {SAMPLE_RATE} Hz mono",
            duration,
        )
    if duration < bounds.min_s:
        return Verdict(path, "too_short", f"too short: {duration:.1f} s < {bounds.min_s:g} s", duration)
    if duration > bounds.max_s:
        return Verdict(path, "too_long", f"too long: {duration:.1f} s > {bounds.max_s:g} s", duration)
    return Verdict(path, "ok", None, duration)


@dataclass
class SweepReport:
    checked: int = 0
    kept: int = 0
    purged: list[Verdict] = field(default_factory=list)
    stray_parts: list[Path] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"checked {self.checked}, kept {self.kept}, purged {len(self.purged)}"]
        out += [f"  purged {v.path.name}: {v.reason}" for v in self.purged]
        out += [f"  removed leftover {p.name}" for p in self.stray_parts]
        return out


def audio_files(folder: Path) -> Iterable[Path]:
    for path in sorted(Path(folder).rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue  # work folders and partial files
        if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES:
            yield path


def sweep(
    folder: Path,
    *,
    bounds: Bounds,
    require_standard: bool = True,
    dry_run: bool = False,
    progress: bool = False,
) -> SweepReport:
    """Check every audio file under ``folder``; delete the bad ones (unless ``dry_run``).

    When the folder has a manifest, purged files change state: damaged ones become
    ``failed`` (a rerun downloads them again), out-of-bounds ones ``rejected``.
    """
    from tqdm import tqdm

    folder = Path(folder)
    manifest = Manifest.open(folder) if (folder / MANIFEST_NAME).exists() else None
    owners = manifest.by_file() if manifest is not None else {}
    report = SweepReport()
    files = list(audio_files(folder))
    for path in tqdm(files, desc="validate", unit="file", disable=not progress):
        verdict = check_file(path, bounds=bounds, require_standard=require_standard)
        report.checked += 1
        if verdict.ok:
            report.kept += 1
            continue
        report.purged.append(verdict)
        log.info("purge %s: %s", path.name, verdict.reason)
        if dry_run:
            continue
        path.unlink(missing_ok=True)
        record = owners.get(path.relative_to(folder).as_posix())
        if manifest is not None and record is not None:
            state = "failed" if verdict.kind in DAMAGED else "rejected"
            manifest.set(record.key, state, reason=f"purged by validation: {verdict.reason}")
    for part in sorted(folder.glob(".*.part")):
        report.stray_parts.append(part)
        if not dry_run:
            part.unlink(missing_ok=True)
    return report
