"""``/schema``: the API described as a plain HTML page that works under our own CSP.

Litestar's bundled viewers (Redoc, Swagger, …) load scripts from a CDN and run inline script,
which ``script-src 'self'`` blocks (the page came out blank) and which an offline machine could not
fetch anyway. This page is rendered on the server from the OpenAPI document: every operation, its
summary and description, its parameters and body types, and a link to ``/schema/openapi.json``.
"""

from __future__ import annotations

from html import escape
from typing import Any

from litestar import Request, Router
from litestar.openapi.plugins import OpenAPIRenderPlugin

from cadenza.errors import NotFound

METHODS = ("get", "post", "put", "patch", "delete")


def _schema_name(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "oneOf" in schema or "anyOf" in schema:
        return " | ".join(_schema_name(s) for s in schema.get("oneOf") or schema.get("anyOf") or [])
    return str(schema.get("type") or "object")


def _operation(path: str, method: str, op: dict[str, Any]) -> str:
    parts = [
        f'<section class="operation" id="{escape(method + path.replace("/", "-"))}">',
        f"<h2><code>{escape(method.upper())} {escape(path)}</code></h2>",
    ]
    if op.get("summary"):
        parts.append(f"<p><strong>{escape(str(op['summary']))}</strong></p>")
    if op.get("description"):
        parts.append(f"<p>{escape(str(op['description']))}</p>")
    params = op.get("parameters") or []
    if params:
        rows = "".join(
            f"<tr><td><code>{escape(str(p.get('name')))}</code></td><td>{escape(str(p.get('in')))}</td>"
            f"<td>{escape(_schema_name(p.get('schema') or {}))}</td>"
            f"<td>{'yes' if p.get('required') else 'no'}</td></tr>"
            for p in params
        )
        parts.append(
            "<table><thead><tr><th>parameter</th><th>in</th><th>type</th><th>required</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    body = (op.get("requestBody") or {}).get("content") or {}
    for media, spec in body.items():
        parts.append(
            f"<p>Body (<code>{escape(media)}</code>): {escape(_schema_name(spec.get('schema') or {}))}</p>"
        )
    for status, resp in (op.get("responses") or {}).items():
        parts.append(f"<p>{escape(str(status))}: {escape(str(resp.get('description') or ''))}</p>")
    parts.append("</section>")
    return "".join(parts)


def render_page(openapi: dict[str, Any], *, json_url: str) -> str:
    """The whole page (pure: the OpenAPI document in, HTML out)."""
    info = openapi.get("info") or {}
    title = f"{info.get('title', 'API')} {info.get('version', '')}".strip()
    ops = [
        _operation(path, method, item[method])
        for path, item in sorted((openapi.get("paths") or {}).items())
        for method in METHODS
        if method in item
    ]
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}: API</title>"
        '<link rel="stylesheet" href="/static/app.css"></head><body><main class="schema">'
        f"<h1>{escape(title)}: API</h1>"
        f'<p>The machine-readable document: <a href="{escape(json_url)}">{escape(json_url)}</a> (OpenAPI '
        f"{escape(str(openapi.get('openapi', '')))}).</p>" + "".join(ops) + "</main></body></html>"
    )


class PlainSchemaPage(OpenAPIRenderPlugin):
    """Serves :func:`render_page` at ``/schema`` (no script, no inline style)."""

    def __init__(self) -> None:
        super().__init__(path="/")

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        return render_page(openapi_schema, json_url=self.get_openapi_json_route(request)).encode()


def _known_pages_only(request: Request) -> None:
    """Litestar answers any other ``/schema/...`` path with its own bare 404 page; ours says it in
    the kind of body the request asked for, like every other error."""
    fn = getattr(request.route_handler, "fn", None)
    if getattr(fn, "__name__", "") == "handle_schema_path_not_found":
        raise NotFound(f"no such page {request.url.path}; the API is described at /schema")


def schema_router(path: str = "/schema") -> Router:
    """The router Litestar mounts the schema routes on (``OpenAPIConfig.openapi_router``)."""
    return Router(path, route_handlers=[], include_in_schema=False, before_request=_known_pages_only)
