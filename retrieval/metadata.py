"""Track metadata: file tags (mutagen), a sidecar CSV/JSON that overrides them, era from year."""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path
from typing import Any

from cadenza.errors import InputError

log = logging.getLogger(__name__)

FIELDS = ("title", "composer", "work", "era", "year", "genre", "album", "artist")
ERAS = ("Medieval", "Renaissance", "Baroque", "Classical", "Romantic", "Modern", "Contemporary")
_ERA_LIMITS = (
    (1400, "Medieval"),
    (1600, "Renaissance"),
    (1750, "Baroque"),
    (1820, "Classical"),
    (1900, "Romantic"),
    (1975, "Modern"),
)


def era_from_year(year: int | None) -> str:
    """Medieval < 1400 ≤ Renaissance < 1600 ≤ Baroque < 1750 ≤ Classical < 1820 ≤ Romantic < 1900 ≤ Modern < 1975 ≤ Contemporary."""
    if year is None:
        return ""
    for limit, name in _ERA_LIMITS:
        if year < limit:
            return name
    return "Contemporary"


def normalize_era(text: str) -> str:
    t = text.strip().lower()
    for e in ERAS:
        if t == e.lower():
            return e
    return text.strip().title()


def _year(value: Any) -> int | None:
    if value in (None, ""):
        return None
    m = re.search(r"\b(\d{3,4})\b", str(value))
    return int(m.group(1)) if m else None


def read_tags(path: Path) -> dict[str, Any]:
    """Title, composer (or artist), album, year, genre from the file's tags; {} when there are none."""
    try:
        import mutagen

        f = mutagen.File(str(path), easy=True)
    except Exception as exc:  # mutagen raises many types for odd files; tags are optional
        log.debug("no tags in %s: %s", path, exc)
        return {}
    if f is None or not getattr(f, "tags", None):
        return {}

    def first(*keys: str) -> str:
        for k in keys:
            try:
                v = f.tags.get(k)
            except Exception:
                v = None
            if v:
                return str(v[0] if isinstance(v, list) else v).strip()
        return ""

    out: dict[str, Any] = {
        "title": first("title"),
        "artist": first("artist", "albumartist"),
        "composer": first("composer") or first("artist", "albumartist"),
        "album": first("album"),
        "genre": first("genre"),
        "year": _year(first("date", "year", "originaldate")),
    }
    return {k: v for k, v in out.items() if v not in ("", None)}


def load_sidecar(file: Path) -> dict[Path, dict[str, Any]]:
    """A CSV (header with a ``path`` column) or JSON (list of objects with ``path``, or {path: {...}}).

    Paths are resolved relative to the sidecar's folder. Returns {resolved path: fields}.
    """
    file = Path(file)
    if not file.is_file():
        raise InputError(f"metadata file {file} does not exist; check the --metadata path")
    rows: list[dict[str, Any]]
    try:
        if file.suffix.lower() == ".json":
            data = json.loads(file.read_text())
            rows = [{"path": k, **v} for k, v in data.items()] if isinstance(data, dict) else list(data)
        else:
            with open(file, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f))
    except (ValueError, csv.Error, UnicodeDecodeError) as exc:
        raise InputError(
            f"metadata file {file} is not valid CSV/JSON ({exc}); fix it or leave it out"
        ) from None
    out: dict[Path, dict[str, Any]] = {}
    for row in rows:
        if not isinstance(row, dict) or not row.get("path"):
            raise InputError(f"metadata file {file}: every row needs a 'path'; add the column")
        p = Path(str(row["path"])).expanduser()
        p = (file.parent / p) if not p.is_absolute() else p
        fields = {
            k.strip().lower(): v
            for k, v in row.items()
            if k and k.strip().lower() in FIELDS and v not in ("", None)
        }
        if "year" in fields:
            fields["year"] = _year(fields["year"])
        out[p.resolve()] = fields
    return out


def merge(*, tags: dict[str, Any], sidecar: dict[str, Any] | None, path: Path) -> dict[str, Any]:
    """Tags overridden by the sidecar; title falls back to the file name; era from year when missing."""
    meta = {**tags, **(sidecar or {})}
    meta.setdefault("title", path.stem.replace("_", " "))
    meta["title"] = str(meta.get("title") or path.stem)
    meta["composer"] = str(meta.get("composer") or meta.get("artist") or "")
    meta["work"] = str(meta.get("work") or meta.get("album") or "")
    year = meta.get("year")
    meta["year"] = int(year) if year not in (None, "") else None
    era = str(meta.get("era") or "")
    meta["era"] = normalize_era(era) if era else era_from_year(meta["year"])
    return meta


#: The stored fields a re-ingest may change, each with the explicit sources (tags or sidecar keys)
#: that may change it: a field nobody states again keeps its stored value (re-ingesting without the
#: sidecar must not put the file name back as the title).
_UPDATABLE = {
    "title": ("title",),
    "composer": ("composer", "artist"),
    "work": ("work", "album"),
    "year": ("year",),
    "era": ("era", "year"),
}


def metadata_changes(
    stored: dict[str, Any], *, tags: dict[str, Any], sidecar: dict[str, Any] | None, path: Path
) -> dict[str, Any]:
    """The fields of a known track (same content) that this ingest's tags and sidecar change.

    ``stored`` holds the track's current title, composer, work, era and year. Returns {field: new
    value} for what differs, {} when nothing does.
    """
    explicit = {k: v for k, v in {**tags, **(sidecar or {})}.items() if v not in ("", None)}
    new = merge(tags=tags, sidecar=sidecar, path=path)
    return {
        field: new[field]
        for field, sources in _UPDATABLE.items()
        if any(s in explicit for s in sources) and new[field] != stored.get(field)
    }
