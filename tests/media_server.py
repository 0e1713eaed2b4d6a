"""A local HTTP media server with scripted faults, for the acquisition tests.

Binds to 127.0.0.1 only (an ephemeral port), serves each request on its own thread, logs
every request (path, method, time, status) and shuts itself down after ``lifetime_s``
even if a test forgets to. Each route has a script of faults consumed one per GET:

* ``None``                     - serve normally
* ``("status", code, retry_after)`` - answer ``code`` (Retry-After header when given)
* ``("reset",)``               - read the request, then close the socket with RST
* ``("slow", seconds)``        - wait before answering normally
* ``("cut", fraction)``        - promise the full Content-Length, send only a fraction

``server.outage`` is a second script consumed by GETs to *any* path first (a site-wide
outage, for the circuit breaker).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Fault = tuple[Any, ...] | None


@dataclass
class Route:
    body: bytes
    content_type: str
    script: list[Fault] = field(default_factory=list)
    always: Fault = None  # applied after the script runs out (e.g. a site that is down)


@dataclass(frozen=True)
class Hit:
    path: str
    method: str
    t: float
    status: int


class MediaServer:
    def __init__(self, *, lifetime_s: float = 300.0) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: list[Hit] = []
        self.outage: list[Fault] = []  # faults for the next GETs to *any* path (a site-wide outage)
        self._lock = threading.Lock()
        self._lifetime_s = lifetime_s
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # -- configuration -------------------------------------------------------------

    def add(self, path: str, body: bytes, content_type: str, script: list[Fault] | None = None) -> str:
        with self._lock:
            self.routes[path] = Route(body, content_type, list(script or []))
        return self.url(path)

    def set_always(self, path: str, fault: Fault) -> None:
        with self._lock:
            self.routes[path].always = fault

    def url(self, path: str) -> str:
        assert self._server is not None, "start the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{path}"

    # -- observations --------------------------------------------------------------

    def count(self, path: str, method: str = "GET") -> int:
        with self._lock:
            return sum(1 for h in self.hits if h.path == path and h.method == method)

    def log(self) -> list[Hit]:
        with self._lock:
            return list(self.hits)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> MediaServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        serve = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        serve.start()
        # Bounded: whatever happens to the test, the server stops by itself.
        timer = threading.Timer(self._lifetime_s, self.stop)
        timer.daemon = True
        timer.start()
        self._threads = [serve]
        self._timer = timer
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        timer = getattr(self, "_timer", None)
        if timer is not None and timer is not threading.current_thread():
            timer.cancel()

    def __enter__(self) -> MediaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling ----------------------------------------------------------

    def _next_fault(self, path: str, method: str) -> tuple[Route | None, Fault]:
        with self._lock:
            route = self.routes.get(path)
            if method != "GET":
                return route, None
            if self.outage:
                return route, self.outage.pop(0)
            if route is None:
                return route, None
            if route.script:
                return route, route.script.pop(0)
            return route, route.always

    def _record(self, path: str, method: str, status: int) -> None:
        with self._lock:
            self.hits.append(Hit(path, method, time.monotonic(), status))


def _handler_for(server: MediaServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

        def do_HEAD(self) -> None:
            self._serve(send_body=False)

        def do_GET(self) -> None:
            self._serve(send_body=True)

        def _serve(self, *, send_body: bool) -> None:
            path = self.path.split("?", 1)[0]
            route, fault = server._next_fault(path, self.command)
            if route is None and fault is None:
                server._record(path, self.command, 404)
                self.send_error(404)
                return
            kind = fault[0] if fault else None
            if kind == "status":
                code, retry_after = fault[1], fault[2] if len(fault) > 2 else None
                server._record(path, self.command, code)
                self.send_response(code)
                if retry_after is not None:
                    self.send_header("Retry-After", str(retry_after))
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "4")
                self.end_headers()
                if send_body:
                    self.wfile.write(b"busy")
                return
            if kind == "reset":
                server._record(path, self.command, 0)
                # SO_LINGER 0: close() sends RST, the client sees "connection reset by peer".
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
                return
            if kind == "slow":
                time.sleep(float(fault[1]))
            if route is None:
                server._record(path, self.command, 404)
                self.send_error(404)
                return
            body = route.body
            range_header = self.headers.get("Range")
            status = 200
            start, end = 0, len(body) - 1
            if range_header and range_header.startswith("bytes="):
                first, _, last = range_header[len("bytes=") :].partition("-")
                start = int(first or 0)
                end = min(int(last), len(body) - 1) if last else len(body) - 1
                status = 206
            server._record(path, self.command, status)
            chunk = body[start : end + 1]
            self.send_response(status)
            self.send_header("Content-Type", route.content_type)
            self.send_header("Content-Length", str(len(chunk)))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
            self.end_headers()
            if not send_body:
                return
            if kind == "cut":
                chunk = chunk[: int(len(chunk) * float(fault[1]))]
            # The client may read the headers and hang up (yt-dlp's format probe does).
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(chunk)
            if kind == "cut":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True

    return Handler
