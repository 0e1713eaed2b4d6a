"""One chat turn: a message (+ an optional clip) → a SearchRequest → a stored answer.

The :class:`Services` bundle (settings, database, embedder, optional LLM) is built once at
start-up and injected into the controllers. :func:`run_turn` builds the request (a new clip, a
named moment "find moments like 1:23 of <title>", or a follow-up refining the last search), runs
the real search, and stores the turn; the explanation is generated afterwards (streamed).
"""

from __future__ import annotations

import hashlib
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

from assistant import conversations, followups, querystate, rules
from cadenza.audio import DecodeWorkers
from cadenza.db import Database
from cadenza.errors import CadenzaError, InputError, NotFound, StorageError
from cadenza.settings import Settings
from retrieval.types import Aspects, Context, Filters, MomentRef, SearchRequest, SearchResponse

log = logging.getLogger(__name__)

SR = 16_000
DEFAULT_K = 8


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
    embedder: Any
    llm: Any | None = None
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
        from retrieval.search import search

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
    import json

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
    from cadenza.audio import decode_in_subprocess

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
            y = decode_in_subprocess(
                path=path, sr=SR, timeout_s=limits.decode_timeout_s, max_seconds=limits.max_clip_seconds,
                workers=workers,
            )  # fmt: skip
        except CadenzaError as exc:
            # The decoder only knows the temporary file; the person knows their own file's name.
            raise type(exc)(str(exc).replace(path.name, shown)) from None
    if y.size < limits.min_clip_seconds * SR:
        raise InputError(
            f"the clip is {y.size / SR:.1f} s long; attach at least {limits.min_clip_seconds:.0f} s of audio"
        )
    return y


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
    if not re.fullmatch(r"[0-9a-f]{32}\.npy", name or ""):
        raise NotFound("the stored query clip has an invalid name")
    path = settings.paths.uploads / name
    if not path.is_file():
        raise NotFound("the query clip of this conversation is gone; attach it again")
    return np.load(path)


def parse_moment_text(text: str) -> tuple[float, str] | None:
    """ "find moments like 1:23 of Chorale 12" → (83.0, "Chorale 12"); the first named moment."""
    found = rules.parse_moments(text)
    return found[0] if found else None


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


def library_vocabulary(db: Database) -> tuple[list[str], list[str]]:
    """(composers, eras) present in the library, for the follow-up parsers."""
    with db.connection() as conn:
        composers = [
            r[0] for r in conn.execute("SELECT DISTINCT composer FROM tracks WHERE composer <> '' ORDER BY 1")
        ]
        eras = [r[0] for r in conn.execute("SELECT DISTINCT era FROM tracks WHERE era <> ''")]
    return composers, sorted(set(eras) | set(followups.ERAS), key=str.lower)


def _previous(svc: Services, turn: conversations.Turn) -> followups.PreviousSearch:
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
    from retrieval.store import track_chroma

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
    from encoder.features import CHROMA, acoustic_features

    return acoustic_features(y=audio.astype(np.float32), sr=SR)[:, CHROMA].astype(np.float32)


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


@dataclass(frozen=True)
class Setting:
    """Search settings sent with a message rather than typed: None = keep what the conversation has."""

    diversity: float | None = None
    aspects: Aspects | None = None

    def apply(self, req: SearchRequest) -> SearchRequest:
        if self.diversity is not None:
            req = replace(req, diversity=self.diversity)
        if self.aspects is not None:
            req = replace(req, aspects=self.aspects)
        return req


@dataclass
class Plan:
    """What a message asks for: the request, and for a follow-up what it said and which answer it refines."""

    request: SearchRequest
    followup: followups.FollowUp | None = None
    parser: str | None = None
    audio: np.ndarray | None = None
    base: conversations.Turn | None = None
    #: Set when the message is answered without a search: what the reply says.
    reply: str | None = None


