"""Shared fixtures: a real PostgreSQL + pgvector for the whole session, and the app served over HTTP.

The session starts one embedded PostgreSQL in a temporary ``CADENZA_HOME`` (or uses
``CADENZA_TEST_DATABASE_URL``), applies the migrations once, and every test that asks for
``db`` gets it with empty tables afterwards (TRUNCATE … RESTART IDENTITY), so tests see
only their own rows.

A module that serves the app asks for ``client`` (or ``base_url``, ``library``): the six
synthetic tracks ingested once per module, uvicorn on a free port, a browser-like client. It
overrides ``app_settings`` to change the limits the app runs with.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cadenza.db import Database, open_database
from cadenza.fake_llm import FakeLLM
from cadenza.settings import LimitSettings, Settings
from tests.helpers_app import CHROMIUM_ARGS, Library, browser_like_client, ingest_library, running_app
from tests.helpers_db import truncate_all


def pytest_configure(config: pytest.Config) -> None:
    # As root, pgserver runs PostgreSQL as its own user and opens the folders above its data
    # for it; but every new pytest run resets the shared /tmp/pytest-of-root to mode 0700,
    # locking the server of any other run on the machine out of its data. A base folder of
    # our own per run keeps concurrent runs apart.
    if config.option.basetemp is None and hasattr(os, "geteuid") and os.geteuid() == 0:
        config.option.basetemp = tempfile.mkdtemp(prefix="cadenza-pytest-")
        config.stash[_OWN_BASETEMP] = config.option.basetemp


def pytest_unconfigure(config: pytest.Config) -> None:
    own = config.stash.get(_OWN_BASETEMP, None)
    if own:
        shutil.rmtree(own, ignore_errors=True)


_OWN_BASETEMP = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def cadenza_home(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("cadenza-home")


@pytest.fixture(scope="session")
def settings(cadenza_home) -> Settings:
    env = {
        "CADENZA_HOME": str(cadenza_home),
        "CADENZA_DATABASE_URL": os.environ.get("CADENZA_TEST_DATABASE_URL", ""),
    }
    return Settings.from_env(env)


@pytest.fixture(scope="session")
def session_db(settings: Settings) -> Iterator[Database]:
    db = open_database(settings)
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
def db(session_db: Database) -> Iterator[Database]:
    truncate_all(session_db)
    yield session_db
    truncate_all(session_db)


@pytest.fixture(scope="module")
def app_settings(settings: Settings) -> Settings:
    """The settings the served app runs with (a module overrides this fixture to change them).

    The default limits, but no per-client rate limit: one loopback address plays every client here,
    and the tests about the limit set their own."""
    return dataclasses.replace(settings, limits=LimitSettings(requests_per_minute=0))


@pytest.fixture(scope="module")
def library(
    session_db: Database, tmp_path_factory: pytest.TempPathFactory, app_settings: Settings
) -> Iterator[Library]:
    """The six synthetic tracks ingested into the session database for this module."""
    lib = ingest_library(session_db, tmp_path_factory.mktemp("library"), app_settings)
    yield lib
    truncate_all(session_db)


@pytest.fixture(scope="module")
def base_url(library: Library, app_settings: Settings) -> Iterator[str]:
    with running_app(app_settings, db=library.db, embedder=library.embedder) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[httpx.Client]:
    """One browser-like client (one listener) for the module."""
    with browser_like_client(base_url) as c:
        yield c


@pytest.fixture
def listener(base_url: str) -> Iterator[httpx.Client]:
    """A browser-like client of its own per test: a fresh listener (cookie, session state)."""
    with browser_like_client(base_url) as c:
        yield c


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLM]:
    """The model endpoint of our own (cadenza/fake_llm.py, real HTTP), one for the module; tests script it."""
    with FakeLLM() as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium under Playwright, one for the module."""
    from playwright.sync_api import sync_playwright  # only the browser tests need it

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(request: pytest.FixtureRequest, browser: Any, base_url: str) -> Iterator[Any]:
    """A fresh browser context on the app (microphone allowed); the test fails on any script error.

    Console errors count when they are Content-Security-Policy violations (an inline script or style
    slipping in), or all of them in a module that sets ``ALL_CONSOLE_ERRORS = True``.
    """
    every = getattr(request.module, "ALL_CONSOLE_ERRORS", False)
    context = browser.new_context(permissions=["microphone"], base_url=base_url)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and (every or "Content Security Policy" in msg.text)
            else None
        ),
    )
    yield pg
    context.close()
    assert errors == [], errors  # no script errors on any page
