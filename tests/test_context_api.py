"""Listening context over real HTTP and in a real browser: each switch (time of day, history, mood)
changes what the API and the page report and rank, and switching one off gives exactly the ranking
without it. A small library of six synthesized tracks, real PostgreSQL, the real search."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.helpers_app import (
    CHROMIUM_ARGS,
    Library,
    attach_clip,
    clip_of_track,
    wait_until,
)

OFF = {"time_of_day": False, "history": False, "mood": False}


def _search(listener: httpx.Client, library: Library, **body) -> dict:
    ref = {"track_id": library.ids["Study 0"], "start": 4.0}
    r = listener.post("/api/search", json={"reference": ref, "k": 5, **body})
    assert r.status_code == 200, r.text
    return r.json()


def _signal(resp: dict, name: str) -> dict:
    return next(s for s in resp["query"]["context"]["signals"] if s["signal"] == name)


def _ranking(resp: dict) -> list[tuple[int, float]]:
    return [(r["segment_id"], r["score"]) for r in resp["results"]]


def test_time_of_day_switch(listener, library):
    night = _search(listener, library, local_time="02:30")
    row = _signal(night, "time_of_day")
    assert row["on"] and row["applied"] and row["day_part"] == "night"
    assert row["text"] == "night (02:30): quiet, calm moments favoured"
    assert all("time_of_day" in r["components"] for r in night["results"])
    assert night["query"]["context"]["local_time"] == "02:30"

    off = _search(listener, library, local_time="02:30", context={"time_of_day": False})
    row = _signal(off, "time_of_day")
    assert not row["on"] and not row["applied"] and row["text"] == "time of day: off"
    assert not any("time_of_day" in r["components"] for r in off["results"])
    # Off is exactly the ranking of a search that never had a local time.
    assert _ranking(off) == _ranking(_search(listener, library))
    assert _ranking(off) != _ranking(night)  # the term changed the scores

    afternoon = _search(listener, library, local_time="2026-12-03T14:05:00+09:00")
    assert _signal(afternoon, "time_of_day")["day_part"] == "afternoon"


def test_the_local_time_comes_from_the_headers_too(listener, library):
    zone = "Pacific/Kiritimati"  # UTC+14: rarely the server's own zone
    ref = {"track_id": library.ids["Study 0"], "start": 4.0}
    r = listener.post("/api/search", json={"reference": ref, "k": 3}, headers={"X-Timezone": zone})
    assert r.status_code == 200, r.text
    shown = r.json()["query"]["context"]["local_time"]
    now = datetime.now(UTC).astimezone(ZoneInfo(zone))
    gap = abs(int(shown[:2]) * 60 + int(shown[3:]) - (now.hour * 60 + now.minute))
    assert min(gap, 1440 - gap) <= 2, (shown, now)
    r = listener.post("/api/search", json={"reference": ref, "k": 3}, headers={"X-Local-Time": "07:15"})
    assert _signal(r.json(), "time_of_day")["text"].startswith("morning (07:15)")


@pytest.mark.parametrize(
    ("body", "headers", "fragment"),
    [
        ({"context": {"weather": True}}, {}, "unknown context signal"),
        ({"context": {"mood": "no"}}, {}, "context.mood must be true or false"),
        ({"context": ["time_of_day"]}, {}, "context must be an object"),
        ({"local_time": "25:99"}, {}, "not a time of day"),
        ({}, {"X-Timezone": "Mars/Olympus_Mons"}, "not a time zone name"),
        ({}, {"X-Timezone": "../../etc/passwd"}, "not a time zone name"),
    ],
)
def test_bad_context_input_is_a_clear_400(listener, library, body, headers, fragment):
    ref = {"track_id": library.ids["Study 0"], "start": 4.0}
    r = listener.post("/api/search", json={"reference": ref, **body}, headers=headers)
    assert r.status_code == 400 and fragment in r.json()["error"], r.text


def test_history_switch(listener, library):
    listener.get("/")  # the listener cookie
    free = _search(listener, library)
    assert _signal(free, "history")["text"] == "listening history: nothing played yet"
    # Play the composers of the two best results: they move down.
    played = {r["composer"] for r in free["results"][:2]}
    for r in free["results"][:2]:
        assert listener.post("/plays", data={"track_id": str(r["track_id"])}).status_code == 204
    on = _search(listener, library)
    row = _signal(on, "history")
    assert row["applied"] and all(r["components"]["discovery"] == float(r["composer"] not in played)
                                  for r in on["results"])  # fmt: skip
    assert "you have played" in row["text"] and row["weight"] > 0
    assert _ranking(on) != _ranking(free)
    off = _search(listener, library, context={"history": False})
    assert (
        not _signal(off, "history")["applied"] and _signal(off, "history")["text"] == "listening history: off"
    )
    assert _ranking(off) == _ranking(free)
    assert not any("discovery" in r["components"] for r in off["results"])


def test_mood_switch_kept_for_the_conversation(listener, library):
    r = listener.post(
        "/api/chat", files={"file": ("clip.wav", clip_of_track(2), "audio/wav")},
        data={"k": "4", "local_time": "23:00"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    cid = r.json()["conversation_id"]
    assert _signal(r.json()["response"], "mood")["text"].startswith("mood: none asked for")
    r = listener.post("/api/chat", json={"conversation_id": cid, "message": "calmer"})
    assert r.status_code == 200, r.text
    calmer = r.json()
    row = _signal(calmer["response"], "mood")
    assert row["applied"] and row["text"].startswith("mood you asked for")
    assert all("mood" in res["components"] for res in calmer["response"]["results"])
    # The follow-up kept the answer's local time (none was sent with it).
    assert _signal(calmer["response"], "time_of_day")["day_part"] == "late evening"

    # Switch mood off for the conversation: the answer is ranked again in place, without it.
    r = listener.post(
        "/api/chat/context",
        json={"conversation_id": cid, "message_id": calmer["message_id"], "context": {"mood": False}},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["message_id"] == calmer["message_id"] and body["refined"] is True
    assert not _signal(body["response"], "mood")["on"]
    assert not any("mood" in res["components"] for res in body["response"]["results"])
    assert body["request"]["context"] == {"time_of_day": True, "history": True, "mood": False}
    # Without the mood term the scores (and here the order) are those of the plain search again.
    assert _ranking(body["response"]) != _ranking(calmer["response"])

    # Later messages of the conversation keep it off; the API can set the others per message.
    r = listener.post("/api/chat", json={"conversation_id": cid, "message": "only Classical", "context": OFF})
    assert r.status_code == 200, r.text
    later = r.json()
    assert [s["on"] for s in later["response"]["query"]["context"]["signals"]] == [False, False, False]
    assert not any(s["applied"] for s in later["response"]["query"]["context"]["signals"])

    r = listener.post("/api/chat/context", json={"conversation_id": cid, "message_id": calmer["message_id"],
                                               "context": {}})  # fmt: skip
    assert r.status_code == 400 and "no signal" in r.json()["error"]
    r = listener.post("/api/chat/context", json={"conversation_id": cid, "message_id": "x", "context": {}})
    assert r.status_code == 400


def test_the_page_toggle_reranks_the_answer_in_place(listener, library):
    r = listener.post(
        "/chat/messages", files={"file": ("clip.wav", clip_of_track(4), "audio/wav")},
        data={"k": "3"}, headers={"HX-Request": "true", "X-Local-Time": "08:10"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert "morning (08:10): brighter, lighter moments favoured" in r.text
    assert 'data-signal="time_of_day" data-on="1" data-applied="1"' in r.text
    assert "time-of-day fit" in r.text.split('class="cards"')[1]
    cid = r.headers["HX-Push-Url"].rsplit("/", 1)[1]
    mid = int(r.text.split('data-message="')[1].split('"')[0])
    r = listener.post(
        f"/c/{cid}/m/{mid}/context", data={"signal": "time_of_day", "on": "0"}, headers={"HX-Request": "true"}
    )
    assert r.status_code == 200, r.text
    assert "time of day: off" in r.text and 'data-signal="time_of_day" data-on="0"' in r.text
    assert "Turn on" in r.text and "time-of-day fit" not in r.text.split('class="cards"')[1]
    r = listener.post(f"/c/{cid}/m/{mid}/context", data={"signal": "time_of_day", "on": "1"},
                    headers={"HX-Request": "true"})  # fmt: skip
    assert "morning (08:10)" in r.text  # the answer's own local time, not the server's clock
    r = listener.post(f"/c/{cid}/m/{mid}/context", data={"signal": "weather", "on": "0"},
                    headers={"HX-Request": "true"})  # fmt: skip
    assert r.status_code == 400


@pytest.mark.browser
def test_the_context_line_and_its_toggles_in_a_browser(base_url, tmp_path):
    from playwright.sync_api import sync_playwright

    clip = tmp_path / "query.wav"
    clip.write_bytes(clip_of_track(3, start=4.0, seconds=12.0))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            ctx = browser.new_context(base_url=base_url, timezone_id="Asia/Tokyo")
            page = ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # 14:30 UTC is 23:30 in Tokyo: the page must send the listener's local time, not UTC.
            page.clock.set_fixed_time(datetime(2026, 12, 3, 14, 30, tzinfo=UTC))
            attach_clip(page, "/", clip, k="3")
            page.click("#send")
            answer = page.locator("section.answer").first
            answer.locator(".card").first.wait_for()
            line = answer.locator(".context")
            assert "late evening (23:30): calmer, softer moments favoured" in line.inner_text()
            tod = answer.locator('.context-switch[data-signal="time_of_day"]')
            assert tod.get_attribute("data-on") == "1" and tod.get_attribute("data-applied") == "1"
            assert answer.locator(".details dt", has_text="time-of-day fit").count() == 3

            tod.locator("button").click()
            wait_until(
                page,
                "document.querySelector('section.answer .context-switch[data-signal=\"time_of_day\"]')"
                ".dataset.on === '0'",
            )
            answer = page.locator("section.answer").first
            assert "time of day: off" in answer.locator(".context").inner_text()
            assert answer.locator(".details dt", has_text="time-of-day fit").count() == 0
            assert (
                answer.locator('.context-switch[data-signal="time_of_day"] button').inner_text() == "Turn on"
            )

            # Off for the conversation: the next message ranks without it too.
            page.fill("#message", "only Romantic")
            page.click("#send")
            second = page.locator("section.answer").nth(1)
            second.locator(".context").wait_for()
            assert "time of day: off" in second.locator(".context").inner_text()
            assert errors == [], errors
        finally:
            browser.close()


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 5000 + b"]" * 5000,
        b'{"conversation_id": "x\\u0000", "message_id": 1, "context": {"mood": false}}',
        b'{"conversation_id": "00000000-0000-0000-0000-000000000000", "message_id": 1, "context": {"mood": "off"}}',
        b"{nope",
    ],
    ids=["nested", "nul", "not-a-bool", "not-json"],
)
def test_the_context_route_answers_hostile_bodies_with_a_4xx(listener, library, body):
    r = listener.post("/api/chat/context", content=body, headers={"content-type": "application/json"})
    assert r.status_code in (400, 404) and r.json()["error"], r.text


def test_a_nul_in_the_local_time_is_a_400(listener, library):
    ref = {"track_id": library.ids["Study 0"], "start": 4.0}
    r = listener.post("/api/search", json={"reference": ref, "local_time": "12:00\x00"})
    assert r.status_code == 400 and "not a time of day" in r.json()["error"]
