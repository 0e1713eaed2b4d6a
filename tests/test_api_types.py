"""The typed bodies of /api/*: every request body and 2xx answer in the OpenAPI document has a schema
with properties at every depth (a bare "object" tells a client nothing), and the structs decode what
the routes take."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from assistant.api_answers import MomentDescriptors, QueryInfo, SearchAnswer, answer
from assistant.api_types import ChatBody, FilterBody, MapBody, SearchBody, SearchForm, filters_of
from assistant.app import create_app
from assistant.bodies import decode_json
from cadenza.errors import InputError


def _bare_objects(
    schema: dict[str, Any], components: dict[str, Any], seen: frozenset[str] = frozenset()
) -> list[str]:
    """Where ``schema``, at any depth (its oneOf/anyOf members, properties, list items and map values),
    is an untyped object: one that names no property and no type for its values, or a bare ``{}``."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return [] if name in seen else _bare_objects(components[name], components, seen | {name})
    members = schema.get("oneOf") or schema.get("anyOf") or schema.get("allOf")
    if members:
        return [w for m in members for w in _bare_objects(m, components, seen)]
    values = schema.get("additionalProperties")
    typed = (
        schema.get("properties")
        or (isinstance(values, dict) and values)
        or "enum" in schema
        or "const" in schema
    )
    bare = [repr(schema)[:120]] if schema.get("type") in (None, "object") and not typed else []
    parts = [*(schema.get("properties") or {}).values(), schema.get("items"), values]
    return bare + [w for p in parts if isinstance(p, dict) for w in _bare_objects(p, components, seen)]


def test_every_api_body_and_answer_has_a_schema_with_properties(settings):
    doc = create_app(settings).openapi_schema.to_schema()
    components = doc.get("components", {}).get("schemas", {})
    api = {path: item for path, item in doc["paths"].items() if path.startswith("/api/")}
    assert {
        "/api/search",
        "/api/chat",
        "/api/chat/put-back",
        "/api/chat/context",
        "/api/map",
        "/api/path",
    } <= set(api)
    bare: list[str] = []
    for path, item in api.items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            bodies = {
                f"request {t}": c["schema"] for t, c in op.get("requestBody", {}).get("content", {}).items()
            }
            if method == "post":
                assert bodies, f"POST {path} documents no request body"
            for status, response in op["responses"].items():
                if status.startswith("2"):
                    bodies |= {f"{status} {t}": c["schema"] for t, c in response.get("content", {}).items()}
            bare += [
                f"{method.upper()} {path} {what}: {w}"
                for what, s in bodies.items()
                for w in _bare_objects(s, components)
            ]
    assert bare == []


def test_the_clip_routes_document_both_json_and_the_multipart_form(settings):
    doc = create_app(settings).openapi_schema.to_schema()
    for path in ("/api/search", "/api/chat", "/api/map"):
        content = doc["paths"][path]["post"]["requestBody"]["content"]
        assert set(content) == {"application/json", "multipart/form-data"}
        assert (
            content["multipart/form-data"]["schema"]["properties"]["file"]["anyOf"][0]["format"] == "binary"
        )


#: (body, what the 400 says) for a search body, then for a chat body's query state.
SEARCH_REFUSALS = [
    (b'{"k": true}', "k must be a whole number between 1 and 50"),
    (b'{"k": 51}', "k must be a whole number between 1 and 50"),
    (b'{"reference": []}', "reference must be an object {track_id, start}"),
    (b'{"reference": {"track_id": 1.9}}', "track_id must be a whole number"),
    (
        b'{"aspects": {"tempo": 1}}',
        "unknown aspect(s) ['tempo']; use ['sound', 'harmony', 'rhythm', 'melody']",
    ),
    (b'{"context": {"weather": true}}', "unknown context signal(s) ['weather']"),
    (b'{"context": {"mood": "no"}}', "context.mood must be true or false"),
    (b'{"filters": {"key": "H"}}', "filters.key must be a tonic"),
    (
        b'{"filters": {"exclude_tracks": ["a"]}}',
        "filters.exclude_tracks must be a list of track ids",
    ),
    (b"[]", "the JSON body must be an object"),
    (b"{nope", "not valid JSON"),
]
STATE_REFUSALS = [
    (b'{"state": {"colour": 1}}', "unknown state field(s) ['colour']"),
    (b'{"state": {"k": true}}', "state.k"),
    (b'{"state": {"seeds": [{"track_id": 1.5}]}}', "state.seeds.track_id"),
    (b'{"state": []}', "state must be an object, as /api/chat returned it"),
]


@pytest.mark.parametrize(
    ("into", "raw", "message"),
    [(SearchBody, *r) for r in SEARCH_REFUSALS] + [(ChatBody, *r) for r in STATE_REFUSALS],
)
def test_a_refused_field_is_answered_in_its_own_words(into, raw, message):
    with pytest.raises(InputError) as err:
        decode_json(raw, into)
    assert message in str(err.value)


def test_a_missing_field_is_named():
    with pytest.raises(InputError, match="reference must be an object"):
        decode_json(b"{}", MapBody)


def test_deep_json_is_left_to_the_recursion_handler():
    with pytest.raises(RecursionError):
        decode_json(b"[" * 5000 + b"]" * 5000, ChatBody)


def test_filters_keep_their_checks():
    assert filters_of(FilterBody(eras=["Baroque"], min_bpm=60.0)).eras == ("Baroque",)
    with pytest.raises(InputError, match="finite"):
        filters_of(FilterBody(min_bpm=float("inf")))
    with pytest.raises(InputError, match="track ids"):
        filters_of(FilterBody(exclude_tracks=[2**63]))
    assert SearchForm(composer=["Bach"], mode="minor").filters().composers == ("Bach",)


def test_a_typed_answer_says_exactly_what_the_search_wrote():
    # A moment query's keys: those of another route stay absent, and a null stays null.
    query = {
        "source": "moment", "track_id": 3, "title": "Study", "composer": "X", "start": 10.0, "end": 20.0,
        "key_index": None, "key": None, "mode": "minor", "tempo_bpm": 96.5, "moment_sources": ["audio"],
        "aspects": {"sound": 1.0, "harmony": 0.0, "rhythm": 1.0, "melody": 1.0},
        "context": {
            "switches": {"time_of_day": True, "history": False, "mood": True}, "local_time": None,
            "signals": [{"signal": "mood", "on": True, "applied": False, "text": "no mood asked for",
                         "changed_ranks": 0, "brought_in": 0}],
        },
    }  # fmt: skip
    result = {
        "rank": 1,
        "track_id": 4,
        "start": 0.0,
        "end": 10.0,
        "descriptors": {"key": "C", "sung_key": None},
    }
    typed = answer({"query": query, "results": [result]}, SearchAnswer)
    assert isinstance(typed.query, QueryInfo) and isinstance(typed.results[0].descriptors, MomentDescriptors)
    back = msgspec.to_builtins(typed)
    assert back["query"] == query
    assert back["results"][0]["descriptors"] == result["descriptors"]
