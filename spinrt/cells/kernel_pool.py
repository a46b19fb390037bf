"""The warm pool: up to N started, idle kernels waiting for a new session.

Ready plus starting kernels never exceed N. A kernel taken by a session is
replaced in the background; a pooled kernel that dies is dropped and
replaced. Repeated start failures back off instead of looping.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from twisted.logger import Logger

from .kernel_launcher import KernelLauncher
from .kernels import Kernel, background

_log = Logger()

RETRY_DELAYS = (1.0, 5.0, 30.0, 120.0)  # after consecutive start failures


class KernelPool:
    def __init__(self, launcher: KernelLauncher, size: int, cwd: str) -> None:
        self.launcher = launcher
        self.size = max(0, size)
        self.cwd = cwd  # a kernel moves to its session's directory when taken
        self.ready: collections.deque[Kernel] = collections.deque()
        self.starting = 0
        self.stopped = False
        self._failures = 0
        self._retry: Any = None
        # Sessions waiting for a kernel the pool is booting (sooner than their own).
        self._waiters: collections.deque[asyncio.Future[Kernel | None]] = collections.deque()

    def fill(self) -> None:
        """Start kernels until ready + starting == size."""
        if self.stopped or self._retry is not None:
            return
        while len(self.ready) + self.starting < self.size:
            self.starting += 1
            background(self._start_one())

    async def _start_one(self) -> None:
        try:
            kernel = await self.launcher.start(self.cwd)
        except Exception as e:
            self.starting -= 1
            # Waiters beyond what is still starting boot their own kernel.
            while len(self._waiters) > self.starting:
                self._waiters.pop().set_result(None)
            if self.stopped:
                return
            delay = RETRY_DELAYS[min(self._failures, len(RETRY_DELAYS) - 1)]
            self._failures += 1
            _log.error("warm kernel pool: {e}; retrying in {delay:g} s", e=e, delay=delay)
            if self._retry is None:
                self._retry = asyncio.get_running_loop().call_later(delay, self._retry_now)
            return
        self.starting -= 1
        self._failures = 0
        if self.stopped:
            await kernel.shutdown("was stopped with the runtime")
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(kernel)
                asyncio.get_running_loop().call_soon(self.fill)
                return
        kernel.on_death.append(self._died)
        self.ready.append(kernel)

    def _retry_now(self) -> None:
        self._retry = None
        self.fill()

    def _died(self, kernel: Kernel, description: str) -> None:
        if kernel in self.ready:
            self.ready.remove(kernel)
            self.fill()

    async def take(self) -> Kernel | None:
        """A kernel for a session (no longer the pool's), or None: start your own.

        A ready kernel at once; else one the pool is already booting, which
        is ready sooner than a second boot competing with it for the CPU."""
        loop = asyncio.get_running_loop()
        kernel = None
        while self.ready:
            candidate = self.ready.popleft()
            if candidate.alive and not candidate.closing:
                kernel = candidate
                kernel.on_death.remove(self._died)
                break
        if kernel is None and self.starting > len(self._waiters) and not self.stopped:
            waiter: asyncio.Future[Kernel | None] = loop.create_future()
            self._waiters.append(waiter)
            return await waiter
        # Refill on the next turn of the loop: the taken kernel's first execute
        # goes out before a new process competes for the CPU.
        loop.call_soon(self.fill)
        return kernel

    async def stop(self) -> None:
        self.stopped = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        while self._waiters:
            self._waiters.popleft().set_result(None)
        ready, self.ready = list(self.ready), collections.deque()
        await asyncio.gather(*(k.shutdown("was stopped with the runtime") for k in ready), return_exceptions=True)