def build_request(
    svc: Services,
    *,
    conversation_id: uuid.UUID | None,
    text: str,
    clip: Clip | None,
    start_s: float | None,
    k: int | None,
    reference: MomentRef | None = None,
    exclude_composers: tuple[str, ...] = (),
    listener_id: str = "",
    base_message_id: int | None = None,
    state: querystate.QueryState | None = None,
    route: str = "auto",
    settings: Setting | None = None,
) -> Plan:
    """The request this message asks for, with the follow-up and the answer it refines, if any.

    ``settings`` sent with the message (the page's variety control, the API's ``diversity`` and
    ``aspects``) apply to a new search, and to a follow-up's previous request *before* the
    follow-up, so "more variety" typed in the same message still moves them.
    """
    setting = settings or Setting()
    text = (text or "").strip()
    composers, eras = library_vocabulary(svc.db)
    extra_filters = Filters(exclude_composers=tuple(exclude_composers))
    if clip is not None:
        audio = svc.decode(clip)
        req = setting.apply(
            SearchRequest(
                audio=audio,
                start_s=start_s,
                k=k or DEFAULT_K,
                filters=extra_filters,
                listener_id=listener_id,
                route=route,
            )  # fmt: skip
        )
        if text:  # "only Baroque" typed with the clip
            fu = followups.parse_rules(text, composers=composers, eras=eras)
            fu = replace(fu, like=(), unlike=(), different_composer=False)
            req = followups.apply_followup(fu, followups.PreviousSearch(request=req))
            return Plan(req, fu, "rules", audio)
        return Plan(req, audio=audio)
    if reference is not None:
        req = setting.apply(
            SearchRequest(
                moments=(reference,), k=k or DEFAULT_K, filters=extra_filters, listener_id=listener_id
            )
        )
        return Plan(req)
    named = rules.parse_moments(text) if text else []
    if named:
        refs = []
        for seconds, title in named:
            track_id, _, duration = find_track(svc.db, title)
            if seconds >= duration:
                raise InputError(f"{title!r} is only {duration:.0f} s long; pick a time before its end")
            refs.append(MomentRef(track_id=track_id, start_s=seconds))
        req = SearchRequest(
            moments=tuple(dict.fromkeys(refs)),
            k=k or DEFAULT_K,
            filters=Filters(
                exclude_tracks=tuple(dict.fromkeys(r.track_id for r in refs)),
                exclude_composers=tuple(exclude_composers),
            ),
            listener_id=listener_id,
        )
        return Plan(setting.apply(req))
    if conversation_id is not None and base_message_id is not None:
        last: conversations.Turn | None = conversations.turn(svc.db, conversation_id, base_message_id)
        if last is not None and last.response is None:
            raise InputError(f"message {base_message_id} has no search to refine")
    else:
        last = conversations.last_search(svc.db, conversation_id) if conversation_id else None
    if last is None:
        raise InputError(
            "attach a clip (or record one), or name a moment: 'find moments like 1:23 of <track title>'"
        )
    if not text and state is None:
        raise InputError(
            "type what to change about the last answer, e.g. 'only Baroque' or 'like #2 but not #3'"
        )
    previous = _previous(svc, last)
    previous = replace(previous, request=setting.apply(previous.request))
    if state is not None:  # the client edited the state: search exactly that
        req = querystate.apply_state(state, previous.request)
        return Plan(
            replace(req, listener_id=listener_id or req.listener_id),
            parser="state",
            audio=req.audio,
            base=last,
        )
    if rules.START_OVER.search(text):
        return Plan(previous.request, base=last, reply=START_OVER_REPLY)
    unclear = rules.ambiguous_composers(text, composers)
    if unclear:
        asks = "; ".join(f"“{said}” could be {' or '.join(names)}" for said, names in unclear)
        return Plan(
            previous.request, base=last, reply=f"Which composer do you mean? {asks}. Write the full name."
        )
    n_results = len(previous.results)
    if svc.llm is not None:
        fu, parser = followups.parse_with_llm(
            text, llm=svc.llm, composers=composers, eras=eras, n_results=n_results
        )
    else:
        fu, parser = followups.parse_rules(text, composers=composers, eras=eras), "rules"
    if rules.not_understood(text, fu):
        return Plan(
            previous.request, fu, parser, base=last,
            reply=f"I did not understand “{text[:120]}”, so I did not search again. You can ask for: {rules.EXAMPLES}.",
        )  # fmt: skip
    req = followups.apply_followup(fu, previous)
    if k:
        req = replace(req, k=k)
    req = replace(req, listener_id=listener_id or req.listener_id)
    return Plan(req, fu, parser, req.audio, base=last)


START_OVER_REPLY = (
    "Starting over: attach a clip (or record one), or name a moment: “find moments like 0:30 of <track title>”. "
    "The answers above stay as they were."
)


def empty_reason(svc: Services, req: SearchRequest, n_results: int) -> str | None:
    """Why an answer with filters has fewer results than asked for, when the filters say why."""
    f = req.filters
    if n_results >= req.k or not f.active:
        return None
    why = querystate.contradiction(f)
    if why:
        return why
    from retrieval.search import filter_sql

    where, params = filter_sql(f, model_version=svc.embedder.model_version)
    with svc.db.connection() as conn:
        row = conn.execute(
            f"SELECT count(DISTINCT s.track_id) FROM segments s JOIN tracks t ON t.id = s.track_id WHERE {where}",
            params,
        ).fetchone()
    n = int(row[0]) if row else 0
    labels = [v for v in querystate.filter_labels(f).values() if v]
    what = "; ".join(labels) if labels else "tracks left out"
    if n == 0:
        return f"no track in the library matches the filters ({what})"
    if n <= n_results or (req.one_per_track and n <= req.k):
        return f"only {n} track{'s' if n != 1 else ''} match{'es' if n == 1 else ''} the filters ({what}); all shown"
    return None


