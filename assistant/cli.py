"""``cadenza serve [--host --port]``: run the web app with uvicorn.

``cadenza demo`` lives here too: it builds the demo library (``retrieval.demo``) and then
serves it, and only this layer may know both.
"""

from __future__ import annotations

import argparse
import dataclasses

from cadenza.settings import Settings


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "demo":
        parser.add_argument(
            "--no-serve", action="store_true", help="build and ingest only; do not start the server"
        )
        parser.add_argument("--rebuild", action="store_true", help="render the audio again from the scores")
        parser.add_argument("--workers", type=int, default=2, help="render/ingest processes (default 2)")
        return
    parser.add_argument(
        "--host", default=None, help="interface to listen on (default CADENZA_HOST or 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=None, help="port (default CADENZA_PORT or 8000)")


def serve(settings: Settings) -> None:
    """Run the app until interrupted (also called by ``cadenza demo``)."""
    # Here: `cadenza` loads this module for every command, and only serving needs the web stack.
    import uvicorn

    from assistant.app import create_app

    app = create_app(settings)
    print(f"Cadenza is running on http://{settings.server.host}:{settings.server.port}  (Ctrl-C stops it)")
    uvicorn.run(
        app, host=settings.server.host, port=settings.server.port, log_level="info", proxy_headers=False
    )


def run(name: str, args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if name == "demo":
        return run_demo(settings, args)
    server = settings.server
    if args.host or args.port:
        server = dataclasses.replace(server, host=args.host or server.host, port=args.port or server.port)
        settings = dataclasses.replace(settings, server=server)
    serve(settings)
    return 0


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Build the demo library once (re-embedding it for a new model), then serve it."""
    from retrieval.demo import DemoBuild, build_demo  # here, as in serve: only `cadenza demo` needs it

    settings.paths.ensure_writable()
    summary = build_demo(settings=settings, build=DemoBuild(workers=args.workers, rebuild=args.rebuild))
    ing = summary["ingest"]
    print(
        f"demo library: {summary['files']} works, {summary['audio_minutes']} min of audio in {summary['demo_dir']}; "
        f"ingest added {ing['added']}, unchanged {ing['unchanged']}, re-embedded for the current model "
        f"{summary['reindexed']}, failed {len(ing['failed'])} "
        f"({summary['total_seconds']:.0f} s in all)"
    )
    if args.no_serve:
        return 0
    print(f"starting the server on http://{settings.server.host}:{settings.server.port}")
    serve(settings)
    return 0
