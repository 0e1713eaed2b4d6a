"""What the page's and the API's forms and cookies carry: the listener, the uploaded clip, and the
number fields of the HTML forms (each refused value answered with a message naming the field)."""

from __future__ import annotations

import secrets

from litestar import Request
from litestar.datastructures import Cookie, FormMultiDict, UploadFile

from assistant.services import Clip, Services
from cadenza.errors import InputError
from retrieval.types import check_diversity

LISTENER_COOKIE = "cadenza_listener"


def listener_of(request: Request) -> tuple[str, bool]:
    """The listener id from the cookie, or a new one (second value True when new)."""
    raw = request.cookies.get(LISTENER_COOKIE, "")
    if raw and len(raw) <= 64 and raw.replace("-", "").replace("_", "").isalnum():
        return raw, False
    return secrets.token_urlsafe(16), True


def listener_cookies(request: Request, svc: Services) -> tuple[str, list[Cookie]]:
    lid, new = listener_of(request)
    cookies = []
    if new:
        cookies.append(
            Cookie(
                key=LISTENER_COOKIE, value=lid, httponly=True, samesite="lax", max_age=365 * 86400,
                secure=svc.settings.server.secure_cookies,
            )
        )  # fmt: skip
    return lid, cookies


def known_listener(request: Request) -> str | None:
    """The listener of the cookie, if the client has one (the search API never sets it)."""
    lid, new = listener_of(request)
    return None if new else lid


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("multipart/form-data")


def float_or_none(raw: object, name: str) -> float | None:
    if raw in (None, ""):
        return None
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{name}={raw!r} is not a number of seconds; give a number like 12.5") from None
    if value != value or value < 0:
        raise InputError(f"{name} must be a number of seconds ≥ 0")
    return value


def int_or_none(raw: object, name: str, *, lo: int = 1, hi: int = 50) -> int | None:
    if raw in (None, ""):
        return None
    try:
        value = int(raw)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise InputError(f"{name}={raw!r} is not a whole number; give one between {lo} and {hi}") from None
    if not lo <= value <= hi:
        raise InputError(f"{name} must be between {lo} and {hi}")
    return value


def diversity_of(raw: object) -> float | None:
    """A form's ``diversity`` (0–1), None when absent."""
    return None if raw in (None, "") else check_diversity(raw)


async def clip_from_form(form: FormMultiDict, field: str = "file") -> Clip | None:
    """The uploaded clip, or None when none was attached.

    A browser sends an empty part with no file name when nothing was chosen; an empty part *with*
    a name is an empty file, and says so.
    """
    upload = form.get(field)
    if not isinstance(upload, UploadFile):
        return None
    data = await upload.read()
    if not data and not upload.filename:
        return None
    return Clip(filename=upload.filename or "clip", data=data)
