"""``cadenza serve [--host --port]``: run the web app with uvicorn."""

from __future__ import annotations

import argparse
import dataclasses

from cadenza.settings import Settings


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default=None, help="interface to listen on (default CADENZA_HOST or 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=None, help="port (default CADENZA_PORT or 8000)")


def serve(settings: Settings) -> None:
    """Run the app until interrupted (also called by ``cadenza demo``)."""
    import uvicorn

    from assistant.app import create_app

    app = create_app(settings)
    print(f"Cadenza is running on http://{settings.server.host}:{settings.server.port}  (Ctrl-C stops it)")
    uvicorn.run(
        app, host=settings.server.host, port=settings.server.port, log_level="info", proxy_headers=False
    )


def run(name: str, args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    server = settings.server
    if args.host or args.port:
        server = dataclasses.replace(server, host=args.host or server.host, port=args.port or server.port)
        settings = dataclasses.replace(settings, server=server)
    serve(settings)
    return 0
