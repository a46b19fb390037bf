"""LLM cells: an OpenAI-compatible ``/v1/chat/completions`` call with ``stream: true``.

The cell's ``source`` is the prompt. Tokens are emitted as ``stream``
(stdout) events as the server sends them; the whole answer then arrives as a
``text/markdown`` ``result`` and as the CellResult ``{text, model, usage}``.
``run.cancel`` closes the HTTP connection, which is how such servers learn
to stop generating. The API key travels only in the Authorization header:
it is never emitted, logged, or echoed in an error (server messages are
scrubbed of it).
"""

from __future__ import annotations

import codecs
import json
from typing import Any, Mapping

import attrs
from hyperlink import URL
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..outbound import Outbound
from ..protocol import Cell
from .base import CellContext, ICellProcessor, Outcome, RuntimeServices
from .httpio import (
    Aborted,
    BodyReader,
    ResponseTooLarge,
    describe_failure,
    max_bytes_from_environ,
    read_body,
    shown_url,
)

_log = Logger()

ENV_BASE_URL = "SPIN_LLM_BASE_URL"
ENV_API_KEY = "SPIN_LLM_API_KEY"
ENV_MODEL = "SPIN_LLM_MODEL"
ERROR_BODY_LIMIT = 1024 * 1024
_HINTS = {
    401: f"check the API key (options.api_key or {ENV_API_KEY})",
    403: f"check the API key's permissions (options.api_key or {ENV_API_KEY})",
    404: f"check the model name and the base URL (options.base_url or {ENV_BASE_URL}, usually ending in /v1)",
    429: "the API is rate limiting this key or its quota is used up; retry later",
}


class LlmOptionError(ValueError):
    pass


class LlmApiError(Exception):
    """The API reported an error (HTTP status or an error event in the stream)."""


@attrs.frozen
class LlmRequest:
    url: str
    headers: dict[str, str] = attrs.field(repr=False)
    payload: dict[str, Any]
    api_key: str = attrs.field(repr=False)


def completions_url(base_url: str) -> str:
    """``.../v1`` -> ``.../v1/chat/completions``; a bare host gets ``/v1`` too."""
    base = base_url.strip().rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if not URL.from_text(base).path or URL.from_text(base).path == ("",):
        return base + "/v1/chat/completions"
    return base + "/chat/completions"


def build_llm_request(cell: Cell, environ: Mapping[str, str]) -> LlmRequest:
    o = cell.options
    prompt = cell.source
    if not prompt.strip():
        raise LlmOptionError("the cell source (the prompt) is empty")

    def text_option(name: str, env: str | None = None) -> str | None:
        value = o.get(name)
        if value is None and env is not None:
            value = environ.get(env) or None
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise LlmOptionError(f"options.{name} must be a non-empty string")
        return value

    base_url = text_option("base_url", ENV_BASE_URL)
    if base_url is None:
        raise LlmOptionError(f"no API base URL: set options.base_url or {ENV_BASE_URL} on the runtime "
                             f"(e.g. https://api.openai.com/v1)")
    model = text_option("model", ENV_MODEL)
    if model is None:
        raise LlmOptionError(f"no model: set options.model or {ENV_MODEL} on the runtime")
    api_key = text_option("api_key", ENV_API_KEY) or ""
    system = text_option("system")
    try:
        parsed = URL.from_text(base_url.strip())
    except Exception:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise LlmOptionError("the base URL must be an absolute http:// or https:// URL")
    if ":" in parsed.host:
        raise LlmOptionError("the base URL: IPv6 address literals are not supported by the HTTP client; use a host name")

    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    payload: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},  # usage arrives in the last chunk
    }
    temperature = o.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
            raise LlmOptionError("options.temperature must be a number from 0 to 2")
        payload["temperature"] = temperature
    max_tokens = o.get("max_tokens")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise LlmOptionError("options.max_tokens must be a positive whole number")
        payload["max_tokens"] = max_tokens
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if api_key:
        if "\r" in api_key or "\n" in api_key:
            raise LlmOptionError("the API key must not contain line breaks")
        headers["Authorization"] = f"Bearer {api_key}"
    return LlmRequest(completions_url(base_url), headers, payload, api_key)


