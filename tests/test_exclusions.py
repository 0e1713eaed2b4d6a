"""Exclusion follow-ups ("not #2", "drop the first one", the card's "Not this") refine the answer they
name in place, over real HTTP against real PostgreSQL and the real search: the same message keeps its
id, the excluded track is gone and one more result is pulled in, later follow-ups keep it out and
list it, and "Put back" undoes it (the answer comes back exactly as it was).

Queries are named library moments, whose embedding is stored: the same request searches the same,
so "exactly as it was" can be asserted.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.helpers_app import TRACKS, Library, chat, page_message


def tracks(body: dict[str, Any]) -> list[int]:
    return [r["track_id"] for r in body["response"]["results"]]


def moments(body: dict[str, Any]) -> list[tuple[int, float, int]]:
    return [(r["track_id"], r["start"], r["rank"]) for r in body["response"]["results"]]


def answers_stored(library: Library, cid: str) -> int:
    with library.db.connection() as conn:
        return int(
            conn.execute(
                "SELECT count(*) FROM messages m JOIN queries q ON q.message_id = m.id WHERE m.conversation_id = %s",
                (cid,),
            ).fetchone()[0]
        )


def test_not_this_refines_the_answer_in_place_persists_and_can_be_put_back(client, library):
    query_track = library.ids["Study 4"]
    first = chat(client, message="find moments like 0:12 of Study 4", k=3)
    cid, mid = first["conversation_id"], first["message_id"]
    original = tracks(first)
    assert len(original) == 3 and query_track not in original

    # "not #2": the same answer (same message), without #2, one more pulled in, explained afresh.
    second = chat(client, conversation_id=cid, message="not #2")
    assert second["refined"] is True and second["message_id"] == mid
    out = original[1]
    refined = tracks(second)
    assert len(refined) == 3 and out not in refined and refined[0] == original[0]
    assert len(set(refined) - set(original)) == 1  # exactly one newcomer fills the gap
    assert [(e["track_id"], e["rank"]) for e in second["excluded"]] == [(out, 2)]
    assert out in second["request"]["filters"]["exclude_tracks"]
    assert "[1]" in second["explanation"]["markdown"]
    assert answers_stored(library, cid) == 1  # no new turn

    # "drop the first one": now only three tracks are left besides the query's own: exactly those.
    third = chat(client, conversation_id=cid, message="drop the first one")
    assert third["refined"] is True and third["message_id"] == mid
    gone = {out, original[0]}
    rest = set(library.ids.values()) - gone - {query_track}
    assert len(rest) == len(TRACKS) - 3 and set(tracks(third)) == rest
    assert {e["track_id"] for e in third["excluded"]} == gone

    # A later follow-up is a new turn that still leaves both out, and says so.
    later = chat(client, conversation_id=cid, message="same mood but slower")
    assert later["refined"] is False and later["message_id"] != mid
    assert tracks(later) and not set(tracks(later)) & gone
    assert {e["track_id"] for e in later["excluded"]} == gone
    assert answers_stored(library, cid) == 2

    # The page shows what is left out of each answer, with a way to undo it.
    page = client.get(f"/c/{cid}").text
    assert page.count('class="msg assistant answer"') == 2
    for msg in (mid, later["message_id"]):
        section = page.split(f'id="m{msg}"', 1)[1].split("</section>", 1)[0]
        left_out = re.findall(r'class="excluded-item" data-track="(\d+)"', section)
        assert {int(t) for t in left_out} == gone
        assert section.count(f'action="/c/{cid}/m/{msg}/put-back"') == 2
        cards = {int(t) for t in re.findall(r'data-track="(\d+)"\s+data-start', section)}
        assert cards and not cards & gone
    assert "not #2" in page and "Left #2" in page and "drop the first one" in page

    # Put back, one at a time: with both back the answer is exactly the original one.
    back = client.post(
        "/api/chat/put-back", json={"conversation_id": cid, "message_id": mid, "track_id": out}
    )
    assert back.status_code == 200, back.text
    assert [e["track_id"] for e in back.json()["excluded"]] == [original[0]]
    assert out not in back.json()["request"]["filters"]["exclude_tracks"]
    back = client.post(
        "/api/chat/put-back", json={"conversation_id": cid, "message_id": mid, "track_id": original[0]}
    )
    assert back.status_code == 200, back.text
    assert back.json()["excluded"] == [] and moments(back.json()) == moments(first)
    again = client.post(
        "/api/chat/put-back", json={"conversation_id": cid, "message_id": mid, "track_id": original[0]}
    )
    assert again.status_code == 400 and "nothing to put back" in again.json()["error"]
    # The later turn still leaves both out: putting them back there is its own decision.
    assert {
        e["track_id"] for e in chat(client, conversation_id=cid, message="something calmer")["excluded"]
    } == gone


def test_mixed_follow_ups_are_new_turns_and_bad_ranks_are_clear(client, library):
    first = chat(client, message="find moments like 0:05 of Study 0", k=3)
    cid, mid = first["conversation_id"], first["message_id"]
    r = client.post("/api/chat", json={"conversation_id": cid, "message": "not #7"})
    assert r.status_code == 400 and "#7" in r.json()["error"]
    assert answers_stored(library, cid) == 1  # nothing stored for the bad message
    # "like #1 but not #2" asks for more than a removal: a new search (moving away from #2).
    mixed = chat(client, conversation_id=cid, message="like #1 but not #2")
    assert mixed["refined"] is False and mixed["message_id"] != mid
    assert tracks(first)[1] not in tracks(mixed)
    assert [e["track_id"] for e in mixed["excluded"]] == [tracks(first)[1]]


def test_the_not_this_button_swaps_the_refined_answer_in_place(client, library):
    r = page_message(client, {"text": "find moments like 0:10 of Study 2", "k": "3"})
    assert r.status_code == 200, r.text
    cid = r.headers["hx-push-url"].rsplit("/", 1)[1]
    mid = int(re.findall(r'<section class="msg assistant answer" id="m(\d+)"', r.text)[-1])
    shown = [int(t) for t in re.findall(r'data-track="(\d+)"\s+data-start', r.text)]
    # The card's button, as the page sends it (hx-vals + the conversation id).
    button = re.search(r'class="not-this"[^>]*hx-vals=\'([^\']+)\'', r.text.split('data-rank="3"', 1)[1])
    assert button and '"not #3"' in button.group(1) and f'"base_message": "{mid}"' in button.group(1)
    r = page_message(client, {"text": "not #3", "base_message": str(mid), "conversation_id": cid, "k": "8"})
    assert r.status_code == 200, r.text
    # Appended: the message and the reply; swapped out of band: the answer itself, re-explained.
    assert '<div class="msg user"' in r.text and "Left #3" in r.text and f'href="#m{mid}"' in r.text
    section = r.text.split(f'id="m{mid}"', 1)[1].split("</section>", 1)[0]
    assert section.startswith(f' data-message="{mid}" hx-swap-oob="true"')
    cards = [int(t) for t in re.findall(r'data-track="(\d+)"\s+data-start', section)]
    assert len(cards) == 3 and shown[2] not in cards  # k stays 3 (the selector's 8 is for new searches)
    assert "sse-connect" in section and 'class="excluded-item"' in section
    # "Put back" (htmx): the answer comes back without the exclusion.
    r = client.post(
        f"/c/{cid}/m/{mid}/put-back", data={"track_id": str(shown[2])}, headers={"HX-Request": "true"}
    )
    assert r.status_code == 200, r.text
    assert [int(t) for t in re.findall(r'data-track="(\d+)"\s+data-start', r.text)] == shown
    assert 'class="excluded"' not in r.text


@pytest.mark.browser
def test_not_this_and_put_back_in_the_browser(base_url):
    """One real browser check: htmx swaps the refined answer in place and "Put back" restores it."""
    from playwright.sync_api import sync_playwright

    from tests.helpers_app import CHROMIUM_ARGS, wait_until

    cards_js = "Array.from(document.querySelectorAll('section.answer .card')).map(c => +c.dataset.track)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(base_url=base_url)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto("/")
            page.select_option("#k", "3")
            page.fill("#message", "find moments like 0:08 of Study 5")
            page.click("#send")
            wait_until(page, "document.querySelectorAll('section.answer .card').length === 3")
            shown = page.evaluate(cards_js)
            page.click("section.answer .card[data-rank='2'] .not-this")
            wait_until(page, "document.querySelector('section.answer .excluded-item') !== null")
            wait_until(page, "document.querySelectorAll('section.answer .card').length === 3")
            assert page.locator("section.answer").count() == 1  # refined in place, not a new answer
            refined = page.evaluate(cards_js)
            assert shown[1] not in refined and refined[0] == shown[0]
            assert page.locator(".msg.note").inner_text().startswith("Left #2")
            assert int(page.get_attribute("section.answer .excluded-item", "data-track")) == shown[1]
            page.click("section.answer .put-back .undo")
            wait_until(page, "document.querySelector('section.answer .excluded') === null")
            assert page.evaluate(cards_js) == shown
            wait_until(page, "document.querySelector('section.answer .explanation a.cite') !== null")
            assert errors == [], errors
        finally:
            browser.close()
