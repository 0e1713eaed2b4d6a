"""Second hardening round, one test per finding: input no lower layer can take is a clear 4xx (never a
500), messages name what the person sent, and JSON answers never carry a server path.

Findings (issue 20): a NUL bound for PostgreSQL, JSON nested past the recursion limit and non-UTF-8
multipart fields were unlogged 500s; a NUL in a static path was a 500; ``duration=0`` was read as
"unset", ``k=true`` and ``track_id=1.9`` were accepted; an empty upload got "attach the clip"; decoder
messages named the server's temporary file; a full temporary folder was "the decoder crashed"; a
5,000-character file name got "Request Entity Too Large"; ``/healthz`` answered HTML on 503; ``/schema``
was blank under our CSP; a removed track's card suggested a shell command; a server left on an old
model after a reindex answered "nothing similar"; results carried the server path of each track.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any

import httpx
import pytest

from tests.helpers_app import clip_of_track, free_port, running_app


def error_of(r: httpx.Response, status: int, *, kind: str) -> str:
    """The one-line message of an error answer of ``kind`` ("json" or "html")."""
    assert r.status_code == status, f"HTTP {r.status_code} {r.text[:300]}"
    ctype = r.headers["content-type"]
    if kind == "json":
        assert ctype.startswith("application/json"), ctype
        message = str(r.json()["error"])
    else:
        assert ctype.startswith("text/html"), ctype
        message = r.text
    assert "Traceback" not in message and "Error:" not in message, message
    return message


HX = {"HX-Request": "true"}


# --- 1. input the lower layers cannot take -------------------------------------------------------------


def test_nul_characters_are_a_clear_400_everywhere(client, library):
    assert "NUL" in error_of(client.get("/library", params={"q": "a\x00b"}), 400, kind="html")
    r = client.post("/api/chat", json={"message": "find moments like 0:05 of Stu\x00dy 1"})
    assert "NUL" in error_of(r, 400, kind="json")
    r = client.post("/api/chat", files={"file": ("clip.wav", clip_of_track(0), "audio/wav")}, data={"k": "2"})
    cid = r.json()["conversation_id"]
    r = client.post("/api/chat", json={"message": "only Bar\x00oque", "conversation_id": cid})
    assert "NUL" in error_of(r, 400, kind="json")
    r = client.post(
        "/api/search",
        json={"reference": {"track_id": library.ids["Study 0"]}, "filters": {"composers": ["Bach\x00"]}},
    )
    assert "NUL" in error_of(r, 400, kind="json")
    r = client.post("/chat/messages", data={"text": "find moments like 0:05 of Stu\x00dy 1"}, headers=HX)
    assert "NUL" in error_of(r, 400, kind="html")


@pytest.mark.parametrize("path", ["/api/search", "/api/chat", "/api/chat/put-back"])
def test_deeply_nested_json_is_a_400(client, path):
    body = "[" * 5000 + "]" * 5000
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert "nested" in error_of(r, 400, kind="json")


def test_non_utf8_form_fields_are_a_400_also_inside_the_csrf_check(client):
    # Built by hand: httpx encodes str fields itself, and these bytes are the point.
    boundary = "cadenzaboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="k"\r\n\r\n'.encode()
        + b"\xff\xfe"
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    r = client.post("/api/search", content=body, headers=headers)
    assert "UTF-8" in error_of(r, 400, kind="json")
    r = client.post("/chat/messages", content=body, headers={**headers, **HX})
    assert "UTF-8" in error_of(r, 400, kind="html")


def test_nul_in_a_static_path_is_not_found(client):
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/app.js%00").status_code == 404
    assert client.get("/static/app%00.js").status_code == 404


def test_numbers_are_numbers(client, library):
    clip = {"file": ("clip.wav", clip_of_track(0), "audio/wav")}
    assert "duration" in error_of(
        client.post("/api/search", files=clip, data={"duration": "0"}), 400, kind="json"
    )
    ref = {"track_id": library.ids["Study 0"], "start": 4.0}
    assert "k" in error_of(client.post("/api/search", json={"reference": ref, "k": True}), 400, kind="json")
    assert "k" in error_of(client.post("/api/chat", json={"message": "x", "k": True}), 400, kind="json")
    r = client.post("/api/search", json={"reference": {**ref, "track_id": ref["track_id"] + 0.9}})
    assert "track_id" in error_of(r, 400, kind="json")
    r = client.post("/api/search", json={"reference": {**ref, "start": True}})
    assert "start" in error_of(r, 400, kind="json")
    r = client.post("/api/chat", json={"message": "x", "start": "soon"})
    assert "start" in error_of(r, 400, kind="json")
    # What is still fine stays fine.
    assert client.post("/api/search", json={"reference": ref, "k": 2}).status_code == 200


def test_an_empty_upload_says_the_clip_is_empty_and_names_it(client):
    r = client.post("/api/search", files={"file": ("my silence.wav", b"", "audio/wav")})
    message = error_of(r, 400, kind="json")
    assert "the clip is empty" in message and "my silence.wav" in message
    r = client.post("/chat/messages", files={"file": ("my silence.wav", b"", "audio/wav")}, headers=HX)
    assert "the clip is empty" in error_of(r, 400, kind="html")


def test_messages_name_the_users_file_not_the_servers_temporary_file(client):
    r = client.post(
        "/api/search", files={"file": ("Bad Take 3.mp3", b"this is not audio" * 50, "audio/mpeg")}
    )
    message = error_of(r, 400, kind="json")
    assert "Bad Take 3.mp3" in message and "clip.mp3" not in message


class _FullTempDir:
    """A private temporary folder whose decode output lands on ``/dev/full`` (every write: ENOSPC)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.name = tempfile.mkdtemp(prefix="cadenza-full-")
        os.symlink("/dev/full", os.path.join(self.name, "audio.npy"))

    def __enter__(self) -> str:
        return self.name

    def __exit__(self, *exc: Any) -> None:
        import shutil

        shutil.rmtree(self.name, ignore_errors=True)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_temporary_folder_during_decoding_is_507(client, monkeypatch):
    import cadenza.decode_sandbox

    monkeypatch.setattr(cadenza.decode_sandbox.tempfile, "TemporaryDirectory", _FullTempDir)
    r = client.post("/api/search", files={"file": ("take.wav", clip_of_track(1), "audio/wav")})
    message = error_of(r, 507, kind="json")
    assert "no room" in message and "crashed" not in message