class SseParser:
    """Server-sent events -> JSON chunks of a chat completion stream."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._line = ""
        self._data: list[str] = []
        self.done = False

    def feed(self, data: bytes) -> list[Any]:
        events: list[Any] = []
        text = self._line + self._decoder.decode(data)
        lines = text.split("\n")
        self._line = lines.pop()
        for line in lines:
            line = line.rstrip("\r")
            if not line:
                self._dispatch(events)
            elif line.startswith("data:"):
                self._data.append(line[5:].removeprefix(" "))
            # comments (":...") and other fields (event:, id:, retry:) are ignored
        return events

    def close(self) -> list[Any]:
        events: list[Any] = []
        if self._line.startswith("data:"):
            self._data.append(self._line[5:].removeprefix(" "))
        self._line = ""
        self._dispatch(events)
        return events

    def _dispatch(self, events: list[Any]) -> None:
        if not self._data:
            return
        data = "\n".join(self._data)
        self._data = []
        if self.done:
            return
        if data.strip() == "[DONE]":
            self.done = True
            return
        try:
            events.append(json.loads(data))
        except ValueError:
            raise LlmApiError(f"the API sent a stream event that is not JSON: {data[:200]!r}") from None


class _Answer:
    """What the stream has said so far."""

    def __init__(self, ctx: CellContext, api_key: str) -> None:
        self.ctx = ctx
        self.api_key = api_key
        self.parts: list[str] = []
        self.model: str | None = None
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.parser = SseParser()

    def on_data(self, data: bytes) -> None:
        self._take(self.parser.feed(data))

    def finish(self) -> None:
        self._take(self.parser.close())

    def take_json(self, body: bytes) -> None:
        try:
            self._take([json.loads(body)])
        except ValueError:
            raise LlmApiError("the API answered with a body that is not JSON") from None

    def _take(self, chunks: list[Any]) -> None:
        text = []
        for chunk in chunks:
            if not isinstance(chunk, dict):
                continue
            if chunk.get("error"):
                raise LlmApiError(scrub(error_text(chunk), self.api_key))
            self.model = chunk.get("model") or self.model
            if isinstance(chunk.get("usage"), dict):
                self.usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                if not isinstance(choice, dict):
                    continue
                piece = (choice.get("delta") or choice.get("message") or {}).get("content")
                if isinstance(piece, str) and piece:
                    text.append(piece)
                self.finish_reason = choice.get("finish_reason") or self.finish_reason
        if text:  # one event per network read: tokens show up as they arrive
            joined = "".join(text)
            self.parts.append(joined)
            self.ctx.stream("stdout", joined)

    def value(self) -> dict[str, Any]:
        return {"text": "".join(self.parts), "model": self.model, "usage": self.usage,
                "finish_reason": self.finish_reason}


def error_text(body: Any) -> str:
    """The human part of an OpenAI-style error body."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or "").strip()
        code = err.get("code") or err.get("type")
        return f"{message} ({code})" if message and code else message or str(code or "unknown error")
    if isinstance(err, str):
        return err
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])
    return ""


def scrub(text: str, api_key: str) -> str:
    return text.replace(api_key, "***") if api_key else text


@implementer(ICellProcessor)
class LlmProcessor:
    def __init__(self, services: RuntimeServices) -> None:
        self.services = services
        self.outbound: Outbound = services.outbound or Outbound.from_environ(services.environ, services.reactor)
        self.max_bytes = max_bytes_from_environ(services.environ)

    def run(self, cell: Cell, ctx: CellContext) -> Deferred[Outcome]:
        try:
            request = build_llm_request(cell, self.services.environ)
        except LlmOptionError as e:
            return succeed(Outcome.failed("bad_option", "OptionError", str(e)))
        return Deferred.fromCoroutine(self._run(request, cell, ctx))

    async def _run(self, req: LlmRequest, cell: Cell, ctx: CellContext) -> Outcome:
        answer = _Answer(ctx, req.api_key)
        state: dict[str, Any] = {"reader": None}
        try:
            pending = self.outbound.request("POST", req.url, headers=req.headers, json=req.payload,
                                            allow_redirects=False)
        except Exception as e:  # treq refuses some URLs before any I/O
            return Outcome.failed("bad_option", type(e).__name__, f"cannot request {shown_url(req.url)}: {e}")

        def stop(reason: str) -> None:
            reader: BodyReader | None = state["reader"]
            if reader is not None:
                reader.abort(Aborted(reason))  # closing the connection stops the generation
            else:
                pending.cancel()  # also reaches the Deferred it waits on: the Agent aborts the connection

        ctx.on_interrupt(stop)
        try:
            response = await pending
            if not 200 <= response.code < 300:
                reader = state["reader"] = read_body(response, ctx.reactor, ERROR_BODY_LIMIT)
                return self._api_error(response.code, await reader.done, req)
            media = (response.headers.getRawHeaders(b"content-type") or [b""])[0].decode("latin-1").lower()
            if media.startswith("application/json"):  # a server that ignored stream: true
                reader = state["reader"] = read_body(response, ctx.reactor, self.max_bytes)
                if ctx.interrupted is not None:
                    reader.abort(Aborted(ctx.interrupted))
                answer.take_json(await reader.done)
            else:
                reader = state["reader"] = read_body(response, ctx.reactor, self.max_bytes, answer.on_data)
                if ctx.interrupted is not None:
                    reader.abort(Aborted(ctx.interrupted))
                await reader.done
                answer.finish()
        except Exception:
            failure = Failure()
            if ctx.interrupted is not None:
                return Outcome(status="error", value=answer.value())  # the runner names it
            if failure.check(LlmApiError):
                return Outcome.failed("llm_error", "LLMError", f"the LLM API reported an error: {failure.value}",
                                      value=answer.value())
            if failure.check(ResponseTooLarge):
                return Outcome.failed("response_too_large", "ResponseTooLarge", str(failure.value),
                                      value=answer.value())
            code, ename, message = describe_failure(failure, req.url, self.outbound.tls.verified)
            return Outcome.failed(code, ename, scrub(message, req.api_key), value=answer.value())
        value = answer.value()
        ctx.result({"text/markdown": value["text"], "text/plain": value["text"]}, variable=cell.output_variable)
        return Outcome(status="ok", value=value)

    def _api_error(self, code: int, body: bytes, req: LlmRequest) -> Outcome:
        try:
            detail = error_text(json.loads(body))
        except ValueError:
            detail = body.decode("utf-8", "replace").strip()[:500]
        hint = _HINTS.get(code) or ("the API failed; retry later" if code >= 500 else "")
        message = f"the LLM API at {shown_url(req.url)} answered HTTP {code}"
        message += f": {detail}" if detail else ""
        message += f" -- {hint}" if hint else ""
        return Outcome.failed("llm_error", "LLMError", scrub(message, req.api_key))

    def close_session(self, session_id: str) -> None:
        return None

    def stop(self) -> Deferred[Any]:
        return self.outbound.close()
