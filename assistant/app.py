"""The Litestar application factory.

``create_app(settings)`` opens the database and loads the embedder once at start-up (unless they
are given, as in tests) and closes what it opened at shutdown. Services reach the controllers
through ``Provide``; errors map to responses in one place (:mod:`assistant.errors`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from litestar import Litestar, Request
from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig

from assistant import (
    api,
    api_moments,
    browse,
    conversations,
    errors,
    listening,
    media,
    schema_page,
    security,
    web,
)
from assistant.llm import LLM
from assistant.services import Services
from cadenza.db import Database, open_database
from cadenza.errors import NotFound
from cadenza.settings import PROJECT_ROOT, Settings
from encoder.embed import resolve_embedder
from encoder.protocols import MomentEmbedder
from retrieval.ingest_steps import one_blas_thread

log = logging.getLogger(__name__)

TEMPLATES = PROJECT_ROOT / "templates"
STATIC = PROJECT_ROOT / "static"


def load_embedder(settings: Settings) -> MomentEmbedder:
    """The same embedder ``cadenza ingest``/``search`` use: the checkpoint, or (loudly) untrained weights."""
    embedder, _ = resolve_embedder(settings.checkpoint)
    return embedder


def _provide_services(state: State) -> Services:
    return state.services


def _conversation_of_path(conversation_id: str) -> uuid.UUID:
    """The ``{conversation_id}`` of a route's path, parsed (NotFound when it is no conversation id)."""
    return conversations.parse_id(conversation_id)


#: The longest file name a file system takes (bytes); a longer one cannot name a file.
MAX_FILE_NAME = 255


def _only_possible_static_paths(request: Request) -> None:
    """A path no file can have is simply not found: a NUL (``os.stat`` raises ValueError on it) or a
    name longer than a file system allows (OSError ENAMETOOLONG, a 500 before)."""
    path = request.url.path
    if "\x00" in path or any(len(part.encode()) > MAX_FILE_NAME for part in path.split("/")):
        raise NotFound("no such file")


def create_app(
    settings: Settings,
    *,
    db: Database | None = None,
    embedder: MomentEmbedder | None = None,
    llm: LLM | None = None,
) -> Litestar:
    """The web app. ``db``/``embedder``/``llm`` given here are used as is and not closed."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        import torch  # here, not at the top: a process that only imports the app does not load torch

        torch.set_num_threads(1)  # 2 threads at batch 1 stall under load (165-650 ms seen)
        # numpy's BLAS likewise: a query's features on 2 threads took 132 ms against 11 on one (load 17).
        one_blas_thread()
        own_db = db is None
        database = db if db is not None else await anyio.to_thread.run_sync(open_database, settings)
        database.keep_alive()  # an embedded PostgreSQL that dies is started again (cadenza/db.py)
        try:
            model = (
                embedder if embedder is not None else await anyio.to_thread.run_sync(load_embedder, settings)
            )
            client = llm if llm is not None else LLM.from_settings(settings.llm)
            app.state.services = Services(settings=settings, db=database, embedder=model, llm=client)
            log.info(
                "cadenza web app ready (LLM %s)", "on" if client is not None else "off: offline explainer"
            )
            yield
        finally:
            services = getattr(app.state, "services", None)
            if services is not None:
                services.close()
            if own_db:
                database.close()

    return Litestar(
        route_handlers=[
            *web.HANDLERS,
            *media.HANDLERS,
            *browse.HANDLERS,
            *api.HANDLERS,
            *listening.HANDLERS,
            *api_moments.HANDLERS,
            create_static_files_router(
                path="/static", directories=[STATIC], before_request=_only_possible_static_paths
            ),
        ],
        dependencies={
            "svc": Provide(_provide_services, sync_to_thread=False),
            "cid": Provide(_conversation_of_path, sync_to_thread=False),
        },
        exception_handlers=errors.HANDLERS,  # type: ignore[arg-type]
        template_config=TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine),
        openapi_config=OpenAPIConfig(
            title="Cadenza",
            version="0.1.0",
            path="/schema",
            render_plugins=[schema_page.PlainSchemaPage()],
            openapi_router=schema_page.schema_router(),
        ),
        request_max_body_size=settings.limits.max_upload_bytes + (1 << 20),  # room for the form fields
        lifespan=[lifespan],
        **security.litestar_options(settings),  # CSRF, security headers, rate limit
    )
