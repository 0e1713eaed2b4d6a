"""Moments and paths a message names: "find moments like 1:23 of <title>", "a path from #1 to #4".

Pure functions over the message text; the chat looks the titles and ranks up.
"""

from __future__ import annotations

import re

_TIME = r"(?:(\d{1,3}):(\d{2})|(\d{1,4})\s*s(?:ec(?:onds)?)?)"
_MOMENT_START = re.compile(rf"\b(?:like|at|from|around)\s+{_TIME}\s+(?:of|in|from|into)\s+", re.IGNORECASE)
_NEXT_MOMENT = re.compile(rf"(?<![\w:.]){_TIME}\s+(?:of|in|from|into)\s+", re.IGNORECASE)


def parse_moments(text: str) -> list[tuple[float, str]]:
    """ "find moments like 0:30 of Lindenbaum and 0:41 of maple_leaf_rag" → [(30, "Lindenbaum"), (41, …)]."""
    text = text.strip()
    first = _MOMENT_START.search(text)
    if first is None:
        return []
    spans = [first]
    pos = first.end()
    while m := _NEXT_MOMENT.search(text, pos):
        spans.append(m)
        pos = m.end()
    out: list[tuple[float, str]] = []
    for i, m in enumerate(spans):
        end = spans[i + 1].start() if i + 1 < len(spans) else len(text)
        title = text[m.end() : end]
        if i + 1 < len(spans):
            title = re.sub(r"(?:\s*,)?\s*(?:and|&|plus|,)\s*$", "", title)
        title = title.strip().strip("\"“”'").strip()
        title = re.sub(r"[\"“”']?\s*[?.!]*$", "", title).strip()
        seconds = int(m.group(1)) * 60 + int(m.group(2)) if m.group(1) else float(m.group(3))
        if title:
            out.append((float(seconds), title))
    return out


# --- moment paths -------------------------------------------------------------------------

#: Passages on a path asked for without a count ("a path from #1 to #4"), both ends included.
DEFAULT_PATH_STEPS = 5
_PATH = re.compile(
    r"\bpath\s+(?:of\s+(?P<n1>\d{1,2})\s+(?:steps?|moments?|passages?)\s+)?from\s+#?(?P<a>\d{1,3})\s+"
    r"(?:to|towards?|into)\s+#?(?P<b>\d{1,3})(?:\s+(?:in|with)\s+(?P<n2>\d{1,2})\s+(?:steps?|moments?|passages?))?",
    re.IGNORECASE,
)
_PATH_COUNT_FIRST = re.compile(r"\b(?P<n>\d{1,2})[- ](?:step|moment|passage)\s+path\b", re.IGNORECASE)


def parse_path(text: str) -> tuple[int, int, int] | None:
    """ "a path from #1 to #4" → (1, 4, 5); "a 7-step path from 2 to 3" → (2, 3, 7); else None.

    The ranks are results of the answer the message is about; the count includes both ends.
    """
    m = _PATH.search(text)
    if m is None:
        return None
    counted = _PATH_COUNT_FIRST.search(text)
    n = m.group("n1") or m.group("n2") or (counted.group("n") if counted else None)
    return int(m.group("a")), int(m.group("b")), int(n) if n else DEFAULT_PATH_STEPS
