"""The failure throttle: a correct token is never refused because of someone
else's failures, wrong guesses are held to a few per second per client, and
behind a trusted proxy each client is itself. Clock-driven unit tests, then
real upgrades and HTTP requests against an in-process runtime."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from spinrt.web.throttle import FailureThrottle, Gate, Verdict, throttle_key

from . import rawhttp
from .support import TOKEN, sleep, start_runtime

A, B = "198.51.100.7", "203.0.113.9"


class Recorder:
    """Presents tokens to a Gate on a Clock and records when each answer goes out."""

    def __init__(self, **kw: Any) -> None:
        self.clock = Clock()
        self.gate = Gate(TOKEN, self.clock, **kw)
        self.checked: list[str] = []
        checker = self.gate.tokens._checker
        original = checker.check

        def counting(candidate: str | None) -> bool:
            self.checked.append(candidate or "")
            return original(candidate)

        checker.check = counting  # type: ignore[method-assign]
        self.unauthorized_at: list[float] = []  # when each 401 went out
        self.throttled_at: list[tuple[float, float]] = []  # (asked, answered) of each 429

    def present(self, address: str, token: str | None) -> Verdict:
        asked = self.clock.seconds()
        verdict = self.gate.check(address, token)
        if verdict.accepted:
            return verdict
        if verdict.answer is None:
            self.throttled_at.append((asked, asked))
        elif verdict.retry_after:
            verdict.answer.addCallback(lambda _: self.throttled_at.append((asked, self.clock.seconds())))
        else:
            verdict.answer.addCallback(lambda _: self.unauthorized_at.append(self.clock.seconds()))
        return verdict

    def wrong_tokens_checked(self) -> int:
        return sum(1 for t in self.checked if t != TOKEN)


class GateUnitTests(unittest.TestCase):
    def test_wrong_token_answered_after_the_delay_never_sleeping(self) -> None:
        r = Recorder()
        verdict = r.present(A, "wrong")
        self.assertFalse(verdict.accepted)
        self.assertEqual(verdict.retry_after, 0)
        self.assertEqual(r.unauthorized_at, [])
        r.clock.advance(0.99)
        self.assertEqual(r.unauthorized_at, [])
        r.clock.advance(0.01)
        self.assertEqual(r.unauthorized_at, [1.0])

    def test_six_wrong_then_right_from_the_same_address(self) -> None:
        r = Recorder()
        for _ in range(6):  # one after the other, as a stale browser tab retries
            r.present(A, "stale")
            r.clock.advance(1.0)
        self.assertTrue(r.present(A, TOKEN).accepted)
        # ... and with six, or sixty, still waiting for their answer: the
        # token is looked at first (behind a proxy that is not trusted, every
        # user shares one address).
        for _ in range(60):
            r.present(A, "stale")
        self.assertTrue(r.present(A, TOKEN).accepted)

    def test_right_token_of_another_client_is_never_refused(self) -> None:
        r = Recorder()
        for step in range(600):  # A floods for a minute, ten attempts every 0.1 s
            for _ in range(10):
                r.present(A, f"guess-{step}")
            self.assertTrue(r.present(B, TOKEN).accepted)
            r.clock.advance(0.1)
        # B's own typo is answered after the usual delay, not behind A's queue.
        r.unauthorized_at.clear()
        r.present(B, "typo")
        r.clock.advance(1.0)
        self.assertIn(r.clock.seconds(), r.unauthorized_at)

    def test_wrong_guesses_are_held_to_a_few_per_second(self) -> None:
        r = Recorder()
        for step in range(600):  # 100 attempts per second for 60 s from one address
            for _ in range(10):
                r.present(A, f"guess-{step}")
            r.clock.advance(0.1)
        r.clock.pump([0.1] * 100)
        # At most 1 / interval (2) 401s per second, in any second (times are
        # seen in steps of 0.1 s).
        self.assertLessEqual(len(r.unauthorized_at), 2 * 70 + 1)
        self.assertGreaterEqual(len(r.unauthorized_at), 2 * 59)
        for t in r.unauthorized_at:
            in_one_second = [u for u in r.unauthorized_at if t <= u < t + 0.9]
            self.assertLessEqual(len(in_one_second), 2, t)
        # Everything else got 429, never sooner than the delay: no answer to
        # a wrong token is fast enough to guess at full speed.
        self.assertEqual(len(r.unauthorized_at) + len(r.throttled_at), 6000)
        self.assertEqual(r.wrong_tokens_checked(), 6000)
        self.assertTrue(all(answered - asked >= 1.0 - 1e-9 for asked, answered in r.throttled_at))

    def test_concurrent_burst(self) -> None:
        r = Recorder()
        verdicts = [r.present(A, "wrong") for _ in range(100)]
        unauthorized = [v for v in verdicts if not v.retry_after]
        throttled = [v for v in verdicts if v.retry_after]
        self.assertEqual((len(unauthorized), len(throttled)), (8, 92))
        self.assertEqual({v.retry_after for v in throttled}, {1})
        self.assertTrue(all(v.answer is not None for v in verdicts))  # every answer waits
        r.clock.pump([0.25] * 40)
        self.assertEqual(r.unauthorized_at, [1.0 + 0.5 * i for i in range(8)])
        self.assertEqual([answered for _, answered in r.throttled_at], [1.0] * 92)
        self.assertEqual(r.gate.throttle.pending_total, 0)
        self.assertEqual(r.gate.throttle.retry_after(A), 0)

    def test_retry_after_counts_down_whole_seconds(self) -> None:
        r = Recorder(delay=3.0, interval=1.0, max_pending=2)
        r.present(A, "x")
        r.present(A, "x")
        self.assertEqual(r.present(A, "x").retry_after, 3)
        self.assertTrue(r.present(A, TOKEN).accepted)  # the right token meanwhile
        r.clock.advance(2.2)
        self.assertEqual(r.present(A, "x").retry_after, 1)  # ceil(0.8)
        r.clock.advance(0.8)
        self.assertEqual(r.present(A, "x").retry_after, 0)

    def test_success_of_another_client_does_not_reset_a(self) -> None:
        r = Recorder()
        for _ in range(7):
            r.present(A, "wrong")
        self.assertTrue(r.present(B, TOKEN).accepted)
        r.present(A, "wrong")  # the eighth waits behind the seven
        self.assertGreater(r.present(A, "wrong").retry_after, 0)
        self.assertTrue(r.present(B, TOKEN).accepted)
        r.clock.pump([0.1] * 60)
        self.assertAlmostEqual(r.unauthorized_at[-1], 1.0 + 0.5 * 7, delta=0.11)

    def test_no_reset_by_own_success_either(self) -> None:
        r = Recorder()
        for _ in range(4):
            r.present(A, "wrong")
        self.assertTrue(r.present(A, TOKEN).accepted)
        r.present(A, "wrong")
        r.clock.pump([0.1] * 60)
        self.assertAlmostEqual(r.unauthorized_at[-1], 1.0 + 0.5 * 4, delta=0.11)

    def test_ipv6_clients_grouped_by_64(self) -> None:
        self.assertEqual(throttle_key("2001:db8::1"), throttle_key("2001:db8::ffff:1"))
        self.assertNotEqual(throttle_key("2001:db8::1"), throttle_key("2001:db8:0:1::1"))
        self.assertEqual(throttle_key("::ffff:192.0.2.1"), "192.0.2.1")
        self.assertEqual(throttle_key("192.0.2.1"), "192.0.2.1")
        self.assertEqual(throttle_key("unknown"), "unknown")
        r = Recorder()
        verdicts = [r.present(f"2001:db8::{i + 1:x}", "wrong") for i in range(20)]  # new address, same /64
        self.assertEqual(sum(1 for v in verdicts if v.retry_after), 12)  # one client: 8 401s, then 429s
        self.assertEqual(len(r.gate.throttle._table), 1)

    def test_memory_is_bounded(self) -> None:
        r = Recorder(max_entries=100, max_pending_total=50)
        verdicts = [r.present(f"10.0.{i // 256}.{i % 256}", "wrong") for i in range(5000)]
        throttle = r.gate.throttle
        self.assertLessEqual(len(throttle._table), 100)
        self.assertEqual(throttle.pending_total, 50)
        # Past the runtime-wide bound wrong tokens get 429 at once ...
        self.assertEqual(sum(1 for v in verdicts if v.answer is not None), 50)
        self.assertTrue(all(v.retry_after == 1 for v in verdicts if v.answer is None))
        self.assertEqual(len(r.throttled_at), 5000 - 50)
        # ... and right tokens still go through.
        self.assertTrue(r.present("10.9.9.9", TOKEN).accepted)
        r.clock.advance(5)
        self.assertEqual(throttle.pending_total, 0)
        self.assertEqual(len(r.unauthorized_at), 50)
        # The address table stays bounded however many addresses fail.
        big = FailureThrottle(r.clock, max_entries=100, max_pending_total=10**6)
        for i in range(5_000):
            big.failed(f"2001:db8:{i:x}::1")
            if i % 500 == 0:
                r.clock.advance(0.5)
            self.assertLessEqual(len(big._table), 100)
        r.clock.advance(5)
        self.assertEqual(big.pending_total, 0)

    @given(st.lists(st.tuples(st.sampled_from([A, B, "192.0.2.1"]), st.booleans(),
                              st.floats(min_value=0, max_value=2)), max_size=200))
    @settings(max_examples=100, deadline=None)
    def test_properties(self, steps: list[tuple[str, bool, float]]) -> None:
        r = Recorder()
        for address, right, wait in steps:
            verdict = r.present(address, TOKEN if right else "wrong")
            self.assertEqual(verdict.accepted, right)  # a right token always, a wrong one never
            self.assertLessEqual(r.gate.throttle.pending_total, 200)
            r.clock.advance(wait)
        r.clock.advance(r.gate.throttle.longest_wait * 3 + 1)
        self.assertEqual(r.gate.throttle.pending_total, 0)
        # Every wrong token got exactly one answer, a 401 or a 429.
        self.assertEqual(len(r.unauthorized_at) + len(r.throttled_at), r.wrong_tokens_checked())


class FailureThrottleTests(unittest.TestCase):
    def test_failed_schedules_and_releases(self) -> None:
        clock = Clock()
        throttle = FailureThrottle(clock, delay=1.0, interval=0.5, max_pending=3)
        fired: list[float] = []
        for _ in range(3):
            failed = throttle.failed(A)
            assert failed is not None
            d, retry = failed
            self.assertEqual(retry, 0)
            d.addCallback(lambda _: fired.append(clock.seconds()))
        self.assertEqual(throttle.retry_after(A), 1.0)
        over = throttle.failed(A)
        assert over is not None
        self.assertEqual(over[1], 1)  # a 429, after the plain delay
        over[0].addCallback(lambda _: fired.append(-clock.seconds()))
        self.assertEqual(throttle.retry_after(B), 0)
        clock.pump([0.5] * 6)
        self.assertEqual(fired, [1.0, -1.0, 1.5, 2.0])
        self.assertEqual(throttle.longest_wait, 2.5)


class ThrottleUpgradeTests(unittest.TestCase):
    """Real upgrades and HTTP requests. The test client connects from
    127.0.0.1, which plays the reverse proxy where one is trusted."""

    timeout = 120

    async def setUp(self) -> None:
        self.logged: list[str] = []

        def observe(event: dict) -> None:
            self.logged.append(formatEvent(event) or "")

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    async def runtime(self, *extra: str) -> int:
        self.service = await start_runtime(self, *extra)
        return int(self.service.addresses[0]["port"])

    async def test_six_wrong_then_right_from_one_address(self) -> None:
        port = await self.runtime()
        for _ in range(6):
            response = await rawhttp.upgrade(port, token="stale-token")
            self.assertEqual(response.status, 401)
            self.assertGreaterEqual(response.elapsed, 0.9)  # the 401 waited
        self.assertEqual((await rawhttp.upgrade(port)).status, 101)
        self.assertEqual((await rawhttp.get(port, "/api/status")).status, 200)

    async def test_flood_gets_429_with_retry_after_on_ws_and_http(self) -> None:
        port = await self.runtime()
        flood = [defer.ensureDeferred(rawhttp.upgrade(port, token=f"guess-{i}")) for i in range(30)]
        await sleep(0.3)
        ws, http = await defer.gatherResults([defer.ensureDeferred(rawhttp.upgrade(port, token="one-more")),
                                              defer.ensureDeferred(rawhttp.get(port, "/api/status", token="one-more"))])
        self.assertEqual(ws.status, 429)
        self.assertGreaterEqual(int(ws.header("retry-after") or "0"), 1)
        self.assertGreaterEqual(ws.elapsed, 0.9)  # even the 429 waits: no fast answers to guesses
        self.assertEqual(http.status, 429)
        self.assertGreaterEqual(int(http.header("retry-after") or "0"), 1)
        # In the middle of the flood, from the same address (everyone's,
        # behind a proxy that is not trusted), the right token goes through at once.
        flood += [defer.ensureDeferred(rawhttp.upgrade(port, token=f"more-{i}")) for i in range(10)]
        await sleep(0.1)
        ok = await rawhttp.upgrade(port)
        self.assertEqual(ok.status, 101)
        self.assertLess(ok.elapsed, 0.5)
        self.assertEqual((await rawhttp.get(port, "/api/status")).status, 200)
        results = await defer.gatherResults(flood)
        first = sorted(r.status for r in results[:30])
        self.assertEqual((first.count(401), first.count(429)), (8, 22))
        statuses = [r.status for r in results[30:]]  # sent once the first 401s were going out
        self.assertEqual(statuses.count(401) + statuses.count(429), 10)
        self.assertLessEqual(statuses.count(401), 2)
        self.assertTrue(all(r.header("retry-after") for r in results if r.status == 429))
        # The eight 401s went out at least 0.5 s apart: two guesses a second.
        times = sorted(r.elapsed for r in results[:30] if r.status == 401)
        self.assertGreaterEqual(times[-1] - times[0], 7 * 0.5 - 0.2)
        # Once the flood has been answered, the right token works again.
        self.assertEqual((await rawhttp.upgrade(port)).status, 101)

    async def test_behind_a_trusted_proxy_each_client_is_itself(self) -> None:
        port = await self.runtime("--trusted-proxy", "127.0.0.1/32")
        flood = [defer.ensureDeferred(rawhttp.upgrade(port, ("X-Forwarded-For", A), token=f"guess-{i}")) for i in range(20)]
        flood += [defer.ensureDeferred(rawhttp.get(port, "/api/status", ("X-Forwarded-For", A), token=f"guess-{i}")) for i in range(5)]
        await sleep(0.2)
        self.assertGreater(self.service.factory.throttle.retry_after(A), 0)
        # A client that sends its own X-Forwarded-For cannot pose as B: the
        # address the proxy appended for it (right-most) is what counts.
        spoof = await rawhttp.upgrade(port, ("X-Forwarded-For", f"{B}, {A}"), token="x")
        self.assertEqual(spoof.status, 429)
        # B, through the same proxy, is not held up at all.
        ok = await rawhttp.upgrade(port, ("X-Forwarded-For", B))
        self.assertEqual(ok.status, 101)
        self.assertLess(ok.elapsed, 0.5)
        self.assertEqual((await rawhttp.get(port, "/api/status", ("X-Forwarded-For", B))).status, 200)
        self.assertEqual((await rawhttp.upgrade(port, ("Forwarded", f"for={B}"))).status, 101)
        # B's typo is a plain, delayed 401 (not a 429 earned by A).
        self.assertEqual((await rawhttp.upgrade(port, ("X-Forwarded-For", B), token="typo")).status, 401)
        await defer.gatherResults(flood)
        self.assertEqual(self.service.factory.throttle.retry_after(B), 0)
        # The log lines name the client and the proxy it came through.
        text = "\n".join(self.logged)
        self.assertIn(f"refused a WebSocket from {A} via 127.0.0.1: wrong token", text)
        self.assertIn(f"refused a WebSocket from {A} via 127.0.0.1: throttled", text)
        self.assertIn(f'"{B}" - owner ', text)  # the HTTP access log names the identity
        self.assertIn(f'"{A}" - - ', text)
        self.assertNotIn("guess-", text)

    async def test_without_trusted_proxy_forwarded_headers_are_ignored(self) -> None:
        port = await self.runtime("--trusted-proxy", "10.0.0.0/8")  # not the test client
        # Escaping the throttle with a new X-Forwarded-For per attempt fails ...
        flood = [defer.ensureDeferred(rawhttp.upgrade(port, ("X-Forwarded-For", f"192.0.2.{i}"), ("Forwarded", f"for=192.0.2.{i}"),
                                 token="x")) for i in range(20)]
        results = await defer.gatherResults(flood)
        self.assertEqual(sorted(r.status for r in results).count(429), 12)
        # ... and so does framing someone else: only 127.0.0.1 was counted.
        self.assertEqual(self.service.factory.throttle.retry_after("192.0.2.1"), 0)
        text = "\n".join(self.logged)
        self.assertIn("refused a WebSocket from 127.0.0.1: wrong token", text)
        self.assertNotIn("192.0.2.", text)

    async def test_client_that_leaves_while_waiting(self) -> None:
        port = await self.runtime()
        gone = await rawhttp.upgrade(port, token="x", hang_up_after=0.2)
        self.assertEqual(gone.status, 0)
        gone_http = rawhttp.request(port, ["GET /api/status HTTP/1.1", "Host: x", "Authorization: Bearer x"],
                                    hang_up_after=0.2)
        self.assertEqual((await gone_http).status, 0)
        await sleep(2.0)  # their answers fall due on closed connections
        self.assertEqual(self.service.factory.throttle.pending_total, 0)
        self.assertEqual((await rawhttp.upgrade(port)).status, 101)
        body = await rawhttp.get(port, "/api/status")
        self.assertEqual(body.status, 200)

    async def test_throttled_status_body_is_json(self) -> None:
        import treq
        from twisted.internet import reactor
        from twisted.web.client import HTTPConnectionPool

        port = await self.runtime()
        pool = HTTPConnectionPool(reactor, persistent=False)
        flood = [defer.ensureDeferred(rawhttp.upgrade(port, token="x")) for _ in range(8)]
        await sleep(0.2)
        response = await treq.get(f"http://127.0.0.1:{port}/api/status", headers={"Authorization": "Bearer x"}, pool=pool)
        self.assertEqual(response.code, 429)
        self.assertEqual(json.loads(await response.content())["error"]["code"], "throttled")
        await defer.gatherResults(flood)
        response = await treq.get(f"http://127.0.0.1:{port}/api/status", headers={"Authorization": "Bearer x"}, pool=pool)
        self.assertEqual(response.code, 401)
        self.assertEqual(response.headers.getRawHeaders("www-authenticate"), ['Bearer realm="spin-runtime"'])
        self.assertEqual(json.loads(await response.content())["error"]["code"], "unauthorized")
