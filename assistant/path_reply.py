"""A path asked for in the chat: "a path from #1 to #4" between two results of an answer, as a reply."""

from __future__ import annotations

import uuid

from assistant import conversations
from assistant.services import Services, TurnResult
from cadenza.errors import InputError
from retrieval.moment_path import moment_path


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