def test_a_5000_character_file_name_is_a_clear_400(client):
    r = client.post("/api/search", files={"file": ("a" * 5000 + ".wav", clip_of_track(0), "audio/wav")})
    message = error_of(r, 400, kind="json")
    assert "shorter name" in message and "Entity" not in message


# --- 2. what the server says about itself ---------------------------------------------------------------


def test_healthz_answers_json_when_the_database_is_down(app_settings, library):
    from psycopg_pool import ConnectionPool

    from cadenza.db import Database

    # A real pool against a port where nothing listens: every connection attempt fails.
    url = f"postgresql://cadenza@127.0.0.1:{free_port()}/cadenza"
    pool = ConnectionPool(url, min_size=0, max_size=1, timeout=1.0, kwargs={"connect_timeout": 1}, open=False)
    pool.open(wait=False)
    down = Database(url=url, pool=pool, vector_version=(0, 8))
    try:
        with running_app(app_settings, db=down, embedder=library.embedder) as url:
            r = httpx.get(url + "/healthz", timeout=30)
            assert "database" in error_of(r, 503, kind="json")
            assert int(r.headers["retry-after"]) > 0
    finally:
        pool.close()
    with running_app(app_settings, db=library.db, embedder=library.embedder) as url:
        assert httpx.get(url + "/healthz", timeout=30).json() == {"status": "ok"}


def test_the_schema_page_works_under_our_csp(client):
    r = client.get("/schema")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    page = r.text.lower()
    # Nothing the CSP would block: no script at all, no inline style, nothing from another origin.
    assert "<script" not in page and "style=" not in page and "<style" not in page and "https://" not in page
    assert "/api/search" in r.text and "/api/chat" in r.text and "/schema/openapi.json" in r.text
    assert client.get("/schema/openapi.json").json()["paths"]["/api/search"]


