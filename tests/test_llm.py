"""LLM cells against an OpenAI-compatible twisted.web server the tests run on 127.0.0.1."""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

from twisted.internet import reactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from spinrt.cells.llm import LlmApiError, SseParser, completions_url

from . import tls
from .support import Client, eventually, sleep, start_runtime, ws_url

API_KEY = "sk-test-0123456789SECRETKEY"
ANSWER = ["Hello", ",", " **world**", "!", " caf\u00e9 \u2615"]
USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


def chunk(**fields: Any) -> bytes:
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "test-model-2024", **fields}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def token(text: str) -> bytes:
    return chunk(choices=[{"index": 0, "delta": {"content": text}, "finish_reason": None}])


class FakeOpenAI(Resource):
    """``POST /v1/chat/completions``; the requested model picks the behaviour."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[dict[str, Any]] = []
        self.sent: list[float] = []  # when each token of a slow stream left
        self.lost: list[float] = []  # when a client closed a stream early
        self._next: Any = None

    def render_POST(self, request: Request) -> Any:
        body = json.loads(request.content.read())
        self.requests.append({
            "path": request.path.decode(),
            "headers": {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()},
            "body": body,
        })
        model = body["model"]
        if model.startswith("e"):
            return self._error(request, int(model[1:]))
        if model == "json":
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"model": "test-model-2024", "usage": USAGE, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "".join(ANSWER)}, "finish_reason": "stop"}]}).encode()
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-cache")
        request.notifyFinish().addErrback(self._gone)
        if model == "fast":
            request.write(b": keep-alive comment\n\n" + b"".join(token(t) for t in ANSWER))
            self._end(request)
        elif model == "slow":
            self._slowly(request, list(ANSWER), 0.15)
        elif model == "forever":
            self._forever(request)
        elif model == "midstream":
            request.write(token("partial "))
            request.write(b'data: {"error": {"message": "the model is overloaded", "type": "server_error"}}\n\n')
            request.finish()
        elif model == "broken-unicode":  # lone surrogate escapes and raw invalid UTF-8 in the stream
            request.write(b'data: {"choices": [{"index": 0, "delta": {"content": "a\\ud800b"}}]}\n\n')
            request.write(b'data: {"choices": [{"index": 0, "delta": {"content": "c\xff\xfed"}}]}\n\n')
            self._end(request)
        elif model == "nodone":
            request.write(b"".join(token(t).replace(b"\n", b"\r\n") for t in ANSWER))
            request.finish()
        return NOT_DONE_YET

    def _gone(self, _: Any) -> None:
        self.lost.append(time.monotonic())
        if self._next is not None and self._next.active():
            self._next.cancel()  # nothing left scheduled for trial to find

    def _end(self, request: Request) -> None:
        request.write(chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
        request.write(chunk(choices=[], usage=USAGE))
        request.write(b"data: [DONE]\n\n")
        request.finish()

    def _slowly(self, request: Request, tokens: list[str], delay: float) -> None:
        if not tokens:
            self._end(request)
            return
        request.write(token(tokens.pop(0)))
        self.sent.append(time.monotonic())
        self._next = reactor.callLater(delay, self._slowly, request, tokens, delay)

    def _forever(self, request: Request) -> None:
        if self.lost or request.finished:
            return
        request.write(token("tick "))
        self._next = reactor.callLater(0.05, self._forever, request)

    def _error(self, request: Request, code: int) -> bytes:
        request.setResponseCode(code)
        if code == 500:
            request.setHeader(b"content-type", b"text/html")
            return b"<html>Internal Server Error</html>"
        request.setHeader(b"content-type", b"application/json")
        auth = (request.getHeader(b"authorization") or b"").decode()
        messages = {
            401: (f"Incorrect API key provided: {auth.removeprefix('Bearer ')}.", "invalid_api_key"),
            404: ("The model `e404` does not exist", "model_not_found"),
            429: ("Rate limit reached for requests", "rate_limit_exceeded"),
        }
        message, kind = messages[code]
        return json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": kind}}).encode()


class SseTests(unittest.TestCase):
    def test_events_split_anywhere(self) -> None:
        stream = (b": comment\r\n\r\n" + token("a\u00e9") + b"event: x\r\ndata: {\"m\":\r\ndata: 1}\r\n\r\n"
                  + b"data: [DONE]\n\n" + token("after done"))
        for size in (1, 2, 3, 7, len(stream)):
            parser = SseParser()
            events: list[Any] = []
            for i in range(0, len(stream), size):
                events += parser.feed(stream[i:i + size])
            events += parser.close()
            self.assertEqual(events[0]["choices"][0]["delta"]["content"], "a\u00e9", size)
            self.assertEqual(events[1], {"m": 1})
            self.assertEqual(len(events), 2)
            self.assertTrue(parser.done)

    def test_last_event_without_blank_line(self) -> None:
        parser = SseParser()
        self.assertEqual(parser.feed(b'data: {"x": 1}'), [])
        self.assertEqual(parser.close(), [{"x": 1}])

    def test_not_json(self) -> None:
        e = self.assertRaises(LlmApiError, SseParser().feed, b"data: <html>\n\n")
        self.assertIn("not JSON", str(e))

    def test_completions_url(self) -> None:
        self.assertEqual(completions_url("https://api.openai.com/v1"), "https://api.openai.com/v1/chat/completions")
        self.assertEqual(completions_url("https://api.openai.com/v1/"), "https://api.openai.com/v1/chat/completions")
        self.assertEqual(completions_url("http://localhost:11434"), "http://localhost:11434/v1/chat/completions")
        self.assertEqual(completions_url("https://h/openai/v1/chat/completions"), "https://h/openai/v1/chat/completions")


class LlmCellTests(unittest.TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.api = FakeOpenAI()
        _, self.port = tls.listen_http(self, self.api)
        self.base = f"http://127.0.0.1:{self.port}/v1"
        self.logged: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            self.logged.append(repr(event) + (formatEvent(event) or ""))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    async def runtime(self, **environ: str) -> tuple[Any, Client, str]:
        env = {"REQUESTS_CA_BUNDLE": "", "SPIN_LLM_BASE_URL": self.base, "SPIN_LLM_API_KEY": API_KEY,
               "SPIN_LLM_MODEL": "fast", **environ}
        service = await start_runtime(self, environ=env)
        client = await Client.connect(ws_url(service))
        self.addCleanup(client.close)
        session = (await client.request("session.create"))["session"]["id"]
        self.client = client
        return service, client, session

    def tearDown(self) -> None:
        # Whatever happened, the key never reached an event or a log line.
        if hasattr(self, "client"):
            self.assertNotIn(API_KEY, json.dumps(self.client.messages))
        self.assertFalse([line for line in self.logged if API_KEY in line])

    def cell(self, prompt: str = "Say hello", variable: str | None = "answer", **options: Any) -> dict[str, Any]:
        cell: dict[str, Any] = {"id": "c", "type": "llm", "source": prompt, "options": options}
        if variable:
            cell["output_variable"] = variable
        return cell

    async def test_defaults_from_environment_and_result(self) -> None:
        service, client, session = await self.runtime()
        finished = await client.run(session, self.cell())
        self.assertEqual(finished["status"], "ok", finished)
        run = finished["run"]
        self.assertEqual(client.output(run), "".join(ANSWER))
        [result] = client.events(run=run, kind="result")
        self.assertEqual(result["data"]["text/markdown"], "".join(ANSWER))
        stored = service.manager.sessions[session].variables["answer"]
        self.assertEqual((stored["text"], stored["model"], stored["usage"], stored["status"]),
                         ("".join(ANSWER), "test-model-2024", USAGE, "ok"))
        [sent] = self.api.requests
        self.assertEqual(sent["path"], "/v1/chat/completions")
        self.assertEqual(sent["headers"]["authorization"], f"Bearer {API_KEY}")
        self.assertEqual(sent["body"], {"model": "fast", "stream": True, "stream_options": {"include_usage": True},
                                        "messages": [{"role": "user", "content": "Say hello"}]})

    async def test_broken_unicode_from_the_model_becomes_u_fffd(self) -> None:
        service, client, session = await self.runtime(SPIN_LLM_MODEL="broken-unicode")
        finished = await client.run(session, self.cell())
        self.assertEqual(finished["status"], "ok", finished)
        text = client.output(finished["run"])
        self.assertEqual(text, "a\ufffdbc\ufffd\ufffdd")
        self.assertEqual(service.manager.sessions[session].variables["answer"]["text"], text)
        await service.store.drain()
        self.assertIsNone(service.store.fault)
        self.assertEqual(service.store.rows_failed, 0)

    async def test_options_override_the_environment(self) -> None:
        _, client, session = await self.runtime(SPIN_LLM_BASE_URL="http://127.0.0.1:1/v1", SPIN_LLM_MODEL="nope")
        finished = await client.run(session, self.cell(base_url=f"http://127.0.0.1:{self.port}", model="fast",
                                                       system="Be brief.", temperature=0.2, max_tokens=64,
                                                       api_key="sk-other"))
        self.assertEqual(finished["status"], "ok", finished)
        sent = self.api.requests[-1]
        self.assertEqual(sent["headers"]["authorization"], "Bearer sk-other")
        self.assertEqual(sent["body"]["messages"], [{"role": "system", "content": "Be brief."},
                                                    {"role": "user", "content": "Say hello"}])
        self.assertEqual((sent["body"]["temperature"], sent["body"]["max_tokens"]), (0.2, 64))

    async def test_tokens_arrive_while_the_model_writes(self) -> None:
        _, client, session = await self.runtime(SPIN_LLM_MODEL="slow")
        reply = await client.request("cell.run", session=session, cell=self.cell())
        run = reply["run"]
        first = await client.wait_for(lambda m: m.get("event") == "stream" and m.get("run") == run)
        self.assertEqual(first["text"], ANSWER[0])
        self.assertLess(len(self.api.sent), len(ANSWER))  # the model had not finished yet
        self.assertFalse(client.events(run=run, kind="run.finished"))
        finished = await client.wait_for(lambda m: m.get("event") == "run.finished" and m.get("run") == run)
        self.assertEqual(finished["status"], "ok")
        streams = client.events(run=run, kind="stream")
        self.assertGreaterEqual(len(streams), 4)
        self.assertEqual("".join(s["text"] for s in streams), "".join(ANSWER))

    async def test_cancel_closes_the_stream(self) -> None:
        service, client, session = await self.runtime(SPIN_LLM_MODEL="forever")
        reply = await client.request("cell.run", session=session, cell=self.cell())
        run = reply["run"]
        await client.wait_for(lambda m: m.get("event") == "stream" and m.get("run") == run)
        await sleep(0.2)
        at = time.monotonic()
        self.assertTrue((await client.request("run.cancel", session=session, run=run))["ok"])
        finished = await client.wait_for(lambda m: m.get("event") == "run.finished" and m.get("run") == run)
        self.assertEqual(finished["status"], "cancelled")
        self.assertLess(time.monotonic() - at, 1.0)
        await eventually(lambda: bool(self.api.lost), timeout=5)
        self.assertLess(self.api.lost[0] - at, 1.0)  # the server saw the connection close
        stored = service.manager.sessions[session].variables["answer"]
        self.assertEqual(stored["status"], "cancelled")
        self.assertTrue(stored["text"].startswith("tick tick "))
        count = len(client.events(run=run, kind="stream"))
        await sleep(0.2)
        self.assertEqual(len(client.events(run=run, kind="stream")), count)  # nothing after the end

    async def test_timeout_closes_the_stream(self) -> None:
        _, client, session = await self.runtime(SPIN_LLM_MODEL="forever")
        finished = await client.run(session, self.cell(timeout_s=0.5))
        self.assertEqual((finished["status"], finished["error"]["code"]), ("timeout", "timeout"))
        await eventually(lambda: bool(self.api.lost), timeout=5)

    async def test_api_errors(self) -> None:
        _, client, session = await self.runtime()
        expected = {
            "e401": ["HTTP 401", "Incorrect API key provided: ***", "invalid_api_key", "SPIN_LLM_API_KEY"],
            "e404": ["HTTP 404", "The model `e404` does not exist", "SPIN_LLM_BASE_URL"],
            "e429": ["HTTP 429", "Rate limit reached", "retry later"],
            "e500": ["HTTP 500", "Internal Server Error", "retry later"],
        }
        for model, words in expected.items():
            finished = await client.run(session, self.cell(model=model, variable=None))
            self.assertEqual((finished["status"], finished["error"]["code"]), ("error", "llm_error"), model)
            for word in words:
                self.assertIn(word, finished["error"]["evalue"], model)

    async def test_error_inside_the_stream(self) -> None:
        _, client, session = await self.runtime()
        finished = await client.run(session, self.cell(model="midstream"))
        self.assertEqual((finished["status"], finished["error"]["code"]), ("error", "llm_error"))
        self.assertIn("the model is overloaded", finished["error"]["evalue"])
        self.assertEqual(client.output(finished["run"]), "partial ")

    async def test_servers_that_do_not_stream_or_end_abruptly(self) -> None:
        service, client, session = await self.runtime()
        for model in ("json", "nodone"):
            finished = await client.run(session, self.cell(model=model))
            self.assertEqual(finished["status"], "ok", (model, finished))
            self.assertEqual(service.manager.sessions[session].variables["answer"]["text"], "".join(ANSWER))

    async def test_missing_settings(self) -> None:
        _, client, session = await self.runtime(SPIN_LLM_BASE_URL="", SPIN_LLM_MODEL="", SPIN_LLM_API_KEY="")
        finished = await client.run(session, self.cell(model="fast"))
        self.assertEqual(finished["error"]["code"], "bad_option")
        self.assertIn("SPIN_LLM_BASE_URL", finished["error"]["evalue"])
        finished = await client.run(session, self.cell(base_url=self.base))
        self.assertEqual(finished["error"]["code"], "bad_option")
        self.assertIn("SPIN_LLM_MODEL", finished["error"]["evalue"])
        for options, words in (({"temperature": 7}, "temperature"), ({"max_tokens": 0}, "max_tokens"),
                               ({"base_url": "ftp://x"}, "http://")):
            finished = await client.run(session, self.cell(**{"base_url": self.base, "model": "fast", **options}))
            self.assertEqual(finished["error"]["code"], "bad_option", options)
            self.assertIn(words, finished["error"]["evalue"])
        finished = await client.run(session, self.cell("  ", base_url=self.base, model="fast"))
        self.assertIn("prompt", finished["error"]["evalue"])
        self.assertEqual(self.api.requests, [])  # every one refused before any request

    async def test_no_key_no_authorization_header(self) -> None:
        _, client, session = await self.runtime(SPIN_LLM_API_KEY="")
        finished = await client.run(session, self.cell())
        self.assertEqual(finished["status"], "ok", finished)
        self.assertNotIn("authorization", self.api.requests[-1]["headers"])

    async def test_over_verified_https(self) -> None:
        directory = tempfile.mkdtemp(prefix="llm-", dir=os.path.abspath("."))
        pki = tls.make_pki(directory)
        _, port = tls.listen_https(self, self.api, pki.server, pki.intermediate)
        _, client, session = await self.runtime(REQUESTS_CA_BUNDLE=pki.bundle,
                                                SPIN_LLM_BASE_URL=f"https://localhost:{port}/v1")
        finished = await client.run(session, self.cell())
        self.assertEqual(finished["status"], "ok", finished)
        other = tls.make_pki(directory, "Other CA")
        _, client, session = await self.runtime(REQUESTS_CA_BUNDLE=other.bundle,
                                                SPIN_LLM_BASE_URL=f"https://localhost:{port}/v1")
        finished = await client.run(session, self.cell())
        self.assertEqual(finished["error"]["code"], "tls_error")
        self.assertIn("REQUESTS_CA_BUNDLE", finished["error"]["evalue"])
