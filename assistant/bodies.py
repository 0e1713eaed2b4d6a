"""Request bodies of the JSON API: decoded into typed structs, and described in the OpenAPI document.

A body is decoded by msgspec into the struct its route declares (:mod:`assistant.api_types`). A
field's ``Meta(description=...)`` is the one home of what the field takes: the OpenAPI document
shows it, and a value the field refuses is answered with it as the 400 message (naming the field,
as the hand-written checks did). Routes that take JSON *or* a multipart form parse the body
themselves, so Litestar cannot see a ``data`` parameter: :func:`documented` hands their OpenAPI
operation both schemas.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import msgspec
from litestar import post
from litestar.datastructures import FormMultiDict
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

from cadenza.errors import InputError

T = TypeVar("T", bound=msgspec.Struct)
V = TypeVar("V")
#: A field a body or an answer may leave out: absent from the JSON when unset (never a null that
#: was not sent), so a typed answer says exactly what the search wrote.
Maybe: TypeAlias = V | msgspec.UnsetType

NOT_JSON = "the request body is not valid JSON; send JSON or a multipart form with the clip in 'file'"
NOT_AN_OBJECT = "the JSON body must be an object"

_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]*)`$")


def decode_json(raw: bytes, into: type[T], *, not_json: str = NOT_JSON) -> T:
    """The JSON body ``raw`` (empty = ``{}``) as ``into``, or InputError saying what to send.

    JSON nested past the recursion limit raises RecursionError (a 400 in :mod:`assistant.errors`).
    """
    try:
        data = msgspec.json.decode(raw or b"{}")
    except msgspec.DecodeError:
        raise InputError(not_json) from None
    if not isinstance(data, dict):
        raise InputError(NOT_AN_OBJECT)
    return convert(data, into)


def decode_form(form: FormMultiDict, into: type[T]) -> T:
    """A multipart form's text fields as ``into``: a list field takes every value sent under its name,
    an empty field counts as not sent (a browser sends every input, filled or not)."""
    data: dict[str, Any] = {}
    for name, field_type in _field_types(into).items():
        if _holds(field_type, msgspec.inspect.BytesType):
            continue  # the file part: read by assistant.forms.clip_from_form
        if _holds(field_type, msgspec.inspect.ListType):
            values = [v for v in form.getall(name, []) if isinstance(v, str) and v != ""]
            if values:
                data[name] = values
        elif isinstance(value := form.get(name), str) and value != "":
            data[name] = value
    return convert(data, into, strict=False)


def convert(data: Mapping[str, Any], into: type[T], *, strict: bool = True) -> T:
    try:
        return msgspec.convert(data, into, strict=strict)
    except msgspec.ValidationError as exc:
        raise InputError(_message(str(exc), into)) from None


def _message(error: str, into: type[msgspec.Struct]) -> str:
    """msgspec's ``Expected `int`, got `bool` - at `$.reference.track_id``` in the field's own words."""
    m = _AT.match(error)
    what, path = (m.group("what"), m.group("path") or "") if m else (error, "")
    names = [p for p in re.split(r"\.|\[\d+\]", path) if p]
    unknown = _UNKNOWN.match(what)
    if unknown and (struct := _struct_at(into, names)) is not None:
        noun = getattr(struct.cls, "noun", "field")
        return f"unknown {noun}(s) ['{unknown.group('name')}']; use {[f.encode_name for f in struct.fields]}"
    if missing := _MISSING.match(what):
        names, what = [*names, missing.group("name")], "is required"
    if (field := _field_at(into, names)) is not None and (hint := _described(field.type)):
        return f"{'.'.join(names)} {hint}" if hint.startswith("must ") else hint
    dotted = ".".join(names)
    if not dotted:
        return what
    return f"{dotted} {what}" if what == "is required" else f"{dotted}: {what}"


def _field_at(into: type[msgspec.Struct], names: list[str]) -> Any:
    """The msgspec field info at ``names`` (a path of field names) in ``into``, or None."""
    struct: Any = msgspec.inspect.type_info(into)
    field: Any = None
    for name in names:
        if field is not None:
            struct = _struct_of(field.type)
        field = next((f for f in struct.fields if f.encode_name == name), None) if struct else None
        if field is None:
            return None
    return field


def _struct_at(into: type[msgspec.Struct], names: list[str]) -> Any:
    """The StructType at ``names`` (the root for no names), or None."""
    if not names:
        return msgspec.inspect.type_info(into)
    field = _field_at(into, names)
    return _struct_of(field.type) if field is not None else None


def _struct_of(info: Any) -> Any:
    """The StructType inside ``info`` (through Optional, Annotated and lists), or None."""
    if isinstance(info, msgspec.inspect.Metadata):
        return _struct_of(info.type)
    if isinstance(info, msgspec.inspect.ListType):
        return _struct_of(info.item_type)
    if isinstance(info, msgspec.inspect.UnionType):
        return next((s for t in info.types if (s := _struct_of(t)) is not None), None)
    return info if isinstance(info, msgspec.inspect.StructType) else None


def _described(info: Any) -> str | None:
    """The description on ``info`` or, through Optional, on one of its members."""
    if isinstance(info, msgspec.inspect.Metadata):
        described = (info.extra_json_schema or {}).get("description")
        return str(described) if described else _described(info.type)
    if isinstance(info, msgspec.inspect.UnionType):
        return next((d for t in info.types if (d := _described(t))), None)
    return None


def _field_types(struct: type[msgspec.Struct]) -> dict[str, Any]:
    return {f.encode_name: f.type for f in msgspec.inspect.type_info(struct).fields}  # type: ignore[attr-defined]


def _holds(info: Any, kind: type) -> bool:
    """Whether ``info`` is of msgspec type info ``kind``, as is or through Optional and Annotated."""
    if isinstance(info, msgspec.inspect.Metadata):
        return _holds(info.type, kind)
    if isinstance(info, msgspec.inspect.UnionType):
        return any(_holds(t, kind) for t in info.types)
    return isinstance(info, kind)


# --- the OpenAPI side ------------------------------------------------------------------------------


def documented(
    *, json: type[msgspec.Struct], multipart: type[msgspec.Struct] | None = None
) -> type[Operation]:
    """An Operation class for a route that reads its body itself: the request body is ``json``, and
    ``multipart`` too when given (Litestar's ``operation_class`` hook, meant for exactly this)."""
    content = {"application/json": OpenAPIMediaType(schema=schema_of(json))}
    if multipart is not None:
        content["multipart/form-data"] = OpenAPIMediaType(schema=schema_of(multipart))

    @dataclass
    class WithBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(required=True, content=content)

    WithBody.__name__ = f"{json.__name__}Operation"
    return WithBody


def api_post(
    path: str,
    *,
    tag: str,
    summary: str,
    description: str,
    body: type[msgspec.Struct] | None = None,
    form: type[msgspec.Struct] | None = None,
) -> post:
    """The decorator of a ``POST /api/*`` route: it answers 200 (Litestar's default is 201, but no
    route here creates a resource), filed under ``tag``. A route that reads its body itself names
    it: ``body`` (JSON) and ``form`` (multipart, with a clip), see :func:`documented`; any other
    route takes a typed ``data`` parameter, which Litestar documents."""
    operation = documented(json=body, multipart=form) if body is not None else Operation
    return post(
        path, status_code=200, summary=summary, description=description, tags=[tag], operation_class=operation
    )


def schema_of(struct: type[msgspec.Struct]) -> Schema:
    """The JSON Schema msgspec writes for ``struct``, its references resolved in place, as Litestar's
    Schema (msgspec's dialect is JSON Schema 2020-12, which OpenAPI 3.1 uses)."""
    doc = msgspec.json.schema(struct)
    return _to_schema(_inline(doc, doc.get("$defs", {})))


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(defs[node["$ref"].rsplit("/", 1)[1]], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")


def _to_schema(node: dict[str, Any]) -> Schema:
    aliases = Schema.field_aliases()
    kw: dict[str, Any] = {}
    for key, value in node.items():
        if key == "contentEncoding" and node.get("format") == "binary":
            continue  # a multipart part carries the file's own bytes, not base64 text
        name = aliases.get(key, _SNAKE.sub("_", key).lower())
        if key == "type":
            value = [OpenAPIType(v) for v in value] if isinstance(value, list) else OpenAPIType(value)
        elif key == "properties":
            value = {k: _to_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            value = _to_schema(value)
        elif key in ("anyOf", "oneOf", "allOf"):
            value = [_to_schema(v) for v in value]
        kw[name] = value
    return Schema(**kw)