def run_turn(
    svc: Services,
    *,
    conversation_id: uuid.UUID | None,
    text: str = "",
    clip: Clip | None = None,
    start_s: float | None = None,
    k: int | None = None,
    reference: MomentRef | None = None,
    exclude_composers: tuple[str, ...] = (),
    listener_id: str = "",
    base_message_id: int | None = None,
    state: querystate.QueryState | None = None,
    route: str = "auto",
    diversity: float | None = None,
    aspects: Aspects | None = None,
    context: Context | None = None,
    local_hour: float | None = None,
) -> TurnResult:
    """Build the request, search, and store the user message and the answer (not yet explained).

    ``context`` (the conversation's switches) and ``local_hour`` (the listener's time of day) go
    into the request; a follow-up sent without a local time keeps its base answer's.
    Nothing is stored when the request is bad or the search fails, so errors leave no junk.
    """
    if conversation_id is not None and not conversations.exists(svc.db, conversation_id):
        raise NotFound(f"no conversation {conversation_id}; start a new one at /")
    ask = rules.parse_path(text) if text and clip is None and reference is None and state is None else None
    if ask is not None:
        return path_turn(
            svc, conversation_id=conversation_id, text=text, ask=ask, base_message_id=base_message_id
        )
    plan = build_request(
        svc, conversation_id=conversation_id, text=text, clip=clip, start_s=start_s, k=k,
        reference=reference, exclude_composers=exclude_composers, listener_id=listener_id,
        base_message_id=base_message_id, state=state, route=route,
        settings=Setting(diversity=diversity, aspects=aspects),
    )  # fmt: skip
    if plan.reply is not None:
        # Not searched: the message and a reply saying why; the last answer stays as it is.
        assert conversation_id is not None
        user_id = conversations.add_user_message(svc.db, conversation_id, text)
        note_id = conversations.add_assistant_note(
            svc.db, conversation_id, plan.reply, meta={"parser": plan.parser, "refused": True}
        )
        note = conversations.turn(svc.db, conversation_id, note_id)
        return TurnResult(
            conversation_id=conversation_id, user_message_id=user_id, turn=plan.base or note, parser=plan.parser,
            note_id=note_id, refused=True,
        )  # fmt: skip
    if (
        conversation_id is not None
        and plan.base is not None
        and plan.followup
        and plan.followup.only_excludes
    ):
        from assistant import exclusions

        # "not #3": the same answer without #3 and one more pulled in (its k, whatever the results
        # selector says), not a new turn.
        return exclusions.exclude_in_place(
            svc, conversation_id=conversation_id, turn=plan.base, ranks=plan.followup.unlike,
            text=text, parser=plan.parser,
        )  # fmt: skip
    req, parser, audio = plan.request, plan.parser, plan.audio
    if context is not None:
        req = replace(req, context=context)
    if local_hour is not None:
        req = replace(req, local_hour=local_hour)
    fu_json = plan.followup.to_json() if plan.followup is not None else None
    response = svc.search_json(req)
    query = response.get("query") or {}
    audio_ref = None
    query_chroma: np.ndarray | None = None
    stored_req = req
    if audio is not None:
        # Keep only the passage that was searched, so follow-ups search the same 10 s.
        q_start = float(query.get("start", req.start_s or 0.0) or 0.0)
        q_end = float(query.get("end", q_start + req.duration_s) or q_start + req.duration_s)
        a, b = int(round(q_start * SR)), int(round(q_end * SR))
        passage = audio[a:b] if b > a and a < audio.size else audio[: int(req.duration_s * SR)]
        audio_ref = store_passage(svc.settings, passage)
        stored_req = replace(req, start_s=0.0, duration_s=min(req.duration_s, passage.size / SR))
        query_chroma = passage_chroma(passage)
    elif req.moments:
        m0 = req.moments[0]
        query_chroma = moment_chroma(svc.db, [(m0.track_id, m0.start_s, m0.start_s + 10.0)]).get(
            (m0.track_id, m0.start_s)
        )
    if conversation_id is None:
        conversation_id = conversations.create(svc.db, listener_id=listener_id)
    user_meta: dict[str, Any] = {}
    if clip is not None:
        user_meta["clip_name"] = Path(clip.filename or "clip").name[:120]
    shown = text or (f"♪ {user_meta['clip_name']}" if clip is not None else "")
    if state is not None and not text:
        shown = "Edited the search"
    if reference is not None and not text:
        shown = f"More like track {reference.track_id} at {reference.start_s:.0f} s"
    user_id = conversations.add_user_message(svc.db, conversation_id, shown, meta=user_meta)
    meta: dict[str, Any] = {"parser": parser, "same_passage": clip is None and audio is not None}
    if plan.base is not None and plan.base.request is not None:
        replaced = querystate.changes(followups.request_from_json(plan.base.request), req)
        if replaced:
            meta["state_notes"] = replaced
    reason = empty_reason(svc, req, len(response.get("results") or []))
    if reason:
        meta["filter_reason"] = reason
    if plan.base is not None:
        from assistant import exclusions

        # What the listener took out stays out (the request's filters carry it) and stays visible.
        excluded = exclusions.carried(plan.base, plan.followup, req)
        if excluded:
            meta["excluded"] = excluded
    if query_chroma is not None:
        meta["query_chroma"] = np.round(query_chroma, 3).tolist()
    if clip is not None and audio is not None:
        from assistant import clips

        # The upload itself, compressed, so the page can play it beside each match (A/B).
        kept = clips.keep(
            svc.db, conversation_id=conversation_id, audio=audio, sr=SR, start_s=q_start, end_s=q_end
        )
        if kept is not None:
            meta["clip_id"] = str(kept.id)
    elif audio is not None and plan.base is not None and plan.base.meta.get("clip_id"):
        meta["clip_id"] = plan.base.meta["clip_id"]  # a follow-up searches the same passage
    turn = conversations.add_search_turn(
        svc.db, conversation_id, request=followups.request_to_json(stored_req), response=response,
        followup=fu_json, audio_ref=audio_ref, meta=meta,
    )  # fmt: skip
    return TurnResult(conversation_id=conversation_id, user_message_id=user_id, turn=turn, parser=parser)


