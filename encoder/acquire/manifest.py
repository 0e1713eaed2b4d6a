"""The acquisition manifest: one JSON line per state change, append-only.

``manifest.jsonl`` in the output folder records, for every input line (a URL or a search
query, its *key*), the latest of

* ``pending``  - queued, not finished (a stopped run leaves items here; a rerun does them);
* ``done``     - ``file`` (relative to the folder) is a validated 16 kHz mono MP3;
* ``failed``   - gave up after retries (``reason``); a rerun tries again;
* ``rejected`` - the content itself is unusable (``reason``: not audio, corrupt,
  truncated, too short/long); a rerun does not try again.

Each record is written with a single ``write`` on an ``O_APPEND`` descriptor and fsynced,
so a crash leaves at most one torn last line, which :meth:`Manifest.load` ignores. The
latest record for a key wins.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
State = Literal["pending", "done", "failed", "rejected"]
STATES: tuple[str, ...] = ("pending", "done", "failed", "rejected")


@dataclass
class Record:
    key: str
    state: str
    reason: str | None = None
    file: str | None = None
    duration_s: float | None = None
    attempts: int = 0
    meta: dict[str, str] = field(default_factory=dict)
    ts: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        return cls(
            key=str(data["key"]),
            state=str(data["state"]),
            reason=data.get("reason"),
            file=data.get("file"),
            duration_s=data.get("duration_s"),
            attempts=int(data.get("attempts") or 0),
            meta=dict(data.get("meta") or {}),
            ts=float(data.get("ts") or 0.0),
        )


class Manifest:
    """Thread-safe view of ``DIR/manifest.jsonl``: the latest record per key."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST_NAME
        self._lock = threading.Lock()
        self._latest: dict[str, Record] = {}
        self.torn_lines = 0

    @classmethod
    def open(cls, folder: Path) -> Manifest:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        manifest = cls(folder)
        manifest._load()
        return manifest

    def _load(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            for raw in fh:
                if not raw.endswith(b"\n"):
                    self.torn_lines += 1  # a write interrupted by a crash: never completed
                    continue
                try:
                    data = json.loads(raw)
                    record = Record.from_dict(data)
                except (ValueError, KeyError, TypeError):
                    self.torn_lines += 1
                    continue
                if record.state in STATES:
                    self._latest[record.key] = record
        if self.torn_lines:
            log.warning("%s: ignored %d torn or unreadable line(s)", self.path, self.torn_lines)
            self._repair_tail()

    def _repair_tail(self) -> None:
        # A torn last line would glue itself to our next record; end it with a newline.
        with self.path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return
            fh.seek(-1, os.SEEK_END)
            last = fh.read(1)
        if last != b"\n":
            self._append_bytes(b"\n")

    def _append_bytes(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def get(self, key: str) -> Record | None:
        with self._lock:
            return self._latest.get(key)

    def records(self) -> list[Record]:
        with self._lock:
            return list(self._latest.values())

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for record in self.records():
            out[record.state] = out.get(record.state, 0) + 1
        return out

    def set(self, key: str, state: str, **fields: Any) -> Record:
        """Append the new state of ``key`` (earlier fields carry over unless given)."""
        if state not in STATES:
            raise ValueError(f"unknown manifest state {state!r}")
        with self._lock:
            previous = self._latest.get(key)
            base: dict[str, Any] = asdict(previous) if previous is not None else {"key": key}
            if state != "done":
                base["file"] = None
                base["duration_s"] = None
            if state in ("pending", "done"):
                base["reason"] = None
            base.update(fields)
            base["state"] = state
            base["ts"] = round(time.time(), 3)
            record = Record.from_dict(base)
            self._append_bytes((record.to_json() + "\n").encode("utf-8"))
            self._latest[key] = record
            return record

    def by_file(self) -> dict[str, Record]:
        """``done`` records by their file name."""
        return {r.file: r for r in self.records() if r.state == "done" and r.file}

    def compact(self) -> None:
        """Rewrite the file with only the latest record per key (atomic replace)."""
        with self._lock:
            tmp = self.path.with_suffix(".jsonl.tmp")
            with tmp.open("w", encoding="utf-8") as fh:
                for record in self._latest.values():
                    fh.write(record.to_json() + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
