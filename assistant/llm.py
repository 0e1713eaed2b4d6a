"""A thin client for any OpenAI-compatible chat endpoint: streamed text and one tool call.

Built from :class:`cadenza.settings.LLMSettings`. ``max_retries`` is set deliberately from the
settings (default 1: one retry, honouring Retry-After) so a slow or failing endpoint costs at most
about ``2 × timeout_s`` before the offline explainer takes over.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from cadenza.settings import LLMSettings

log = logging.getLogger(__name__)


class LLMError(Exception):
    """The model did not give a usable answer (transport error, timeout, garbage)."""


class LLM:
    def __init__(self, settings: LLMSettings) -> None:
        import openai  # here: seconds to import, and an app without a model never needs it

        if not settings.base_url:
            raise ValueError("LLM settings have no base_url; use the offline explainer")
        self.settings = settings
        self.model = settings.model
        self._client: Any = openai.OpenAI(
            base_url=settings.base_url,
            api_key=settings.api_key or "not-needed",
            timeout=settings.timeout_s,
            max_retries=settings.max_retries,
        )

    @classmethod
    def from_settings(cls, settings: LLMSettings) -> LLM | None:
        return cls(settings) if settings.enabled else None

    def stream_text(self, *, messages: list[dict[str, Any]], max_tokens: int = 700) -> Iterator[str]:
        """Yield the reply's text as it arrives; :class:`LLMError` on any failure."""
        import openai

        try:
            stream = self._client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                stream=True,
                temperature=0.2,
                max_tokens=max_tokens,
            )
            for chunk in stream:
                if not getattr(chunk, "choices", None):
                    continue
                delta = chunk.choices[0].delta
                piece = getattr(delta, "content", None)
                if piece:
                    yield piece
        except openai.APIError as exc:
            raise LLMError(_describe(exc)) from exc
        except (ValueError, json.JSONDecodeError, AttributeError, TypeError) as exc:
            raise LLMError(f"the model's stream was malformed ({type(exc).__name__})") from exc

    def tool_call(self, *, messages: list[dict[str, Any]], tool: dict[str, Any]) -> Any:
        """Force one call of ``tool`` and return its parsed JSON arguments; LLMError otherwise."""
        import openai

        name = tool["function"]["name"]
        try:
            resp = self._client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                tools=[tool],  # type: ignore[list-item]
                tool_choice={"type": "function", "function": {"name": name}},
                temperature=0,
            )
        except openai.APIError as exc:
            raise LLMError(_describe(exc)) from exc
        try:
            calls = resp.choices[0].message.tool_calls or []
            call = next(c for c in calls if c.function.name == name)
            return json.loads(call.function.arguments)
        except (StopIteration, IndexError, AttributeError, TypeError, json.JSONDecodeError) as exc:
            raise LLMError(f"the model did not call {name} with JSON arguments") from exc


def _describe(exc: Exception) -> str:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "the language model timed out"
    if isinstance(exc, openai.APIConnectionError):
        return "the language model could not be reached"
    if isinstance(exc, openai.RateLimitError):
        return "the language model is rate-limited (429)"
    if isinstance(exc, openai.APIStatusError):
        return f"the language model answered HTTP {exc.status_code}"
    return f"the language model failed ({type(exc).__name__})"
