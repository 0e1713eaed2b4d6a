"""Input lines: a URL or a search query, then optional tab-separated metadata.

::

    https://example.org/a.ogg<TAB>title=Prelude<TAB>artist=Someone
    bach cello suite 1 prelude<TAB>composer=Bach
    # comments and blank lines are ignored

A metadata field without ``=`` is taken as the title. A line that is not an http(s) URL
is a search query and becomes ``ytsearch1:<query>`` (the first hit).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from cadenza.errors import InputError

SEARCH_PREFIX = "ytsearch1:"
SEARCH_HOST = "ytsearch"
_YTDLP_SEARCH = re.compile(r"^[a-z]+search(\d+|all)?:", re.IGNORECASE)  # ytsearch1:, scsearch5: ...


@dataclass(frozen=True)
class Item:
    key: str  # the line's URL or query, as written: the manifest key
    target: str  # what yt-dlp is given
    host: str  # whose pacer and circuit breaker this item uses
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def is_search(self) -> bool:
        return self.host == SEARCH_HOST

    @property
    def file_id(self) -> str:
        """Stable output name stem: the same line always maps to the same file."""
        return hashlib.sha1(self.key.encode("utf-8")).hexdigest()[:16]


def parse_line(line: str) -> Item | None:
    """One input line to an :class:`Item` (None for blank lines and comments)."""
    line = line.rstrip("\r\n")
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    head, *rest = line.split("\t")
    key = head.strip()
    if not key:
        return None
    meta: dict[str, str] = {}
    for raw in rest:
        raw = raw.strip()
        if not raw:
            continue
        name, sep, value = raw.partition("=")
        if sep and name.strip():
            meta[name.strip().lower()] = value.strip()
        else:
            meta.setdefault("title", raw)
    parsed = urlparse(key)
    if parsed.scheme in ("http", "https") and parsed.hostname:
        return Item(key=key, target=key, host=parsed.hostname.lower(), meta=meta)
    if _YTDLP_SEARCH.match(key):
        return Item(key=key, target=key, host=SEARCH_HOST, meta=meta)  # already a yt-dlp search
    return Item(key=key, target=SEARCH_PREFIX + key, host=SEARCH_HOST, meta=meta)


def read_items(path: Path) -> list[Item]:
    """All items of a URLs file, first occurrence of each key kept."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(
            f"cannot read URLs file {path}: {exc.strerror}; pass an existing text file"
        ) from None
    except UnicodeDecodeError:
        raise InputError(f"URLs file {path} is not UTF-8 text; save it as UTF-8") from None
    items: dict[str, Item] = {}
    for line in text.splitlines():
        item = parse_line(line)
        if item is not None and item.key not in items:
            items[item.key] = item
    return list(items.values())
