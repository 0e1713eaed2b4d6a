"""One chat turn: a message (+ an optional clip) → a SearchRequest → a stored answer.

:func:`run_turn` builds the request (a new clip, a
named moment "find moments like 1:23 of <title>", or a follow-up refining the last search), runs
the real search, and stores the turn; the explanation is generated afterwards (streamed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from assistant import clips, conversations, exclusions, followups, moment_phrases, querystate, rules
from assistant.path_reply import path_turn
from assistant.services import (
    SR,
    Message,
    Services,
    TurnResult,
    find_track,
    library_vocabulary,
    moment_chroma,
    passage_chroma,
    previous_search,
    store_passage,
)
from cadenza.errors import InputError, NotFound
from retrieval.filters import filter_sql
from retrieval.types import DEFAULT_K, Context, Filters, MomentRef, SearchRequest

log = logging.getLogger(__name__)


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


def build_request(svc: Services, msg: Message) -> Plan:
    """The request this message asks for, with the follow-up and the answer it refines, if any.

    Settings sent with the message (the page's variety control, the API's ``diversity`` and
    ``aspects``) apply to a new search, and to a follow-up's previous request *before* the
    follow-up, so "more variety" typed in the same message still moves them.
    """
    text = msg.text.strip()
    composers, eras = library_vocabulary(svc.db)
    extra_filters = Filters(exclude_composers=tuple(msg.exclude_composers))
    if msg.clip is not None:
        audio = svc.decode(msg.clip)
        req = msg.apply_settings(
            SearchRequest(
                audio=audio,
                start_s=msg.start_s,
                k=msg.k or DEFAULT_K,
                filters=extra_filters,
                listener_id=msg.listener_id,
                route=msg.route,
            )  # fmt: skip
        )
        if text:  # "only Baroque" typed with the clip
            fu = followups.parse_rules(text, composers=composers, eras=eras)
            fu = replace(fu, like=(), unlike=(), different_composer=False)
            req = followups.apply_followup(fu, followups.PreviousSearch(request=req))
            return Plan(req, fu, "rules", audio)
        return Plan(req, audio=audio)
    if msg.reference is not None:
        req = msg.apply_settings(
            SearchRequest(
                moments=(msg.reference,),
                k=msg.k or DEFAULT_K,
                filters=extra_filters,
                listener_id=msg.listener_id,
            )
        )
        return Plan(req)
    named = moment_phrases.parse_moments(text) if text else []
    if named:
        refs = []
        for seconds, title in named:
            track_id, _, duration = find_track(svc.db, title)
            if seconds >= duration:
                raise InputError(f"{title!r} is only {duration:.0f} s long; pick a time before its end")
            refs.append(MomentRef(track_id=track_id, start_s=seconds))
        req = SearchRequest(
            moments=tuple(dict.fromkeys(refs)),
            k=msg.k or DEFAULT_K,
            filters=Filters(
                exclude_tracks=tuple(dict.fromkeys(r.track_id for r in refs)),
                exclude_composers=tuple(msg.exclude_composers),
            ),
            listener_id=msg.listener_id,
        )
        return Plan(msg.apply_settings(req))
    if msg.conversation_id is not None and msg.base_message_id is not None:
        last: conversations.Turn | None = conversations.turn(svc.db, msg.conversation_id, msg.base_message_id)
        if last is not None and last.response is None:
            raise InputError(f"message {msg.base_message_id} has no search to refine")
    else:
        last = conversations.last_search(svc.db, msg.conversation_id) if msg.conversation_id else None
    if last is None:
        raise InputError(
            "attach a clip (or record one), or name a moment: 'find moments like 1:23 of <track title>'"
        )
    if not text and msg.state is None:
        raise InputError(
            "type what to change about the last answer, e.g. 'only Baroque' or 'like #2 but not #3'"
        )
    previous = previous_search(svc, last)
    previous = replace(previous, request=msg.apply_settings(previous.request))
    if msg.state is not None:  # the client edited the state: search exactly that
        req = querystate.apply_state(msg.state, previous.request)
        return Plan(
            replace(req, listener_id=msg.listener_id or req.listener_id),
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
    if msg.k:
        req = replace(req, k=msg.k)
    req = replace(req, listener_id=msg.listener_id or req.listener_id)
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


def run_turn(svc: Services, msg: Message, *, context: Context | None = None) -> TurnResult:
    """Build the request, search, and store the user message and the answer (not yet explained).

    ``context`` (the conversation's switches) and ``msg.local_hour`` (the listener's time of day) go
    into the request; a follow-up sent without a local time keeps its base answer's.
    Nothing is stored when the request is bad or the search fails, so errors leave no junk.
    """
    conversation_id = msg.conversation_id
    if conversation_id is not None and not conversations.exists(svc.db, conversation_id):
        raise NotFound(f"no conversation {conversation_id}; start a new one at /")
    ask = (
        moment_phrases.parse_path(msg.text)
        if msg.text and msg.clip is None and msg.reference is None and msg.state is None
        else None
    )
    if ask is not None:
        return path_turn(
            svc, conversation_id=conversation_id, text=msg.text, ask=ask, base_message_id=msg.base_message_id
        )
    plan = build_request(svc, msg)
    if plan.reply is not None:
        # Not searched: the message and a reply saying why; the last answer stays as it is.
        assert conversation_id is not None
        user_id = conversations.add_user_message(svc.db, conversation_id, msg.text)
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
        # "not #3": the same answer without #3 and one more pulled in (its k, whatever the results
        # selector says), not a new turn.
        return exclusions.exclude_in_place(
            svc, conversation_id=conversation_id, turn=plan.base, ranks=plan.followup.unlike,
            text=msg.text, parser=plan.parser,
        )  # fmt: skip
    req, parser, audio = plan.request, plan.parser, plan.audio
    if context is not None:
        req = replace(req, context=context)
    if msg.local_hour is not None:
        req = replace(req, local_hour=msg.local_hour)
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
        conversation_id = conversations.create(svc.db, listener_id=msg.listener_id)
    user_meta: dict[str, Any] = {}
    if msg.clip is not None:
        user_meta["clip_name"] = Path(msg.clip.filename or "clip").name[:120]
    shown = msg.text or (f"♪ {user_meta['clip_name']}" if msg.clip is not None else "")
    if msg.state is not None and not msg.text:
        shown = "Edited the search"
    if msg.reference is not None and not msg.text:
        shown = f"More like track {msg.reference.track_id} at {msg.reference.start_s:.0f} s"
    user_id = conversations.add_user_message(svc.db, conversation_id, shown, meta=user_meta)
    meta: dict[str, Any] = {"parser": parser, "same_passage": msg.clip is None and audio is not None}
    if plan.base is not None and plan.base.request is not None:
        replaced = querystate.changes(followups.request_from_json(plan.base.request), req)
        if replaced:
            meta["state_notes"] = replaced
    reason = empty_reason(svc, req, len(response.get("results") or []))
    if reason:
        meta["filter_reason"] = reason
    if plan.base is not None:
        # What the listener took out stays out (the request's filters carry it) and stays visible.
        excluded = exclusions.carried(plan.base, plan.followup, req)
        if excluded:
            meta["excluded"] = excluded
    if query_chroma is not None:
        meta["query_chroma"] = np.round(query_chroma, 3).tolist()
    if msg.clip is not None and audio is not None:
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
