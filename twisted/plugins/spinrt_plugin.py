# Discovered by twistd through twisted.plugins; kept tiny so that `twistd
# --help` does not import the runtime.
import sys

from twisted.application.service import ServiceMaker


class _AsyncioServiceMaker(ServiceMaker):
    """Installs the asyncio reactor before twistd imports ``spinrt.tap``.

    twistd reads ``options`` once ``spin-runtime`` is chosen, before it
    imports anything else of ours. Python cells need asyncio's reactor
    (spinrt.tap), and any module the runtime imports may import
    ``twisted.internet.reactor`` (twisted.conch's userauth does), which would
    install the default one first. An explicit ``--reactor`` has already
    installed its reactor by then and is left alone (spinrt.tap refuses
    any other than asyncio with a clear line).
    """

    @property
    def options(self):
        if "twisted.internet.reactor" not in sys.modules:
            from twisted.internet import asyncioreactor

            asyncioreactor.install()
        return super().options


spin_runtime = _AsyncioServiceMaker(
    "SPIN runtime",
    "spinrt.tap",
    "Self-hosted execution runtime for SPIN notebooks (WebSocket + HTTP).",
    "spin-runtime",
)
