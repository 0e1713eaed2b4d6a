"""A/B over real HTTP: the uploaded clip is kept (MP3), played beside a match, and deleted with its
conversation; the A/B panel draws both waveforms with the matched regions marked."""

from __future__ import annotations

import re

from tests.helpers_app import clip_of_track, page_message


def _ask(client, **data) -> tuple[str, str]:
    r = client.post(
        "/chat/messages",
        files={"file": ("query.wav", clip_of_track(1, start=3.0, seconds=14.0), "audio/wav")},
        data={"k": "3", **data},
        headers={"HX-Request": "true"},
    )
    assert r.status_code == 200, r.text
    return r.headers["hx-push-url"].rsplit("/", 1)[1], r.text


def test_the_clip_is_kept_served_by_id_with_ranges_and_deleted_with_its_conversation(client, library):
    cid, html = _ask(client, start="2")
    src = re.search(r'class="player query-clip"[^>]*src="(/clips/[0-9a-f-]{36})"', html)
    assert src, "the answer plays the kept clip"
    whole = client.get(src.group(1))
    assert whole.status_code == 200 and whole.headers["content-type"] == "audio/mpeg"
    assert 20_000 < len(whole.content) <= 600_000  # 14 s at 48 kbit/s, well under the cap
    part = client.get(src.group(1), headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == whole.content[100:200]
    # A follow-up on the same passage plays the same clip.
    r = page_message(client, {"text": "only Baroque", "conversation_id": cid})
    assert src.group(1) in r.text
    # Only by id: a path or a made-up id is not found.
    assert client.get("/clips/..%2Fetc%2Fpasswd").status_code == 404
    assert client.get("/clips/00000000-0000-0000-0000-000000000000").status_code == 404
    # Deleting the conversation deletes its clip.
    assert client.delete(f"/api/conversations/{cid}").status_code == 204
    assert client.get(src.group(1)).status_code == 404
    assert client.get(f"/c/{cid}").status_code == 404
    assert client.delete(f"/api/conversations/{cid}").status_code == 404


def test_the_page_form_deletes_a_conversation(client, library):
    cid, html = _ask(client)
    src = re.search(r'src="(/clips/[0-9a-f-]{36})"', html).group(1)
    page = client.get(f"/c/{cid}").text
    assert f'action="/c/{cid}/delete"' in page
    r = client.post(f"/c/{cid}/delete", headers={"HX-Request": "true"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert client.get(src).status_code == 404


def test_the_ab_panel_has_both_waveforms_with_the_matched_regions(client, library):
    cid, html = _ask(client, start="2")
    mid = re.search(r'data-message="(\d+)"', html).group(1)
    assert f'hx-get="/c/{cid}/m/{mid}/ab/1"' in html
    card = html.split('data-rank="1"', 1)[1]
    m_start, m_end = (
        float(x) for x in re.search(r'data-start="([\d.]+)" data-end="([\d.]+)"', card).groups()
    )
    panel = client.get(f"/c/{cid}/m/{mid}/ab/1")
    assert panel.status_code == 200
    body = panel.text
    assert body.count("<svg") == 2 and body.count('class="cited"') == 2  # two waveforms, each region marked
    assert re.search(r'data-a-start="2\.0" data-a-end="12\.0"', body), body[:400]
    assert f'data-b-start="{m_start}" data-b-end="{m_end}"' in body
    assert re.search(r'class="ab-audio-a"[^>]*src="/clips/', body) and 'class="ab-audio-b"' in body
    assert 'class="ab-toggle"' in body and "<script" not in body and "style=" not in body
    assert client.get(f"/c/{cid}/m/{mid}/ab/99").status_code == 404


def test_a_moment_query_compares_with_the_library_moment(client, library):
    tid = library.ids["Study 2"]
    r = page_message(client, {"ref_track": str(tid), "ref_start": "6", "k": "2"})
    assert r.status_code == 200
    cid = r.headers["hx-push-url"].rsplit("/", 1)[1]
    mid = re.search(r'data-message="(\d+)"', r.text).group(1)
    body = client.get(f"/c/{cid}/m/{mid}/ab/1").text
    assert f'class="ab-audio-a" preload="none" src="/audio/{tid}"' in body
    assert 'data-a-start="6.0"' in body


def test_the_moment_map_of_an_answer_has_the_own_track_and_each_result(client, library):
    tid = library.ids["Study 3"]
    r = page_message(client, {"ref_track": str(tid), "ref_start": "8", "k": "3"})
    cid = r.headers["hx-push-url"].rsplit("/", 1)[1]
    mid = re.search(r'data-message="(\d+)"', r.text).group(1)
    assert f'hx-get="/c/{cid}/m/{mid}/map"' in r.text
    cards = [
        int(t) for t in re.findall(r'class="card[^"]*" id="[^"]+" data-rank="\d+" data-track="(\d+)"', r.text)
    ]
    body = client.get(f"/c/{cid}/m/{mid}/map").text
    rows = [int(t) for t in re.findall(r'class="map-row" data-track="(\d+)"', body)]
    assert rows == [tid, *cards]  # the query's own track first, then each result's
    assert "Where your passage recurs" in body and body.count('class="moment-strip"') == len(rows)
    assert body.count('class="best"') == len(rows) and "style=" not in body
    own_peaks = body.split('class="map-row"')[1]
    assert re.search(
        r'data-start="(?:6|8|10)\.0"', own_peaks
    )  # the passage itself is among its closest windows


def test_a_path_from_the_chat_is_a_playable_queue(client, library):
    cid, _ = _ask(client, k="3")
    r = page_message(client, {"text": "a path from #1 to #3 in 4 steps", "conversation_id": cid})
    assert r.status_code == 200, r.text
    assert 'class="msg assistant note path"' in r.text and "A path of 4 moments from #1" in r.text
    assert r.text.count('class="path-step') == 4 and 'class="path-play"' in r.text
    assert r.text.count("to the step before") == 3
    bad = page_message(client, {"text": "a path from #1 to #9", "conversation_id": cid})
    assert bad.status_code == 400 and "no #9" in bad.text
    api = client.post("/api/chat", json={"conversation_id": cid, "message": "a path from #3 to #1"})
    assert api.status_code == 200, api.text
    steps = api.json()["path"]["steps"]
    assert len(steps) == 5 and all(set(s) == {"track_id", "start", "end", "title", "likeness"} for s in steps)
