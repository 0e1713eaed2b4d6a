"""The web app over real HTTP (uvicorn on a free port) against real PostgreSQL, with a small library
of synthesized tracks ingested by ``retrieval.ingest`` and searched by the real ``retrieval.search``."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from cadenza.db import Database
from cadenza.errors import InputError
from cadenza.fake_llm import Step
from cadenza.settings import LimitSettings, Settings
from cadenza.synth_audio import SR
from encoder.embed import Embedder
from retrieval.search import search
from retrieval.types import DEFAULT_K, MAX_K, MomentRef, SearchRequest
from tests.helpers_app import (
    app_with_llm,
    clip_of_track,
    page_message,
    running_app,
    wav_bytes,
)


@pytest.fixture(scope="module")
def app_settings(settings) -> Settings:
    # A small upload limit so the 413 path is cheap to reach.
    return dataclasses.replace(settings, limits=LimitSettings(max_upload_bytes=1_500_000))


# --- /api/search -------------------------------------------------------------------------------


def test_api_search_with_a_clip(client, library):
    r = client.post(
        "/api/search",
        files={"file": ("clip.wav", clip_of_track(0), "audio/wav")},
        data={"k": "3", "start": "1.0", "exclude_composer": ["Johannes Brahms"]},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"query", "results", "nothing_similar", "timings_ms"}
    assert 1 <= len(body["results"]) <= 3
    assert all(res["composer"] != "Johannes Brahms" for res in body["results"])
    assert body["query"]["start"] == pytest.approx(1.0, abs=0.2)
    assert [res["rank"] for res in body["results"]] == list(range(1, len(body["results"]) + 1))


def test_api_search_by_reference_matches_the_cli(client, library, app_settings):
    tid = library.ids["Study 2"]
    r = client.post("/api/search", json={"reference": {"track_id": tid, "start": 10.0}, "k": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["results"] and all(res["track_id"] != tid for res in body["results"])
    env = {
        **os.environ,
        "CADENZA_HOME": str(app_settings.paths.home),
        "CADENZA_DATABASE_URL": library.db.url,
    }
    out = subprocess.run(
        [sys.executable, "-m", "cadenza", "-q", "search", "--track", str(tid), "--at", "10", "--k", "4", "--json"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    cli = json.loads(out.stdout)
    strip = lambda d: {k: v for k, v in d.items() if k != "timings_ms"}  # noqa: E731
    # The same answer, except that the web shows each track's file name where the CLI prints its path.
    for res in cli["results"]:
        res["file"] = Path(res.pop("path")).name
    assert strip(cli) == strip(body)


@pytest.mark.parametrize(
    "kwargs, status, fragment",
    [
        ({"content": b"{nope", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
        ({"json": {"reference": {"track_id": 1}, "k": 0}}, 400, "k must be"),
        ({"json": {"k": 3}}, 400, "reference"),
        ({"json": {"reference": {"track_id": 987654, "start": 0}}}, 404, "no track"),
        ({"files": {"file": ("x.wav", b"this is not audio at all" * 50, "audio/wav")}}, 400, "decode"),
        ({"files": {"file": ("big.wav", b"\0" * 3_000_000, "audio/wav")}}, 413, "too large"),
    ],
    ids=["bad-json", "bad-k", "no-reference", "unknown-track", "not-audio", "too-large"],
)
def test_api_search_errors_are_clear(client, library, kwargs, status, fragment):
    r = client.post("/api/search", **kwargs)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]


def test_k_has_one_default_and_one_cap(client, library):
    """The page's selector starts at the default k; the API, the chat and search refuse past one cap."""
    assert f'<option value="{DEFAULT_K}" selected>' in client.get("/").text
    ref = {"track_id": library.ids["Study 2"], "start": 0}
    r = client.post("/api/search", json={"reference": ref, "k": MAX_K + 1})
    assert r.status_code == 400 and f"between 1 and {MAX_K}" in r.json()["error"]
    r = client.post("/api/chat", json={"reference": ref, "k": MAX_K + 1})
    assert r.status_code == 400 and f"between 1 and {MAX_K}" in r.json()["error"]
    with pytest.raises(InputError, match=f"between 1 and {MAX_K}"):
        search(
            db=library.db,
            embedder=Embedder.untrained(),
            request=SearchRequest(moments=(MomentRef(1, 0.0),), k=MAX_K + 1),
        )
    assert client.post("/api/search", json={"reference": ref, "k": MAX_K}).status_code == 200


