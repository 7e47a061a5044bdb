"""The adapter to an OpenAI-compatible chat-completions server (OpenAI, Azure, Ollama, vLLM,
llama.cpp, LiteLLM…): one streamed call with tools, its errors translated into ours."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from services.planner.agent import ModelAnswer, ModelCall
from services.planner.settings import ModelSettings
from services.runtime.errors import InterlockError

OnDelta = Callable[[str], Awaitable[None]]
_KEYLIKE = re.compile(r"\b(sk|key|tok)[-_][A-Za-z0-9_\-*]{6,}", re.IGNORECASE)


class ModelError(InterlockError):
    """A model call failed. `transient` ones (rate limits, 5xx, timeouts) are worth retrying."""

    def __init__(self, message: str, *, status: int = 0, transient: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient
        self.retry_after = retry_after


class ChatModel(Protocol):
    name: str

    async def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                       on_delta: OnDelta) -> ModelAnswer: ...


def redact(text: str, secret: str = "") -> str:
    """Error texts may echo the API key (e.g. 'Incorrect API key provided: sk-…')."""
    if secret:
        text = text.replace(secret, "[redacted]")
    return _KEYLIKE.sub("[redacted]", text)


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue
    return None


class OpenAIChat:
    """Streams one chat completion. Retries are ours (recorded as events), not the client's."""

    def __init__(self, settings: ModelSettings) -> None:
        # Imported here, not at the top: the client costs most of a second of CPU to import,
        # paid at every planner start even with no model configured (direct mode).
        import openai

        self.name = settings.model
        self.settings = settings
        self.client = openai.AsyncOpenAI(
            api_key=settings.api_key or "not-needed",  # local servers ignore it
            base_url=settings.base_url or None,
            max_retries=0,
            timeout=settings.timeout_s,
        )

    async def close(self) -> None:
        await self.client.close()

    async def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                       on_delta: OnDelta) -> ModelAnswer:
        kwargs: dict[str, Any] = {"model": self.settings.model, "messages": messages,
                                  "tools": tools, "stream": True}
        if self.settings.temperature is not None:
            kwargs["temperature"] = self.settings.temperature
        text: list[str] = []
        slots: dict[int, dict[str, str]] = {}
        model, usage = "", (0, 0)
        import openai  # already imported by __init__

        try:
            stream = await self.client.chat.completions.create(**kwargs)
            async for chunk in stream:
                model = chunk.model or model
                if chunk.usage is not None:
                    usage = (chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
                for choice in chunk.choices:
                    delta = choice.delta
                    if delta is None:
                        continue
                    if delta.content:
                        text.append(delta.content)
                        await on_delta(delta.content)
                    for tc in delta.tool_calls or ():
                        slot = slots.setdefault(tc.index, {"name": "", "arguments": ""})
                        if tc.function is not None:
                            if tc.function.name and not slot["name"]:
                                slot["name"] = tc.function.name
                            if tc.function.arguments:
                                slot["arguments"] += tc.function.arguments
        except openai.APIStatusError as exc:
            status = exc.status_code
            raise ModelError(
                redact(f"{type(exc).__name__} {status}: {exc.message}", self.settings.api_key),
                status=status, transient=status in (408, 409, 429) or status >= 500,
                retry_after=_retry_after(exc.response.headers),
            ) from None
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise ModelError(redact(f"{type(exc).__name__}: {exc}", self.settings.api_key),
                             transient=True) from None
        except openai.APIError as exc:  # e.g. an error event in the middle of the stream
            raise ModelError(redact(f"{type(exc).__name__}: {exc}", self.settings.api_key),
                             transient=True) from None
        calls = tuple(ModelCall(s["name"], s["arguments"]) for _, s in sorted(slots.items())
                      if s["name"])
        return ModelAnswer(text="".join(text), calls=calls, model=model,
                           prompt_tokens=usage[0], completion_tokens=usage[1])