def test_a_removed_tracks_card_does_not_suggest_a_command(client, library, tmp_path):
    from cadenza.synth_audio import write_audio
    from retrieval.ingest import ingest
    from retrieval.store import remove_track
    from tests.helpers_app import track_audio

    extra = write_audio(tmp_path / "extra.wav", track_audio(4)[::-1].copy())
    ingest(db=library.db, paths=[extra], embedder=library.embedder, workers=1, progress=False)
    with library.db.connection() as conn:
        tid = int(conn.execute("SELECT id FROM tracks WHERE path = %s", (str(extra),)).fetchone()[0])
        remove_track(conn, tid)
    r = client.post("/chat/messages", data={"ref_track": str(tid), "ref_start": "4"}, headers=HX)
    message = error_of(r, 404, kind="html")
    assert "removed" in message and "`" not in message and "cadenza " not in message.lower()
    r = client.post("/api/search", json={"reference": {"track_id": tid, "start": 4.0}})
    message = error_of(r, 404, kind="json")
    assert "removed" in message and "`" not in message and "cadenza " not in message.lower()


class _OtherModel:
    """The same weights under another version name: what a server still holds after ``cadenza
    reindex`` re-embedded the library with a new checkpoint."""

    def __init__(self, embedder: Any) -> None:
        self._inner = embedder
        self.model_version = embedder.model_version + "-old"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_server_on_another_model_than_the_library_says_so(app_settings, library):
    with running_app(app_settings, db=library.db, embedder=_OtherModel(library.embedder)) as url:
        r = httpx.post(
            url + "/api/search", files={"file": ("clip.wav", clip_of_track(2), "audio/wav")}, timeout=120
        )
        message = error_of(r, 503, kind="json")
        assert "embedded by another model" in message and library.embedder.model_version in message
        r = httpx.post(
            url + "/api/search", json={"reference": {"track_id": library.ids["Study 1"]}}, timeout=120
        )
        assert "embedded by another model" in error_of(r, 503, kind="json")


def test_json_results_carry_a_track_id_and_a_file_name_never_a_path(client, library):
    folder = str(library.folder)
    bodies = [
        client.post(
            "/api/search", files={"file": ("clip.wav", clip_of_track(0), "audio/wav")}, data={"k": "3"}
        ),
        client.post("/api/search", json={"reference": {"track_id": library.ids["Study 2"], "start": 2.0}}),
        client.post(
            "/api/chat", files={"file": ("clip.wav", clip_of_track(3), "audio/wav")}, data={"k": "3"}
        ),
    ]
    chat = bodies[-1].json()
    bodies.append(
        client.post("/api/chat", json={"message": "only Baroque", "conversation_id": chat["conversation_id"]})
    )
    for r in bodies:
        assert r.status_code == 200, r.text
        assert folder not in r.text, r.text[:500]
        data = r.json()
        results = (data.get("response") or data)["results"]
        assert results
        for res in results:
            assert "path" not in res, res
            assert (
                isinstance(res["track_id"], int)
                and res["file"].startswith("track")
                and "/" not in res["file"]
            )


# --- 3. unexpected errors: logged with the traceback, never shown ------------------------------------------


def test_an_unexpected_error_is_logged_with_its_traceback_and_not_shown(client, monkeypatch, caplog):
    import assistant.browse

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("secret-internal-detail")

    monkeypatch.setattr(assistant.browse, "_library_rows", broken)
    with caplog.at_level(logging.ERROR, logger="assistant.errors"):
        r = client.get("/library")
        r_json = client.get("/library", headers={"accept": "application/json"})
    assert r.status_code == 500 and "secret-internal-detail" not in r.text and "KeyError" not in r.text
    assert r.headers["content-type"].startswith("text/html")
    assert r_json.status_code == 500 and json.loads(r_json.text)["status"] == 500
    assert "secret-internal-detail" not in r_json.text
    logged = [rec for rec in caplog.records if rec.exc_info]
    assert logged and any("secret-internal-detail" in str(rec.exc_info[1]) for rec in logged)
    assert any(rec.exc_info[2] is not None for rec in logged)  # the traceback itself
