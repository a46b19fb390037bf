"""Starting kernels: our own kernel command, environment, files and watchdogs.

Kernels never outlive the runtime: each sets PR_SET_PDEATHSIG (see
``kernel_startup``), runs in its own process group (jupyter_client's
``start_new_session``), and leaves a record under ``SPIN_HOME/var/kernels``
that the next start uses to reap whatever a ``kill -9`` left behind (the
kernel's own children). Connection files and ipc sockets live there too (0700).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from typing import Any

import zmq.asyncio
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning.factory import KernelProvisionerFactory
from twisted.logger import Logger

from . import kernel_reaper, kernel_specs
from .base import RuntimeServices
from .kernels import Kernel, KernelStartError

_log = Logger()

START_TIMEOUT = 60.0  # seconds for a kernel to answer kernel_info
POLL_INTERVAL = 0.5  # liveness poll when pidfd is not available

LAUNCH = (
    "import sys; del sys.path[0]; "
    "from spinrt.cells.kernel_startup import main; main()"
)


class KernelLauncher:
    """Starts kernels with the runtime's settings; knows every live one."""

    def __init__(self, services: RuntimeServices) -> None:
        self.services = services
        self.directory = os.path.join(services.home, "var", "kernels")
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)
        # Whatever a kill -9 of the previous runtime left behind.
        kernel_reaper.reap(self.directory)
        self.ipc_directory = kernel_reaper.socket_directory(self.directory)
        # Entry-point discovery is slow the first time: do it before the reactor runs.
        KernelProvisionerFactory.instance()
        # --kernel-spec: new kernels from that Jupyter kernelspec (kernel_specs).
        self.spec_name: str | None = services.settings.get("kernel_spec")
        self.live: set[Kernel] = set()
        self._polled: set[Kernel] = set()
        self._poller: Any = None
        self._zmq_context: Any = None
        self.stopping = False

    @property
    def zmq_context(self) -> Any:
        if self._zmq_context is None:
            self._zmq_context = zmq.asyncio.Context()
        return self._zmq_context

    async def start(self, cwd: str) -> Kernel:
        if self.stopping:
            raise KernelStartError("the runtime is stopping")
        kid = secrets.token_hex(6)
        km = AsyncKernelManager(
            kernel_id=kid,
            **({"kernel_name": self.spec_name} if self.spec_name else {}),
            context=self.zmq_context,
            transport="ipc",
            ip=os.path.join(self.ipc_directory, kid),
            connection_file=os.path.join(self.directory, f"{kid}.json"),
        )
        if self.spec_name is None:
            # Our own spec, never a "python3" kernelspec some other install provides.
            km._kernel_spec = KernelSpec(
                argv=[sys.executable, "-c", LAUNCH, "-f", "{connection_file}",
                      "--HistoryManager.hist_file=:memory:"],
                display_name="SPIN Python",
                language="python",
                interrupt_mode="signal",
                metadata={},
            )
        else:
            # Read again for each kernel, as `jupyter` would: an edited spec
            # applies to the next kernel.
            try:
                km._kernel_spec = kernel_specs.find(self.spec_name)
            except kernel_specs.KernelSpecError as e:
                raise KernelStartError(str(e)) from None
        tag = secrets.token_hex(8)
        env = self.services.child_environment({
            "SPIN_KERNEL_TAG": tag,
            "SPIN_RUNTIME_PID": str(os.getpid()),
            # ipykernel's debugger otherwise warns about frozen modules on every start.
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        })
        env.pop("SPIN_TOKEN", None)
        log_path = os.path.join(self.directory, f"{kid}.log")
        record_path = os.path.join(self.directory, f"{kid}.record")
        with open(log_path, "ab") as log:
            try:
                await km.start_kernel(env=env, cwd=cwd, stdout=log, stderr=log)
            except Exception as e:
                try:
                    await km.cleanup_resources()
                except Exception:
                    pass
                raise KernelStartError(f"could not start the Python kernel: {e}") from None
        kernel = Kernel(self, km, log_path, record_path)
        _log.debug("kernel {id} started: {where}", id=kid,
                   where="by its provisioner" if kernel.remote else f"pid {kernel.pid}")
        self.live.add(kernel)
        if not kernel.remote:
            kernel_reaper.record(record_path, kernel.pgid or kernel.pid, tag)
        if self.stopping:
            await kernel.shutdown("was stopped with the runtime")
            raise KernelStartError("the runtime is stopping")
        try:
            await kernel.connect(START_TIMEOUT)
        except KernelStartError:
            await kernel.shutdown("did not start")
            raise
        except Exception as e:  # wait_for_ready's RuntimeError: no answer in time
            await kernel.shutdown("did not start")
            raise KernelStartError(f"the Python kernel did not start: {e}") from None
        if self.spec_name is not None:
            await self._adopt(kernel)
        return kernel

    async def _adopt(self, kernel: Kernel) -> None:
        """The runtime's helpers in a kernelspec's kernel (kernel_specs), before any cell."""
        try:
            reply = await asyncio.wait_for(
                asyncio.shield(kernel.execute(kernel_specs.adopt_code(), silent=True).future), START_TIMEOUT)
        except Exception as e:
            await kernel.shutdown("did not start")
            raise KernelStartError(f"the kernel of kernelspec {self.spec_name!r} did not take the "
                                   f"runtime's helpers: {e or type(e).__name__}") from None
        if reply.get("status") != "ok":
            await kernel.shutdown("did not start")
            raise KernelStartError(f"the kernel of kernelspec {self.spec_name!r} could not load the "
                                   f"runtime's helpers: {reply.get('ename')}: {reply.get('evalue')}")

    def forget(self, kernel: Kernel) -> None:
        self.live.discard(kernel)

    # -- liveness without pidfd ----------------------------------------------------------

    def poll(self, kernel: Kernel) -> None:
        self._polled.add(kernel)
        if self._poller is None:
            from twisted.internet.task import LoopingCall

            self._poller = LoopingCall(self._poll_all)
            self._poller.clock = self.services.reactor
            self._poller.start(POLL_INTERVAL, now=False)

    def unpoll(self, kernel: Kernel) -> None:
        self._polled.discard(kernel)
        if not self._polled and self._poller is not None:
            self._poller.stop()
            self._poller = None

    def _poll_all(self) -> None:
        for kernel in list(self._polled):
            kernel._check_exit()

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.gather(*(k.shutdown("was stopped with the runtime") for k in list(self.live)),
                             return_exceptions=True)
        if self._zmq_context is not None:
            self._zmq_context.destroy(linger=0)
            self._zmq_context = None
