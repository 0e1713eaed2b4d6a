"""A small OpenAI-compatible chat-completions server of our own, over real HTTP on 127.0.0.1.

The tests and the benchmarks that need a model endpoint (bench/faults.py, bench/phrasing.py) use it,
so it lives below both. Tests script what it answers, one step per request (then ``default``):

- ``Step.text("...")``: a reply, streamed as SSE chunks when the request asks for ``stream``;
- ``Step.tool({...})``: a call of the request's tool with these arguments (a dict, or a raw string
  for malformed JSON), or ``Step.tool(callable)`` computing them from the user message;
- ``Step.error(500)`` / ``Step.error(429, retry_after=0)``: an HTTP error;
- ``Step.timeout(seconds)``: sleep before answering (past the client's timeout);
- ``Step.garbage()``: a stream whose chunks are not JSON; ``Step.garbage(stream=False)``: a non-JSON body;
- ``Step.echo()``: the reply is the JSON of the messages it was sent (for prompt-injection tests).

Every request body is kept in ``server.requests``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Step:
    kind: str
    text: str = ""
    args: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    stream: bool = True

    @classmethod
    def text_reply(cls, text: str) -> Step:
        return cls("text", text=text)

    # Short aliases used by the tests.
    @classmethod
    def reply(cls, text: str) -> Step:
        return cls("text", text=text)

    @classmethod
    def tool(cls, args: Any) -> Step:
        return cls("tool", args=args)

    @classmethod
    def error(cls, status: int, *, retry_after: float | None = None, body: str = "") -> Step:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        return cls("error", status=status, headers=headers, text=body)

    @classmethod
    def timeout(cls, seconds: float) -> Step:
        return cls("timeout", seconds=seconds)

    @classmethod
    def garbage(cls, *, stream: bool = True) -> Step:
        return cls("garbage", stream=stream)

    @classmethod
    def echo(cls) -> Step:
        return cls("echo")


class FakeLLM:
    """``with FakeLLM() as llm: llm.script(Step.reply("..."))``; point the client at ``llm.base_url``."""

    def __init__(self, default: Step | None = None) -> None:
        self.default = default or Step.reply("A plain reply.")
        self.steps: deque[Step] = deque()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------------

    def script(self, *steps: Step) -> FakeLLM:
        with self._lock:
            self.steps.extend(steps)
        return self

    def reset(self) -> None:
        with self._lock:
            self.steps.clear()
            self.requests.clear()

    def _next(self, body: dict[str, Any]) -> Step:
        with self._lock:
            self.requests.append(body)
            return self.steps.popleft() if self.steps else self.default

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        assert isinstance(host, str)  # an AF_INET server's address (typeshed allows bytes for AF_UNIX)
        return f"http://{host}:{port}/v1"

    def start(self) -> FakeLLM:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                # A client that gave up (a timeout test) leaves nothing to answer.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    fake._serve(self, fake._next(body), body)

            def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-llm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- answering --------------------------------------------------------------------------------

    def _serve(self, h: Any, step: Step, body: dict[str, Any]) -> None:
        model = body.get("model", "fake")
        if step.kind == "timeout":
            time.sleep(step.seconds)
            step = Step.reply("Too late.")
        if step.kind == "error":
            h._json(step.status, {"error": {"message": step.text or f"scripted {step.status}", "type": "fake"}},
                    headers=step.headers)  # fmt: skip
            return
        if step.kind == "tool":
            tools = body.get("tools") or []
            name = tools[0]["function"]["name"] if tools else "tool"
            args = step.args(body) if callable(step.args) else step.args
            arguments = args if isinstance(args, str) else json.dumps(args)
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}
                ],
            }
            h._json(200, _completion(model, message, finish="tool_calls"))
            return
        if step.kind == "garbage" and not step.stream:
            data = b"<html>definitely not JSON"
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        text = json.dumps(body.get("messages", [])) if step.kind == "echo" else step.text
        if not body.get("stream"):
            h._json(200, _completion(model, {"role": "assistant", "content": text}, finish="stop"))
            return
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Connection", "close")
        h.end_headers()
        if step.kind == "garbage":
            lines: Iterator[str] = iter(["data: {not json at all\n\n", "data: ]]]\n\n", "data: [DONE]\n\n"])
        else:
            lines = _sse_chunks(model, text)
        for line in lines:
            h.wfile.write(line.encode())
            h.wfile.flush()
        h.close_connection = True


def _completion(model: str, message: dict[str, Any], *, finish: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _sse_chunks(model: str, text: str, words_per_chunk: int = 3) -> Iterator[str]:
    words = text.split(" ")
    pieces = [" ".join(words[i : i + words_per_chunk]) for i in range(0, len(words), words_per_chunk)]
    for i, piece in enumerate(pieces):
        delta = {"content": (piece if i == 0 else " " + piece)}
        if i == 0:
            delta["role"] = "assistant"
        chunk = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        yield "data: " + json.dumps(chunk) + "\n\n"
    end = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    yield "data: " + json.dumps(end) + "\n\n"
    yield "data: [DONE]\n\n"


def scripted_args(table: dict[str, dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Tool arguments looked up by the follow-up message found in the request's last user turn."""

    def pick(body: dict[str, Any]) -> dict[str, Any]:
        content = body["messages"][-1]["content"]
        message = content.rsplit("Message: ", 1)[-1].strip()
        return table[message]

    return pick
