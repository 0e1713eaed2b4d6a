"""What the page's and the API's forms and cookies carry: the listener, the uploaded clip, and the
page's own forms as typed structs (decoded as the API's are, :mod:`assistant.bodies`)."""

from __future__ import annotations

import secrets
from typing import Annotated, Literal, TypeVar

from litestar import Request
from litestar.datastructures import Cookie, FormMultiDict, UploadFile
from msgspec import Meta, Struct

from assistant.api_types import FormMessage, Seconds
from assistant.bodies import decode_form
from assistant.context import SIGNALS
from assistant.services import Clip, Services
from cadenza.errors import InputError

T = TypeVar("T", bound=Struct)

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


#: Ids the page's forms send (a track, a message): whole numbers PostgreSQL's bigint holds.
PageId = Annotated[int, Meta(gt=0, lt=2**62, description="must be an id (a whole number)")]


class MessageForm(FormMessage):
    """One chat message from the page: text, a clip in ``file``, or a library moment (``ref_track``)."""

    ref_track: PageId | None = None
    ref_start: Seconds | None = None
    base_message: PageId | None = None  # the answer a follow-up refines (default: the last one)
    route: Annotated[
        Literal["auto", "melody", "audio"], Meta(description="must be auto, melody or audio")
    ] = "auto"


class TrackForm(Struct):
    track_id: PageId | None = None


class ChipForm(Struct):
    """A chip of an answer's query state, by its id (:func:`assistant.querystate.chips`)."""

    chip: Annotated[
        str,
        Meta(
            min_length=1, max_length=300, description="chip is required: which part of the search to remove"
        ),
    ]


class SignalForm(Struct):
    """A listening-context toggle: the signal, and ``on`` = "1" to switch it on (anything else: off)."""

    signal: Annotated[
        str, Meta(pattern=f"^({'|'.join(SIGNALS)})$", description=f"must be one of {list(SIGNALS)}")
    ]
    on: str = ""


async def clip_and_form(request: Request, into: type[T], *, missing: str) -> tuple[Clip, T]:
    """The clip of a multipart request (InputError ``missing`` when none came) and its fields as ``into``."""
    form = await request.form()
    clip = await clip_from_form(form)
    if clip is None:
        raise InputError(missing)
    return clip, decode_form(form, into)


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