def path_turn(
    svc: Services,
    *,
    conversation_id: uuid.UUID | None,
    text: str,
    ask: tuple[int, int, int],
    base_message_id: int | None = None,
) -> TurnResult:
    """ "a path from #1 to #4": the moment path between two results of an answer, as a reply with a queue.

    Nothing is stored when the ranks are not in the answer or the path cannot be made.
    """
    from retrieval.moment_path import moment_path

    first, last, n = ask
    base = None
    if conversation_id is not None:
        base = (
            conversations.turn(svc.db, conversation_id, base_message_id)
            if base_message_id is not None
            else conversations.last_search(svc.db, conversation_id)
        )
    if conversation_id is None or base is None or base.response is None:
        raise InputError(
            "a path goes between two results of an answer: search first, then ask 'a path from #1 to #4'"
        )
    by_rank = {int(r["rank"]): r for r in base.response.get("results") or []}
    for rank in (first, last):
        if rank not in by_rank:
            raise InputError(
                f"the answer has no #{rank} (it has {len(by_rank)} results); pick two of its numbers"
            )
    if first == last:
        raise InputError("a path needs two different results, e.g. 'a path from #1 to #4'")
    a, b = by_rank[first], by_rank[last]
    steps = moment_path(
        db=svc.db, embedder=svc.embedder, start=(int(a["track_id"]), float(a["start"])),
        end=(int(b["track_id"]), float(b["start"])), steps=n,
    )  # fmt: skip
    user_id = conversations.add_user_message(svc.db, conversation_id, text)
    reply = (
        f"A path of {len(steps)} moments from #{first} ({a.get('title') or 'track ' + str(a['track_id'])}) "
        f"to #{last} ({b.get('title') or 'track ' + str(b['track_id'])}), each step close to the one before."
    )
    note_id = conversations.add_assistant_note(
        svc.db, conversation_id, reply,
        meta={"parser": "rules", "path": [s.to_json() for s in steps], "path_of": base.id, "path_ends": [first, last]},
    )  # fmt: skip
    note = conversations.turn(svc.db, conversation_id, note_id)
    return TurnResult(
        conversation_id=conversation_id, user_message_id=user_id, turn=note, parser="rules", note_id=note_id
    )


def record_play(db: Database, *, listener_id: str, track_id: int) -> None:
    with db.connection() as conn:
        if conn.execute("SELECT 1 FROM tracks WHERE id = %s", (track_id,)).fetchone() is None:
            raise NotFound(f"no track {track_id} in the library")
        conn.execute("INSERT INTO plays (listener_id, track_id) VALUES (%s, %s)", (listener_id, track_id))
        conn.commit()


def delete_conversation(svc: Services, conversation_id: uuid.UUID) -> None:
    """Delete a conversation, its kept query clips (cascade) and the stored passages only it used."""
    for name in conversations.delete(svc.db, conversation_id):
        if re.fullmatch(r"[0-9a-f]{32}\.npy", name or ""):
            try:
                (svc.settings.paths.uploads / name).unlink(missing_ok=True)
            except OSError:  # the rows are gone; a leftover file is only disk space
                log.warning("could not remove the stored passage %s", name, exc_info=True)
