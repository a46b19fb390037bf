# Discovered by twistd through twisted.plugins; kept tiny so that `twistd
# --help` does not import the runtime.
from twisted.application.service import ServiceMaker

spin_runtime = ServiceMaker(
    "SPIN runtime",
    "spinrt.tap",
    "Self-hosted execution runtime for SPIN notebooks (WebSocket + HTTP).",
    "spin-runtime",
)
