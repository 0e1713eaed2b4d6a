"""What a request is served with, and the edges it touches.

:class:`Services` (settings, database, embedder, optional LLM, the search and decode slots) is
built once at start-up and injected into the controllers. Around it: decoding an upload in a
sandboxed child (:func:`decode_clip`), the stored query passage of a conversation
(:func:`store_passage` / :func:`load_passage`), track and vocabulary look-ups, chroma for the
page, and the earlier search a follow-up refines (:func:`previous_search`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

import cadenza.decode_sandbox
from assistant import conversations, followups
from assistant.llm import LLM
from assistant.querystate import QueryState
from cadenza.audio import DecodeOptions
from cadenza.db import Database
from cadenza.decode_sandbox import DecodeWorkers
from cadenza.errors import CadenzaError, InputError, NotFound, StorageError
from cadenza.settings import Settings
from encoder.features import CHROMA, acoustic_features
from encoder.protocols import MomentEmbedder
from retrieval.search import search
from retrieval.store import track_chroma
from retrieval.types import Aspects, MomentRef, SearchRequest, SearchResponse

log = logging.getLogger(__name__)

SR = 16_000


#: How long a search waits for a free search slot before the server says it is busy (503). The
#: load bench's p95 at 50 concurrent conversations on 2 cores was 16.8 s; a browser waits this long.
SEARCH_WAIT_S = 60.0


class ServerBusy(CadenzaError):
    """Every search slot stayed taken for :data:`SEARCH_WAIT_S`; the request was fine, retry later."""

    status_code = 503


def decode_slot_count() -> int:
    """Upload decodes that may run at once: one per core (at least two). Each is a sandboxed
    Python child; unbounded, 50 concurrent uploads peaked at 3.4 and 8.7 GB of summed RSS
    (server + children) in two load runs on 2 cores, which decode no faster for it."""
    return max(2, os.cpu_count() or 2)


def search_slot_count(settings: Settings) -> int:
    """Searches that may run at once: the pool size less two connections kept for short queries."""
    return max(1, settings.database.pool_max - 2)


@dataclass
class Services:
    settings: Settings
    db: Database
    # A protocol, not encoder.embed.Embedder: Litestar reads these annotations at every request,
    # and naming the class would import torch with this module.
    embedder: MomentEmbedder
    llm: LLM | None = None
    #: Searches running at once. Each holds a pooled connection for its whole run; unbounded, 50
    #: concurrent chats took all of them and the short queries (pages, saving turns) timed out in
    #: the pool (503). Two connections stay free for those; the CPU is the limit anyway.
    #: tests/test_pool_limits.py reproduces that failure with a pool of 2.
    search_slots: threading.BoundedSemaphore = field(init=False, repr=False)
    #: Upload decodes running at once (:func:`decode_slot_count`); a burst waits here.
    decode_slots: threading.BoundedSemaphore = field(init=False, repr=False)
    decode_wait_s: float = SEARCH_WAIT_S
    #: Decode children started ahead, one per decode slot (the first upload starts them; :meth:`close`).
    decode_workers: DecodeWorkers = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.search_slots = threading.BoundedSemaphore(search_slot_count(self.settings))
        self.decode_slots = threading.BoundedSemaphore(decode_slot_count())
        self.decode_workers = DecodeWorkers(decode_slot_count())

    def close(self) -> None:
        """End the idle pre-started decode children (the app's lifespan calls this on shutdown)."""
        self.decode_workers.close()

    def decode(self, clip: Clip) -> np.ndarray:
        """:func:`decode_clip` in one of the decode slots (blocking; run it off the event loop)."""
        if not self.decode_slots.acquire(timeout=self.decode_wait_s):
            raise ServerBusy(
                f"the server is busy decoding other uploads (none finished within {self.decode_wait_s:.0f} s); "
                "try again in a moment"
            )
        try:
            return decode_clip(clip, settings=self.settings, workers=self.decode_workers)
        finally:
            self.decode_slots.release()

    def search(self, request: SearchRequest) -> SearchResponse:
        # Wait in line rather than in the pool: a burst queues here and every search runs, while
        # pages and saved turns still get a connection. Only a wait past SEARCH_WAIT_S gives up.
        if not self.search_slots.acquire(timeout=SEARCH_WAIT_S):
            raise ServerBusy(
                f"the server is busy with other searches (none finished within {SEARCH_WAIT_S:.0f} s); "
                "try again in a moment"
            )
        try:
            return search(
                db=self.db, embedder=self.embedder, request=request,
                min_clip_s=self.settings.limits.min_clip_seconds, max_clip_s=self.settings.limits.max_clip_seconds,
            )  # fmt: skip
        finally:
            self.search_slots.release()

    def search_json(self, request: SearchRequest) -> dict[str, Any]:
        """``SearchResponse.to_json()`` as plain JSON types, for the web: what ``cadenza search --json``
        prints, with each result's server path replaced by its file name (:func:`without_paths`)."""
        return without_paths(plain_json(self.search(request).to_json()))


def without_paths(response: dict[str, Any]) -> dict[str, Any]:
    """A search response whose results carry ``file`` (the file name) instead of ``path``: a web
    client addresses a track by its id and never learns where the server keeps it. Also applied to
    answers stored before this rule."""
    results = []
    for r in response.get("results") or []:
        r = dict(r)
        if "path" in r:
            r["file"] = Path(str(r.pop("path"))).name
        results.append(r)
    return {**response, "results": results}


def plain_json(obj: Any) -> Any:
    """numpy scalars/arrays → Python numbers/lists, recursively, so the JSON encoders accept it."""

    def default(o: Any) -> Any:
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            return float(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"{type(o).__name__} is not JSON serializable")

    return json.loads(json.dumps(obj, default=default))


@dataclass(frozen=True)
class Clip:
    """An uploaded file, still undecoded. ``filename`` is the client's, as sent."""

    filename: str
    data: bytes


#: A file name in a message is cut to this many characters.
MAX_NAME_CHARS = 80


def display_name(filename: str) -> str:
    """The user's file name as it may appear in a message: no folders, control characters or
    lone surrogates, at most :data:`MAX_NAME_CHARS` characters."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF).strip()
    if len(name) > MAX_NAME_CHARS:
        name = name[: MAX_NAME_CHARS - 1] + "…"
    return name or "clip"


def decode_clip(clip: Clip, *, settings: Settings, workers: DecodeWorkers | None = None) -> np.ndarray:
    """Decode an untrusted upload in a sandboxed child → ``[n]`` mono float32 at 16 kHz."""
    limits = settings.limits
    shown = display_name(clip.filename)
    if not clip.data:
        raise InputError(f"the clip is empty: {shown} has 0 bytes; attach an audio file that contains sound")
    if len(clip.data) > limits.max_upload_bytes:
        raise InputError(
            f"the clip is larger than {limits.max_upload_bytes // (1 << 20)} MB; attach a shorter clip"
        )
    suffix = Path(clip.filename or "clip").suffix.lower()[:8] or ".bin"
    with tempfile.TemporaryDirectory(prefix="cadenza-upload-") as tmp:
        path = Path(tmp) / f"clip{suffix}"
        try:
            path.write_bytes(clip.data)
        except OSError as exc:
            raise StorageError(
                f"the server could not store the upload for decoding ({exc.strerror or exc}); "
                "try again later (an operator should check the free space of the temporary folder)"
            ) from None
        try:
            y = cadenza.decode_sandbox.decode_in_subprocess(  # looked up here: tests count the calls
                path=path,
                options=DecodeOptions(
                    sr=SR, timeout_s=limits.decode_timeout_s, max_seconds=limits.max_clip_seconds
                ),
                workers=workers,
            )
        except CadenzaError as exc:
            # The decoder only knows the temporary file; the person knows their own file's name.
            raise type(exc)(str(exc).replace(path.name, shown)) from None
    if y.size < limits.min_clip_seconds * SR:
        raise InputError(
            f"the clip is {y.size / SR:.1f} s long; attach at least {limits.min_clip_seconds:.0f} s of audio"
        )
    return y


#: The name :func:`store_passage` gives a passage; nothing else in the uploads folder is ours to read.
PASSAGE_NAME = re.compile(r"[0-9a-f]{32}\.npy")


def store_passage(settings: Settings, audio: np.ndarray) -> str:
    """Keep the query passage (float32 .npy, named by its hash) so follow-ups can reuse it."""
    data = np.ascontiguousarray(audio, dtype=np.float32)
    name = hashlib.sha256(data.tobytes()).hexdigest()[:32] + ".npy"
    folder = settings.paths.uploads
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        if not path.exists():
            # A private temporary name (two uploads of one clip may race); removed if the write fails.
            tmp = folder / f".{name}.{uuid.uuid4().hex}.tmp"
            try:
                with open(tmp, "wb") as f:
                    np.save(f, data)
                tmp.replace(path)
            finally:
                tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise StorageError(
            f"the server could not store the clip ({exc.strerror or exc}); "
            "try again later (an operator should check the free space of CADENZA_HOME)"
        ) from None
    return name


def load_passage(settings: Settings, name: str) -> np.ndarray:
    if not PASSAGE_NAME.fullmatch(name or ""):
        raise NotFound("the stored query clip has an invalid name")
    path = settings.paths.uploads / name
    if not path.is_file():
        raise NotFound("the query clip of this conversation is gone; attach it again")
    return np.load(path)


def find_track(db: Database, title: str) -> tuple[int, str, float]:
    """The library track best matching ``title``: (id, title, duration)."""
    with db.connection() as conn:
        row = conn.execute(
            "SELECT id, title, duration_s FROM tracks WHERE lower(title) = lower(%s) ORDER BY id LIMIT 1",
            (title,),
        ).fetchone()
        if row is None:
            row = conn.execute(
                "SELECT id, title, duration_s FROM tracks WHERE title ILIKE %s ORDER BY length(title), id LIMIT 1",
                ("%" + title.replace("%", r"\%").replace("_", r"\_") + "%",),
            ).fetchone()
    if row is None:
        raise InputError(f"no track titled {title!r} in the library; check the title on the Library page")
    return int(row[0]), str(row[1]), float(row[2])


def library_names(db: Database) -> tuple[list[str], list[str]]:
    """(composers, eras) the library's tracks name, each sorted."""
    with db.connection() as conn:
        composers = [
            r[0] for r in conn.execute("SELECT DISTINCT composer FROM tracks WHERE composer <> '' ORDER BY 1")
        ]
        eras = [r[0] for r in conn.execute("SELECT DISTINCT era FROM tracks WHERE era <> '' ORDER BY 1")]
    return composers, eras


def library_vocabulary(db: Database) -> tuple[list[str], list[str]]:
    """(composers, eras) for the follow-up parsers: the library's, and every era a listener may name."""
    composers, eras = library_names(db)
    return composers, sorted(set(eras) | set(followups.ERAS), key=str.lower)


def delete_conversation(svc: Services, conversation_id: uuid.UUID) -> None:
    """Delete a conversation, its kept query clips (cascade) and the stored passages only it used."""
    for name in conversations.delete(svc.db, conversation_id):
        if PASSAGE_NAME.fullmatch(name or ""):
            try:
                (svc.settings.paths.uploads / name).unlink(missing_ok=True)
            except OSError:  # the rows are gone; a leftover file is only disk space
                log.warning("could not remove the stored passage %s", name, exc_info=True)


def previous_search(svc: Services, turn: conversations.Turn) -> followups.PreviousSearch:
    assert turn.request is not None and turn.response is not None
    audio = load_passage(svc.settings, turn.audio_ref) if turn.audio_ref else None
    req = followups.request_from_json(turn.request, audio=audio)
    return followups.PreviousSearch(
        request=req, results=tuple(turn.response.get("results", [])), query=turn.response.get("query", {})
    )


def moment_chroma(
    db: Database, moments: list[tuple[int, float, float]]
) -> dict[tuple[int, float], np.ndarray]:
    """10-fps chroma ``[n, 12]`` of library moments (track_id, start, end), keyed by (track_id, start)."""
    out: dict[tuple[int, float], np.ndarray] = {}
    with db.connection() as conn:
        cache: dict[int, np.ndarray] = {}
        for track_id, start, end in moments:
            if track_id not in cache:
                cache[track_id] = track_chroma(conn, track_id)
            c = cache[track_id]
            a, b = int(round(start * 10)), int(round(end * 10))
            if c.size and b > a and a < len(c):
                out[(track_id, start)] = c[a:b]
    return out


def passage_chroma(audio: np.ndarray) -> np.ndarray:
    """The chroma the library stores, computed for a query passage: ``[n]`` → ``[frames, 12]``."""
    return acoustic_features(y=audio.astype(np.float32), sr=SR)[:, CHROMA].astype(np.float32)


@dataclass(frozen=True)
class Message:
    """One chat message as the page or the API sent it: text, and/or a clip or a library moment, with
    the settings that ride along (None = keep what the conversation has)."""

    conversation_id: uuid.UUID | None = None
    text: str = ""
    clip: Clip | None = None
    start_s: float | None = None  # which part of the clip
    k: int | None = None
    reference: MomentRef | None = None
    exclude_composers: tuple[str, ...] = ()
    listener_id: str = ""
    base_message_id: int | None = None  # the answer a follow-up refines (default: the last search)
    state: QueryState | None = None  # an edited query state: searched exactly
    route: str = "auto"
    diversity: float | None = None
    aspects: Aspects | None = None
    local_hour: float | None = None

    def apply_settings(self, req: SearchRequest) -> SearchRequest:
        """``req`` with the diversity and aspect weights this message sets."""
        if self.diversity is not None:
            req = replace(req, diversity=self.diversity)
        if self.aspects is not None:
            req = replace(req, aspects=self.aspects)
        return req


@dataclass
class TurnResult:
    conversation_id: uuid.UUID
    user_message_id: int
    turn: conversations.Turn
    parser: str | None  # "llm" | "rules" | None when no follow-up was parsed
    #: True when the message only took results out ("not #3"): ``turn`` is the earlier answer,
    #: refined in place, and ``note_id`` the short reply that says so.
    refined: bool = False
    note_id: int | None = None
    #: True when the message was not searched: ``note_id`` is the reply that says why (not
    #: understood, an ambiguous name, start over), ``turn`` the answer it was about (or None).
    refused: bool = False
