"""code_python parameters evaluated in short-lived real kernels (spinrt.cells.parameter_eval)."""

from __future__ import annotations

import asyncio
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.trial import unittest

from spinrt.cells.kernels import Kernel
from spinrt.cells.parameter_eval import ParameterEvaluator
from spinrt.parameters import parse_parameters

from .support import eventually, group_alive, start_runtime


class Recording(ParameterEvaluator):
    """Remembers every kernel it used, to prove none is left running."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.kernels: list[Kernel] = []

    async def _kernel(self, processor: Any) -> Kernel:  # type: ignore[override]
        kernel = await ParameterEvaluator._kernel(processor)
        self.kernels.append(kernel)
        return kernel


def code(name: str, source: str) -> dict[str, Any]:
    return {"name": name, "kind": "code_python", "code": source}


class EvaluateTests(unittest.TestCase):
    timeout = 120

    async def evaluator(self, *extra: str, timeout: float = 20.0) -> Recording:
        service = await start_runtime(self, *extra)
        self.service = service
        return Recording(service.processors["python"], timeout=timeout)

    async def evaluate(self, evaluator: ParameterEvaluator, parameters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        checked = parse_parameters("parameters", parameters)
        result: list[dict[str, Any]] = await Deferred.fromFuture(asyncio.ensure_future(evaluator.evaluate(checked)))
        return result

    def assert_no_kernel_left(self, evaluator: Recording) -> None:
        self.assertTrue(evaluator.kernels)
        for kernel in evaluator.kernels:
            self.assertFalse(kernel.alive)
            self.assertFalse(group_alive(kernel.pgid or kernel.pid))
        self.assertEqual(self.service.processors["python"].launcher.live, set())

    async def test_every_kind(self) -> None:
        evaluator = await self.evaluator()
        result = await self.evaluate(evaluator, [
            {"name": "host", "kind": "input", "label": "Host", "default": "db-1"},
            {"name": "region", "kind": "static", "options": ["eu", "us"], "default": "us"},
            code("pod", "pods = ['api-1', 'api-2']\n[p.upper() for p in pods]"),
            code("again", "tuple(pods)"),  # a later parameter sees what an earlier one defined
            code("unicode", "['caf\u00e9', '\u65e5\u672c']"),
            code("shell", "out = !echo one two\nout[0].split()"),  # IPython syntax works too
            code("empty", "[]"),
        ])
        self.assertEqual(result, [
            {"name": "host", "kind": "input", "label": "Host", "default": "db-1", "options": None},
            {"name": "region", "kind": "static", "label": "region", "default": "us", "options": ["eu", "us"]},
            {"name": "pod", "kind": "code_python", "label": "pod", "default": None, "options": ["API-1", "API-2"]},
            {"name": "again", "kind": "code_python", "label": "again", "default": None, "options": ["api-1", "api-2"]},
            {"name": "unicode", "kind": "code_python", "label": "unicode", "default": None, "options": ["caf\u00e9", "\u65e5\u672c"]},
            {"name": "shell", "kind": "code_python", "label": "shell", "default": None, "options": ["one", "two"]},
            {"name": "empty", "kind": "code_python", "label": "empty", "default": None, "options": []},
        ])
        self.assertEqual(len(evaluator.kernels), 1)  # one kernel for the whole request
        self.assert_no_kernel_left(evaluator)

    async def test_failures_are_reported_on_their_parameter(self) -> None:
        evaluator = await self.evaluator()
        result = await self.evaluate(evaluator, [
            code("raises", "1 / 0"),
            code("raises_later", "x = 1\nraise ValueError('no pods found')\n['a']"),
            code("dict", "{'a': 1}"),
            code("string", "'a,b'"),
            code("none", "None"),
            code("mixed", "['a', 2, 'c']"),
            code("nested", "[['a']]"),
            code("statement", "x = ['a']"),
            code("syntax", "[1,"),
            code("too_many", "[str(i) for i in range(10_001)]"),
            code("undefined", "missing_name"),
            code("secret", "[SpinSecrets.get_secret('SPIN_TOKEN')]"),
            code("still_fine", "['ok']"),
        ])
        errors = {p["name"]: p.get("error") for p in result}
        self.assertEqual(errors["raises"], "ZeroDivisionError: division by zero")
        self.assertEqual(errors["raises_later"], "ValueError: no pods found")
        self.assertEqual(errors["dict"], "the last expression must be a list of strings, not dict")
        self.assertEqual(errors["string"], "the last expression must be a list of strings, not str")
        self.assertEqual(errors["none"], "the last expression must be a list of strings, not NoneType")
        self.assertEqual(errors["mixed"], "option 1 is int, not a string")
        self.assertEqual(errors["nested"], "option 0 is list, not a string")
        self.assertEqual(errors["statement"], "the code must end with an expression: the list of options")
        self.assertTrue(errors["syntax"].startswith("SyntaxError"), errors["syntax"])
        self.assertEqual(errors["too_many"], "the code returned 10001 options; at most 10000 are allowed")
        self.assertEqual(errors["undefined"], "NameError: name 'missing_name' is not defined")
        self.assertTrue(errors["secret"].startswith("SecretNotFound"), errors["secret"])
        self.assertIsNone(errors["still_fine"])
        self.assertEqual(result[-1]["options"], ["ok"])
        self.assertTrue(all(p["options"] is None for p in result[:-1]))
        self.assertEqual(len(evaluator.kernels), 1)  # an exception does not cost the kernel
        self.assert_no_kernel_left(evaluator)

    async def test_a_hang_times_out_and_kills_its_kernel(self) -> None:
        evaluator = await self.evaluator(timeout=1.5)
        result = await self.evaluate(evaluator, [
            code("hangs", "while True:\n    pass\n['never']"),
            code("sleeps", "import time\ntime.sleep(3600)\n['never']"),
            code("after", "['fresh']"),
        ])
        self.assertEqual(result[0]["error"], "its code did not finish within 1.5 s")
        self.assertEqual(result[1]["error"], "its code did not finish within 1.5 s")
        self.assertEqual(result[2]["options"], ["fresh"])
        self.assertEqual(len(evaluator.kernels), 3)  # each timeout cost its kernel
        self.assert_no_kernel_left(evaluator)

    async def test_code_that_kills_its_kernel(self) -> None:
        evaluator = await self.evaluator()
        result = await self.evaluate(evaluator, [
            code("exits", "import os\nos._exit(3)"),
            code("after", "['fresh']"),
        ])
        self.assertEqual(result[0]["error"], "the Python kernel exited with status 3 while running its code")
        self.assertEqual(result[1]["options"], ["fresh"])
        self.assert_no_kernel_left(evaluator)

    async def test_the_warm_pool_kernel_is_used(self) -> None:
        evaluator = await self.evaluator("--kernel-pool", "1")
        pool = self.service.processors["python"].pool
        await eventually(lambda: len(pool.ready) == 1, timeout=60)
        (warm,) = pool.ready
        result = await self.evaluate(evaluator, [code("p", "['x']")])
        self.assertEqual(result[0]["options"], ["x"])
        self.assertEqual(evaluator.kernels, [warm])
        self.assertFalse(warm.alive)  # never given back: user code ran in it
        await eventually(lambda: len(pool.ready) == 1 and pool.ready[0] is not warm, timeout=60)

    async def test_concurrent_requests(self) -> None:
        evaluator = await self.evaluator()
        results = await gatherResults([Deferred.fromCoroutine(self.evaluate(evaluator, [code("n", f"['{i}']")]))
                                       for i in range(4)])
        self.assertEqual([r[0]["options"] for r in results], [["0"], ["1"], ["2"], ["3"]])
        self.assertEqual(len(evaluator.kernels), 4)
        self.assert_no_kernel_left(evaluator)

    async def test_without_code_no_kernel_starts(self) -> None:
        evaluator = await self.evaluator()
        result = await self.evaluate(evaluator, [{"name": "a", "kind": "input"}])
        self.assertEqual(result, [{"name": "a", "kind": "input", "label": "a", "default": None, "options": None}])
        self.assertEqual(evaluator.kernels, [])


class NoKernelsTests(unittest.TestCase):
    async def test_a_runtime_without_python(self) -> None:
        evaluator = ParameterEvaluator(None)
        checked = parse_parameters("parameters", [code("p", "['x']"), {"name": "s", "kind": "static", "options": ["a"]}])
        result = await Deferred.fromFuture(asyncio.ensure_future(evaluator.evaluate(checked)))
        self.assertEqual(result[0]["error"], "this runtime has no Python kernels")
        self.assertIsNone(result[0]["options"])
        self.assertEqual(result[1]["options"], ["a"])
