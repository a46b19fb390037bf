"""The Jupyter kernels API face under ``/jupyter`` (PROTOCOL.md section 8; docs/jupyter.rst).

Unmodified Jupyter clients use the runtime's kernels: JupyterLab or Jupyter
Server with ``--gateway-url=http://runtime:8888/jupyter``, VS Code's
"existing Jupyter server", ``@jupyterlab/services``, nbclient through a
jupyter_server. Each Jupyter kernel is a spin session; the face is one
more client of the session manager (DESIGN.md, data flow).
"""

from __future__ import annotations

from typing import Any

from .channels import REPLAY_LIMIT, ChannelsFactory, ChannelsResource
from .kernels import JupyterKernels
from .rest import JupyterResource
from .sessions import JupyterSessions

BASE = "/jupyter"


class JupyterFace:
    """The registry of Jupyter kernels, their sessions API, the channels
    WebSocket and the ``/jupyter`` resource, on the spin WebSocket
    factory's token gate, origin policy, proxies and audit trail."""

    def __init__(self, spin: Any, *, cull_idle: float = 0.0, replay_limit: int = REPLAY_LIMIT) -> None:
        self.gate = spin.gate
        self.base = BASE
        self.kernels = JupyterKernels(spin.manager, spin.clock, cull_idle=cull_idle)
        self.sessions = JupyterSessions(self.kernels)
        self.factory = ChannelsFactory(kernels=self.kernels, spin=spin, max_message_size=spin.max_message_size,
                                       replay_limit=replay_limit)
        self.channels = ChannelsResource(self.factory)
        self.resource = JupyterResource(self)

    def start(self) -> None:
        self.kernels.start()

    def stop(self) -> None:
        self.kernels.stop()
        self.factory.close_all()
