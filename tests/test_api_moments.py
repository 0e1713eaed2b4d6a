"""POST /api/map and /api/path over real HTTP, on an ingested library and the real encoder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers_app import clip_of_track


def test_the_map_of_a_reference_puts_its_own_track_first_and_peaks_at_the_reference(client, library):
    tid = library.ids["Study 2"]
    r = client.post("/api/map", json={"reference": {"track_id": tid, "start": 10.0}, "tracks": 3})
    assert r.status_code == 200, r.text
    tracks = r.json()["tracks"]
    assert tracks[0]["track_id"] == tid and tracks[0]["own"] and tracks[0]["title"] == "Study 2"
    assert len(tracks) == 4 and len({t["track_id"] for t in tracks}) == 4
    own = tracks[0]["windows"]
    assert len(own) >= 5 and all(0.0 <= w["likeness"] <= 1.0 for w in own)
    best = max(own, key=lambda w: w["likeness"])
    assert abs(best["start"] - 10.0) <= 2.0 and best["likeness"] > 0.9  # the passage itself
    starts = [w["start"] for w in own]
    assert starts == sorted(starts)


def test_the_map_of_a_clip_starts_with_the_clip_itself_then_the_track_it_came_from(client, library):
    r = client.post(
        "/api/map",
        files={"file": ("q.wav", clip_of_track(4, start=4.0, seconds=20.0), "audio/wav")},
        data={"tracks": "2", "start": "4"},
    )
    assert r.status_code == 200, r.text
    tracks = r.json()["tracks"]
    assert len(tracks) == 3 and [t["own"] for t in tracks] == [True, False, False]
    own = tracks[0]
    assert own["track_id"] is None and own["duration_s"] == 20.0
    assert [w["start"] for w in own["windows"]] == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    best = max(own["windows"], key=lambda w: w["likeness"])
    assert best["start"] == 4.0 and best["likeness"] > 0.95  # the searched passage is where it recurs best
    assert tracks[1]["track_id"] == library.ids["Study 4"]


@pytest.mark.parametrize(
    "body,fragment",
    [
        ({}, "reference"),
        ({"reference": {"track_id": 999999, "start": 0}}, "no track"),
        ({"reference": {"track_id": 1, "start": -3}}, "seconds"),
        ({"reference": {"track_id": 1}, "tracks": 99}, "between 1 and"),
    ],
)
def test_map_errors_are_clear(client, library, body, fragment):
    r = client.post("/api/map", json=body)
    assert r.status_code in (400, 404) and fragment in r.text, r.text


def test_a_path_steps_from_a_to_b(client, library):
    a, b = library.ids["Study 0"], library.ids["Study 5"]
    r = client.post(
        "/api/path",
        json={"from": {"track_id": a, "start": 4}, "to": {"track_id": b, "start": 12}, "steps": 4},
    )
    assert r.status_code == 200, r.text
    steps = r.json()["steps"]
    assert len(steps) == 4
    assert (steps[0]["track_id"], steps[0]["start"]) == (a, 4.0) and steps[0]["likeness"] == 1.0
    assert (steps[-1]["track_id"], steps[-1]["start"]) == (b, 12.0)
    assert all(set(s) == {"track_id", "start", "end", "title", "likeness"} for s in steps)
    assert all(0.0 <= s["likeness"] <= 1.0 and s["end"] > s["start"] for s in steps)
    spots = [(s["track_id"], s["start"]) for s in steps]
    assert len(set(spots)) == len(spots)


@pytest.mark.parametrize(
    "body,fragment",
    [
        ({"from": {"track_id": 1, "start": 0}}, "to"),
        ({"from": {"track_id": 1, "start": 0}, "to": {"track_id": 2, "start": 0}, "steps": 1}, "steps"),
        ({"from": {"track_id": 1, "start": 0}, "to": {"track_id": 2, "start": 0}, "steps": 50}, "steps"),
        ({"from": {"track_id": 1, "start": 9999}, "to": {"track_id": 2, "start": 0}}, "long"),
    ],
)
def test_path_errors_are_clear(client, library, body, fragment):
    r = client.post("/api/path", json=body)
    assert r.status_code == 400 and fragment in r.text, r.text


def test_the_openapi_schema_types_map_and_path(client):
    schema = client.get("/schema/openapi.json").json()
    path_body = schema["paths"]["/api/path"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "$ref" in path_body
    name = path_body["$ref"].rsplit("/", 1)[1]
    assert set(schema["components"]["schemas"][name]["properties"]) == {"from", "to", "steps"}
    ok = schema["paths"]["/api/map"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert "$ref" in ok


def test_cadenza_path_prints_what_the_api_returns(client, library, app_settings):
    a, b = library.ids["Study 1"], library.ids["Study 3"]
    api = client.post(
        "/api/path", json={"from": {"track_id": a, "start": 2}, "to": {"track_id": b, "start": 8}, "steps": 3}
    )
    env = {**os.environ, "CADENZA_HOME": str(app_settings.paths.home), "CADENZA_DATABASE_URL": library.db.url}
    cmd = [
        sys.executable,
        "-m",
        "cadenza",
        "-q",
        "path",
        "--from",
        f"{a}:2",
        "--to",
        f"{b}:8",
        "--steps",
        "3",
    ]
    out = subprocess.run([*cmd, "--json"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == api.json()
    text = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert text.returncode == 0 and len(text.stdout.strip().splitlines()) == 3 and "Study 1" in text.stdout
    bad = subprocess.run(
        [*cmd[:5], "nine", "--to", "1:2"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert bad.returncode == 2 and "ID:SECONDS" in bad.stderr and "Traceback" not in bad.stderr
