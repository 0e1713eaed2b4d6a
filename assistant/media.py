"""Library audio by track id and kept query clips by clip id (never by path), with single-range
``Range`` support (206).

Browsers need byte ranges to seek, which is how a result card plays exactly its cited 10 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
from litestar import Request, Response, get
from litestar.response import Stream

from assistant import clips, errors
from assistant.services import Services
from cadenza.errors import NotFound

AUDIO_TYPES = {
    ".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".oga": "audio/ogg", ".opus": "audio/ogg",
    ".flac": "audio/flac", ".m4a": "audio/mp4", ".mp4": "audio/mp4", ".aac": "audio/aac",
}  # fmt: skip


def track_path(svc: Services, track_id: int) -> tuple[Path, float]:
    with svc.db.connection() as conn:
        row = conn.execute("SELECT path, duration_s FROM tracks WHERE id = %s", (track_id,)).fetchone()
    if row is None:
        raise NotFound(f"no track {track_id} in the library")
    path = Path(row[0])
    if not path.is_file():
        raise NotFound(f"the audio file of track {track_id} is missing on the server; re-ingest it")
    return path, float(row[1])


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` → inclusive (a, b) clipped to the file; None when unsatisfiable."""
    if not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return None
            return max(0, size - n), size - 1
        a = int(first)
        b = int(last) if last else size - 1
    except ValueError:
        return None
    if a >= size or b < a:
        return None
    return a, min(b, size - 1)


def _file_chunks(path: Path, start: int, length: int, chunk: int = 1 << 16) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left > 0:
            data = f.read(min(chunk, left))
            if not data:
                break
            left -= len(data)
            yield data


_AUDIO_HEADERS = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600"}


@dataclass(frozen=True)
class ByteSlice:
    """What to send of a body of ``size`` bytes: ``length`` bytes from ``start``, with its status and headers."""

    start: int
    length: int
    status: int
    headers: dict[str, str]


def requested_slice(request: Request, *, size: int, what: str) -> ByteSlice | Response:
    """The one byte range asked for (206), the whole body (200), or the 416 answer."""
    rng = request.headers.get("range")
    if not rng:
        return ByteSlice(0, size, 200, dict(_AUDIO_HEADERS))
    span = parse_range(rng, size)
    if span is None:
        return errors.respond(
            request, 416, f"the range {rng[:40]!r} is outside the {what} ({size} bytes)",
            headers={**_AUDIO_HEADERS, "Content-Range": f"bytes */{size}"},
        )  # fmt: skip
    a, b = span
    return ByteSlice(a, b - a + 1, 206, {**_AUDIO_HEADERS, "Content-Range": f"bytes {a}-{b}/{size}"})


@get("/audio/{track_id:int}", include_in_schema=False)
async def audio(request: Request, svc: Services, track_id: int) -> Response | Stream:
    """The track's audio by id (never by path), with single-range ``Range`` support (206)."""
    path, _ = await anyio.to_thread.run_sync(track_path, svc, track_id)
    part = requested_slice(request, size=path.stat().st_size, what="file")
    if isinstance(part, Response):
        return part
    return Stream(
        _file_chunks(path, part.start, part.length), status_code=part.status,
        media_type=AUDIO_TYPES.get(path.suffix.lower(), "application/octet-stream"),
        headers={**part.headers, "Content-Length": str(part.length)},
    )  # fmt: skip


@get("/clips/{clip_id:str}", include_in_schema=False)
async def clip_audio(request: Request, svc: Services, clip_id: str) -> Response[bytes]:
    """A kept query clip by its id (never by path), with single-range ``Range`` support (206)."""
    data, media = await anyio.to_thread.run_sync(clips.audio_bytes, svc.db, clips.parse_id(clip_id))
    part = requested_slice(request, size=len(data), what="clip")
    if isinstance(part, Response):
        return part
    body = data[part.start : part.start + part.length]
    return Response(body, status_code=part.status, media_type=media, headers=part.headers)


HANDLERS = [audio, clip_audio]