def test_openapi_schema_lists_the_api(client):
    r = client.get("/schema/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/api/search" in paths and "/api/chat" in paths
    assert "/c/{conversation_id}" not in paths


# --- /api/chat ----------------------------------------------------------------------------------


def test_api_chat_clip_then_follow_ups(client, library):
    r = client.post("/api/chat", files={"file": ("clip.wav", clip_of_track(1), "audio/wav")}, data={"k": "2"})
    assert r.status_code == 200, r.text
    first = r.json()
    cid = first["conversation_id"]
    shown = {res["composer"] for res in first["response"]["results"]}
    assert first["response"]["results"] and first["explanation"]["used_llm"] is False
    assert "[1]" in first["explanation"]["markdown"]

    r = client.post(
        "/api/chat", json={"conversation_id": cid, "message": "more like this but a different composer"}
    )
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["parser"] == "rules" and second["followup"]["different_composer"] is True
    assert second["response"]["results"]
    assert not shown & {res["composer"] for res in second["response"]["results"]}

    r = client.post("/api/chat", json={"conversation_id": cid, "message": "like #1 but not #2"})
    assert r.status_code == 200, r.text
    third = r.json()
    minus_track = (
        second["response"]["results"][1]["track_id"] if len(second["response"]["results"]) > 1 else None
    )
    if minus_track is not None:
        assert all(res["track_id"] != minus_track for res in third["response"]["results"])
    assert third["request"]["moments"][0]["track_id"] == second["response"]["results"][0]["track_id"]

    page = client.get(f"/c/{cid}")
    assert page.status_code == 200
    assert page.text.count('class="msg user"') == 3 and "more like this but a different composer" in page.text
    assert f'href="/c/{cid}"' in client.get("/").text  # listed under the listener's recent conversations


def test_api_chat_named_moment_and_errors(client, library):
    r = client.post("/api/chat", json={"message": "find moments like 0:12 of Study 4", "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["request"]["moments"][0] == {"track_id": library.ids["Study 4"], "start_s": 12.0}
    assert all(res["track_id"] != library.ids["Study 4"] for res in body["response"]["results"])
    r = client.post("/api/chat", json={"message": "find moments like 0:12 of No Such Piece"})
    assert r.status_code == 400 and "no track titled" in r.json()["error"]
    r = client.post("/api/chat", json={"message": "only Baroque"})
    assert r.status_code == 400 and "attach a clip" in r.json()["error"]
    r = client.post("/api/chat", json={"conversation_id": "0" * 8, "message": "hi"})
    assert r.status_code == 404


def test_api_chat_with_an_llm(library, app_settings):
    with app_with_llm(app_settings, library, timeout_s=5, max_retries=0) as (fake, c):
        fake.script(Step.reply("Result [1] shares the chord colours of the query, and [99] is invented."))
        r = c.post("/api/chat", json={"message": "find moments like 0:05 of Study 0", "k": 2})
        assert r.status_code == 200, r.text
        expl = r.json()["explanation"]
        assert expl["used_llm"] and "[99]" not in expl["markdown"] and any("[99]" in n for n in expl["notes"])
        prompt = fake.requests[-1]["messages"][1]["content"]
        assert "Study" in prompt and "```json" in prompt and str(library.folder) not in prompt

        cid = r.json()["conversation_id"]
        fake.script(Step.tool({"only_eras": ["Romantic"]}), Step.error(500))
        r = c.post("/api/chat", json={"conversation_id": cid, "message": "something later, 19th century"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["parser"] == "llm" and body["followup"]["only_eras"] == ["Romantic"]
        assert {res["era"] for res in body["response"]["results"]} <= {"Romantic"}
        assert body["explanation"]["used_llm"] is False and "HTTP 500" in body["explanation"]["notice"]


# --- audio, plays, pages -------------------------------------------------------------------------


def test_audio_is_served_by_id_with_ranges(client, library):
    tid = library.ids["Study 3"]
    data = (library.folder / "track3.wav").read_bytes()
    full = client.get(f"/audio/{tid}")
    assert full.status_code == 200 and full.content == data and full.headers["accept-ranges"] == "bytes"
    part = client.get(f"/audio/{tid}", headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.content == data[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
    tail = client.get(f"/audio/{tid}", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    assert client.get(f"/audio/{tid}", headers={"Range": f"bytes={len(data) + 5}-"}).status_code == 416
    assert client.get("/audio/999999").status_code == 404
    assert client.get("/audio/..%2F..%2Fetc%2Fpasswd").status_code in (400, 404)


def test_plays_are_recorded(client, library):
    tid = library.ids["Study 5"]
    client.get("/")  # sets the listener cookie
    r = client.post("/plays", data={"track_id": str(tid)})
    assert r.status_code == 204
    listener = client.cookies.get("cadenza_listener")
    with library.db.connection() as conn:
        n = conn.execute(
            "SELECT count(*) FROM plays WHERE track_id = %s AND listener_id = %s", (tid, listener)
        ).fetchone()[0]
    assert n == 1
    assert client.post("/plays", data={"track_id": "999999"}).status_code == 404


def test_html_chat_turn_streams_its_explanation(client, library):
    r = client.post(
        "/chat/messages",
        files={"file": ("clip.wav", clip_of_track(2), "audio/wav")},
        data={"text": "", "k": "3"},
        headers={"HX-Request": "true"},
    )
    assert r.status_code == 200, r.text
    cid = r.headers["hx-push-url"].rsplit("/", 1)[1]
    assert 'hx-swap-oob="true"' in r.text and cid in r.text
    assert (
        'class="chroma-overlay"' in r.text and 'class="stretch"' in r.text
    )  # the aligned chroma overlay, agreeing stretch marked
    m = re.search(r'sse-connect="(/c/[^"]+/explain)"', r.text)
    assert m and 'sse-close="done"' in r.text
    assert "<script" not in r.text and "onclick" not in r.text
    events = []
    with client.stream("GET", m.group(1)) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        for line in s.iter_lines():
            if line.startswith("event:"):
                events.append(line.split(":", 1)[1].strip())
    assert events[-1] == "done" and "explanation" in events
    page = client.get(f"/c/{cid}")
    assert "sse-connect" not in page.text and 'class="cite"' in page.text  # stored, cited explanation


def test_htmx_errors_are_partials(client, library):
    r = page_message(client, {"text": "like #2"})
    assert r.status_code == 400 and r.text.startswith('<div class="error"') and "attach a clip" in r.text


def test_library_and_track_pages(client, library):
    r = client.get("/library", params={"composer": "Johannes Brahms"})
    assert r.status_code == 200 and "Study 4" in r.text and "Study 0" not in r.text
    assert "Study 1" in client.get("/library", params={"q": "study 1"}).text
    tid = library.ids["Study 0"]
    r = client.get(f"/tracks/{tid}")
    assert r.status_code == 200 and "<svg" in r.text and r.text.count('class="play-range"') >= 10
    assert client.get("/tracks/999999").status_code == 404


def test_database_down_is_503(app_settings, library):
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(
        "postgresql://nobody@127.0.0.1:1/none", min_size=0, max_size=1, open=True, timeout=1
    )
    dead = Database(url="postgresql://nobody@127.0.0.1:1/none", pool=pool, vector_version=(0, 6, 2))
    try:
        with running_app(app_settings, db=dead, embedder=library.embedder) as url:
            r = httpx.post(f"{url}/api/search", json={"reference": {"track_id": 1, "start": 0}}, timeout=30)
            assert r.status_code == 503 and "database" in r.json()["error"]
            r = httpx.get(f"{url}/library", timeout=30)
            assert r.status_code == 503 and "database is not reachable" in r.text
    finally:
        pool.close()


def test_not_this_refines_the_turn_it_was_clicked_on(client, library):
    r = client.post("/api/chat", files={"file": ("clip.wav", clip_of_track(3), "audio/wav")}, data={"k": "3"})
    assert r.status_code == 200, r.text
    first = r.json()
    cid, mid = first["conversation_id"], first["message_id"]
    client.post("/api/chat", json={"conversation_id": cid, "message": "only Romantic"})  # a later turn
    rejected = first["response"]["results"][0]["track_id"]
    r = page_message(
        client, {"text": "like this but not #1", "base_message": str(mid), "conversation_id": cid}
    )
    assert r.status_code == 200, r.text
    last = client.get(f"/c/{cid}").text.rsplit('<section class="msg assistant answer"', 1)[1]
    tracks = {int(t) for t in re.findall(r'data-track="(\d+)"', last)}
    assert tracks and rejected not in tracks


def test_llm_explanation_streams_and_contradictions_are_flagged_in_the_page(library, app_settings):
    with app_with_llm(app_settings, library, timeout_s=5, max_retries=0) as (fake, c):
        r = c.post(
            "/chat/messages",
            files={"file": ("clip.wav", clip_of_track(5), "audio/wav")},
            data={"k": "2"},
            headers={"HX-Request": "true"},
        )
        assert r.status_code == 200, r.text
        cid = r.headers["hx-push-url"].rsplit("/", 1)[1]
        stream_url = re.search(r'sse-connect="(/c/[^"]+/explain)"', r.text).group(1)
        fake.script(
            Step.reply(
                "The first match [1] is in the key of F# major at 300 BPM, a close cousin of the query; "
                "and [7] is <script>alert(1)</script> also nice."
            )
        )
        kinds, datas = [], []
        with c.stream("GET", stream_url) as s:
            for line in s.iter_lines():
                if line.startswith("event:"):
                    kinds.append(line.split(":", 1)[1].strip())
                elif line.startswith("data:"):
                    datas.append(line[5:])
        assert kinds.count("explanation") >= 4 and kinds[-1] == "done"  # it streamed in pieces
        final = "\n".join(datas)
        assert "does not match the measured" in final and 'class="flag contradiction"' in final
        assert "Removed citation [7]" in final and "<script" not in final
        page = c.get(f"/c/{cid}").text
        assert (
            'class="flag contradiction"' in page
            and "[7]" not in page.split('class="explanation"', 1)[1].split("</div>", 1)[0]
        )


def test_more_like_this_searches_from_the_card_moment(client, library):
    tid = library.ids["Study 1"]
    r = page_message(client, {"ref_track": str(tid), "ref_start": "6.0", "k": "3"})
    assert r.status_code == 200, r.text
    cid = r.headers["hx-push-url"].rsplit("/", 1)[1]
    assert "Study 1 0:06–0:16" in r.text  # the analysis names the reference moment
    tracks = {int(t) for t in re.findall(r'data-track="(\d+)"', r.text)}
    assert tracks and tid not in tracks
    turns = client.post("/api/chat", json={"conversation_id": cid, "message": "only Baroque"}).json()
    assert {res["era"] for res in turns["response"]["results"]} <= {"Baroque"}


def test_plain_form_posts_redirect_to_the_conversation(client, library):
    tid = library.ids["Study 5"]
    page = client.get(f"/tracks/{tid}").text
    assert 'class="find-similar"' in page
    r = client.post("/chat/messages", data={"ref_track": str(tid), "ref_start": "4.0"})
    assert r.status_code == 303
    location = r.headers["location"]
    assert re.fullmatch(r"/c/[0-9a-f-]{36}#m\d+", location)
    page = client.get(location.split("#")[0])
    assert page.status_code == 200 and "Study 5 0:04–0:14" in page.text


def test_a_silent_clip_says_why_nothing_is_shown(client, library):
    silence = wav_bytes(np.zeros(SR * 6, dtype=np.float32))
    r = client.post("/api/chat", files={"file": ("silence.wav", silence, "audio/wav")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["response"]["nothing_similar"] is True and body["response"]["results"] == []
    assert "silent" in body["explanation"]["markdown"]
    page = client.get(f"/c/{body['conversation_id']}").text
    assert "Nothing to show: the clip is silent" in page


# --- diversity and aspects in every entry point ---------------------------------------------------


def _plain_order(results: list[dict[str, Any]]) -> bool:
    return all(a["score"] >= b["score"] for a, b in zip(results, results[1:], strict=False))


def _distinct_after_same_passage(results: list[dict[str, Any]], n: int) -> bool:
    rest = [r["composer"] for r in results if r["match"] < 0.5][:n]
    return len(set(rest)) == len(rest) == n


def test_api_search_diversity_in_both_forms(client, library):
    clip = clip_of_track(0)
    got = {}
    for d in ("0", "1"):
        r = client.post(
            "/api/search", files={"file": ("c.wav", clip, "audio/wav")}, data={"k": "5", "diversity": d}
        )
        assert r.status_code == 200, r.text
        got[d] = r.json()
        assert got[d]["query"]["diversity"] == float(d)
    plain, spread = got["0"]["results"], got["1"]["results"]
    assert _plain_order(plain) and all(res["moved"] == 0 for res in plain)
    # Three composers in the library: at diversity 1 the first three results that are not the clip's
    # own passage are by three different composers.
    assert _distinct_after_same_passage(spread, 3)
    for res in plain + spread:
        assert 0.0 <= res["match"] <= 1.0 and 0.0 <= res["likeness"] <= 100.0
        assert set(res["aspects"]) == {"sound", "harmony", "rhythm", "melody"}
        assert "confidence" not in res
    for a, b in zip(
        spread, spread[1:], strict=False
    ):  # likeness agrees with the order unless moved (and said)
        assert a["likeness"] >= b["likeness"] or a["moved"] > 0 or b["moved"] < 0
        assert (a["moved"] == 0) == (a["moved_reason"] == "")

    tid = library.ids["Study 2"]
    for d in (0.0, 1.0):
        body = client.post(
            "/api/search", json={"reference": {"track_id": tid, "start": 10.0}, "k": 5, "diversity": d}
        ).json()
        assert body["query"]["diversity"] == d
        if d == 0.0:
            assert _plain_order(body["results"])
        else:
            assert _distinct_after_same_passage(body["results"], 3)
    sound_only = client.post(
        "/api/search",
        json={"reference": {"track_id": tid, "start": 10.0}, "k": 5, "aspects": {"harmony": 0, "melody": 0}},
    ).json()
    assert sound_only["query"]["aspects"] == {"sound": 1.0, "harmony": 0.0, "rhythm": 1.0, "melody": 0.0}


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"diversity": 2}, "diversity must be"),
        ({"diversity": "lots"}, "diversity must be"),
        ({"diversity": True}, "diversity must be"),
        ({"aspects": {"tempo": 1}}, "unknown aspect"),
        ({"aspects": {"sound": -1}}, "aspect weight 'sound'"),
        ({"aspects": [1, 2]}, "aspects must be an object"),
    ],
)
def test_api_search_rejects_bad_settings(client, library, body, fragment):
    r = client.post(
        "/api/search", json={"reference": {"track_id": library.ids["Study 2"], "start": 10.0}, **body}
    )
    assert r.status_code == 400 and fragment in r.json()["error"], r.text


def test_api_chat_diversity_is_used_and_kept_by_follow_ups(client, library):
    r = client.post(
        "/api/chat",
        files={"file": ("clip.wav", clip_of_track(0), "audio/wav")},
        data={"k": "5", "diversity": "1"},
    )
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["request"]["diversity"] == 1.0 and first["response"]["query"]["diversity"] == 1.0
    assert _distinct_after_same_passage(first["response"]["results"], 3)
    cid = first["conversation_id"]
    second = client.post("/api/chat", json={"conversation_id": cid, "message": "only Baroque"}).json()
    assert second["request"]["diversity"] == 1.0  # the follow-up refines the same settings
    third = client.post(
        "/api/chat",
        json={"conversation_id": cid, "message": "only Baroque", "diversity": 0, "aspects": {"sound": 2}},
    ).json()
    assert third["request"]["diversity"] == 0.0 and third["request"]["aspects"]["sound"] == 2.0
    assert _plain_order(third["response"]["results"])


def test_page_variety_control_reaches_the_search(client, library):
    page = client.get("/").text
    assert 'name="diversity"' in page and 'type="range"' in page
    r = page_message(
        client, {"ref_track": str(library.ids["Study 1"]), "ref_start": "6.0", "k": "5", "diversity": "0"}
    )
    assert r.status_code == 200, r.text
    assert "likeness" in r.text and "same passage" in r.text
    cid = r.headers["hx-push-url"].rsplit("/", 1)[1]
    turn = client.post("/api/chat", json={"conversation_id": cid, "message": "only Baroque"}).json()
    assert turn["request"]["diversity"] == 0.0
    assert re.search(r'name="diversity"[^>]*value="0.0"', client.get(f"/c/{cid}").text)


def test_cli_search_diversity_and_aspects(library, app_settings):
    env = {**os.environ, "CADENZA_HOME": str(app_settings.paths.home), "CADENZA_DATABASE_URL": library.db.url}
    tid = library.ids["Study 2"]
    base = [sys.executable, "-m", "cadenza", "-q", "search", "--track", str(tid), "--at", "10", "--k", "5"]
    outs = {}
    for d in ("0", "1"):
        out = subprocess.run(
            [*base, "--json", "--diversity", d, "--harmony", "0"], capture_output=True, text=True, env=env,
            timeout=120, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        outs[d] = json.loads(out.stdout)
        assert outs[d]["query"]["diversity"] == float(d) and outs[d]["query"]["aspects"]["harmony"] == 0.0
    assert _plain_order(outs["0"]["results"]) and _distinct_after_same_passage(outs["1"]["results"], 3)
    bad = subprocess.run([*base, "--diversity", "3"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "diversity must be" in bad.stderr and "Traceback" not in bad.stderr
    text = subprocess.run(base, capture_output=True, text=True, env=env, timeout=120, check=True).stdout
    assert "likeness" in text and "match" in text
