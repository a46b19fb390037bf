"""``twistd spin-runtime``: command-line options and the wiring of the runtime."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.python.failure import Failure

from . import __version__
from . import plugins as cell_plugins
from . import protocol as proto
from .cells.base import ICellType, RuntimeServices
from .config import ConfigError, RuntimeConfig, prepare_home
from .integrations.connections import ConnectionRegistry
from .audit import AuditTrail
from .metrics import MetricsResource, RuntimeMetrics
from .notebooks import NotebookLibrary
from .outbound import Outbound
from .retention import HistoryRetention
from .secret_store import RuntimeSecretStore
from .sessions.manager import SessionManager, processors_of
from .sessions.runner import RunExecutor, SessionResolver
from .sessions.store import EventStore
from .sshconfig import SSHSettings
from .tokens import TokenRegistry
from .web.audit_route import AuditResource
from .web.jupyter import JupyterFace
from .web.site import build_site
from .web.tls_policy import apply_intermediate_profile
from .web.ws import SpinWebSocketFactory

_log = Logger()

FEATURES = ["replay", "linked_cells", "cancel", "timeouts", "variables", "secrets", "host_ssh", "ssh_connections",
            "notebooks", "presence", "documents", "roles", "runtime_secrets", "typed_connections", "jupyter_api"]


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Serve the SPIN runtime on one port: the browser UI at /, the spin.v1 "
        "WebSocket at /ws, /healthz, /readyz, /metrics and the /api/ routes "
        "(docs/protocol.rst). SPIN_TOKEN must be set in the environment. State "
        "lives in SPIN_HOME/var (default /opt/spin/var)."
    )
    optParameters = [
        ["home", None, None, "State directory (default: $SPIN_HOME, else /opt/spin)."],
        ["max-message-size", None, None, "Largest incoming WebSocket message in bytes (default 16 MiB)."],
        ["kernel-pool", None, None, "Python kernels kept started and idle for new sessions (default 1)."],
        ["kernel-spec", None, None,
         "Start new Python kernels from this Jupyter kernelspec (jupyter kernelspec list) and its "
         "provisioner, instead of in the runtime's own Python."],
        ["audit-retention-days", None, None, "Days the audit trail keeps its rows (default 90; 0: for ever)."],
        ["secret-key-file", None, None,
         "File holding the runtime secret store's Fernet key(s), kept outside SPIN_HOME (else SPIN_SECRET_KEY)."],
        ["history-retention-days", None, None,
         "Delete sessions closed more than this many days ago, with their history (default 0: keep them)."],
        ["tail-memory", None, None,
         "Bytes of recent events all sessions together keep in memory for clients catching up "
         "(default 64 MiB; older ones are read from the store)."],
        ["cull-idle-kernels", None, None,
         "Shut down Jupyter kernels (/jupyter) that ran nothing and had no connection for this many seconds "
         "(default 0: never)."],
    ]
    optFlags = [
        ["metrics-public", None, "Serve /metrics without a token (for scrapers on a private network)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["endpoint"] = []
        self["allow-origin"] = []
        self["trusted-proxy"] = []

    def opt_endpoint(self, description: str) -> None:
        """Twisted server endpoint to listen on, repeatable (default tcp:8888),
        e.g. tcp:8888:interface=127.0.0.1 or ssl:8443:privateKey=key.pem:certKey=cert.pem."""
        self["endpoint"].append(description)

    def opt_allow_origin(self, origin: str) -> None:
        """Browser Origin allowed to open the WebSocket, repeatable ('*' for any).
        'null' allows pages with an opaque origin (files, sandboxed frames). The
        runtime's own origin is always allowed. Without it, any origin is accepted
        (the token still applies)."""
        self["allow-origin"].append(origin)

    def opt_trusted_proxy(self, cidr: str) -> None:
        """Reverse proxy address or CIDR range, repeatable (e.g. 127.0.0.1/32): only
        for connections from these is the client taken from X-Forwarded-For /
        Forwarded (throttle and logs). Without it those headers are ignored."""
        self["trusted-proxy"].append(cidr)

    def postOptions(self) -> None:
        _install_asyncio_reactor()


def _install_asyncio_reactor() -> None:
    """Python cells drive jupyter_client's asyncio API, so the reactor must be asyncio's."""
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        asyncioreactor.install()
        return
    from twisted.internet import reactor
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if not isinstance(reactor, AsyncioSelectorReactor):
        raise usage.UsageError(
            "spin-runtime needs the asyncio reactor: drop --reactor or use --reactor=asyncio"
        )


class RuntimeService(MultiService):
    """Opens the store, listens, and stops everything in order."""

    def __init__(self, config: RuntimeConfig, reactor: Any, *, owns_process: bool = False) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        # True under twistd: the process's exit status is ours to set.
        self.owns_process = owns_process
        self.started = time.time()
        # ConfigError for a bad REQUESTS_CA_BUNDLE: makeService turns it into an exit.
        self.outbound = Outbound.from_environ(config.environ, reactor)
        self.cell_services = RuntimeServices(
            reactor=reactor,
            home=config.home,
            environ=config.environ,
            settings={"kernel_pool": config.kernel_pool,
                      "kernel_spec": config.kernel_spec,
                      "ssh": SSHSettings(config.var_dir, config.environ, reactor)},
            emit_event=self._emit_session_event,
            outbound=self.outbound,
        )
        self.store = EventStore(config.store_path, reactor)
        self.runtime_secrets = RuntimeSecretStore(config.secret_keys, self.store)
        # Templates read it after the session's own secrets (spinrt.secrets.lookup_secret).
        self.cell_services.settings["runtime_secrets"] = self.runtime_secrets
        self.cell_services.session_secrets = self._session_secrets
        # Typed connections (PROTOCOL.md 13): every IConnectionType plugin plus ssh.
        self.cell_services.settings["connections"] = ConnectionRegistry.discover(self.cell_services)
        types = sorted(getPlugins(ICellType, cell_plugins), key=lambda t: t.name)
        self.processors = processors_of(types, self.cell_services)
        self.manager = SessionManager(
            self.store, RunExecutor(self.cell_services, self.processors), self.processors, reactor,
            tail_memory=config.tail_memory,
        )
        # The ops reach it as conn.manager.notebooks (spinrt.web.ops_notebooks).
        self.manager.notebooks = NotebookLibrary(config.notebooks_dir, reactor)  # type: ignore[attr-defined]
        kernels = self.processors.get("python")
        if kernels is not None:
            # A new kernel starts with the session's variables and secrets.
            kernels.set_variable_source(lambda sid: self.manager.get(sid).variables)
            kernels.set_secret_source(lambda sid: self.manager.get(sid).secrets)
        self.runtime_info = {
            "version": __version__,
            "protocol": proto.PROTOCOL_VERSION,
            "cell_types": sorted(self.processors),
            "features": FEATURES,
        }
        self.tokens = TokenRegistry(config.token, self.store)
        self.audit = AuditTrail(self.store, reactor, retention_days=config.audit_retention_days)
        self.history = HistoryRetention(self.manager, reactor, config.history_retention_days)
        self.metrics = RuntimeMetrics(self._metrics_state, self.processors)
        self.manager.observer = self.metrics
        self.store.on_commit = self.metrics.committed
        self.factory = SpinWebSocketFactory(
            manager=self.manager,
            token=self.tokens,
            origins=list(config.allow_origins),
            clock=reactor,
            runtime_info=self.runtime_info,
            max_message_size=config.max_message_size,
            trusted_proxies=config.trusted_proxies,
            audit=self.audit,
        )
        gate = self.factory.gate
        gate.audit = self.audit
        gate.on_refused.append(self._token_refused)
        gate.on_refused.append(self.metrics.token_refused)
        self.site = build_site(self.factory, self.status, self.store.readiness)
        api = self.site.resource.children[b"api"]
        api.putChild(b"audit", AuditResource(self.audit, gate))
        self.site.resource.putChild(b"metrics", MetricsResource(self.metrics, gate, public=config.metrics_public))
        # The Jupyter kernels API (PROTOCOL.md 8): same port, same tokens, under /jupyter.
        self.jupyter = JupyterFace(self.factory, cull_idle=config.cull_idle_kernels)
        self.site.resource.putChild(b"jupyter", self.jupyter.resource)
        self.ports: list[Any] = []
        self.addresses: list[dict[str, Any]] = []

    def _emit_session_event(self, session_id: str, kind: str, **fields: Any) -> None:
        session = self.manager.sessions.get(session_id)
        if session is not None:
            session.emit(kind, **fields)

    def _session_secrets(self, session_id: str) -> tuple[Any, Any]:
        """For CellContext.secret / mask_values: the session's template secrets."""
        session = self.manager.get(session_id)
        resolver = SessionResolver({}, session.template_secrets, self.config.environ, self.runtime_secrets)
        return resolver.secret, session.learn_secret_values

    def _token_refused(self, address: str, refusal: Any, route: str, throttled: bool) -> None:
        self.audit.auth_failed(address, "throttled" if throttled else refusal.reason, route,
                               name=refusal.name, token=refusal.token)

    def _metrics_state(self) -> dict[str, Any]:
        counts = self.manager.counts()
        store = self.store.status()
        python = self.processors.get("python")
        kernels = getattr(python, "kernel_counts", None)
        return {
            "connections": len(self.factory.connections),
            "sessions_open": counts["open_sessions"],
            "sessions_closed": counts["sessions"] - counts["open_sessions"],
            "runs_queued": counts["queued"],
            "runs_running": counts["running"],
            "store_pending_bytes": store["pending_bytes"],
            "store_pending_changes": store["pending_changes"],
            "store_writable": store["writable"],
            "kernels": kernels() if kernels is not None else {},
            "tokens": len(self.tokens.list()),
        }

    def status(self) -> dict[str, Any]:
        counts = self.manager.counts()
        return {
            "version": __version__,
            "protocol": proto.PROTOCOL_VERSION,
            "uptime_s": round(time.time() - self.started, 3),
            "sessions": {"total": counts["sessions"], "open": counts["open_sessions"]},
            "connections": len(self.factory.connections),
            "runs": {"running": counts["running"], "queued": counts["queued"]},
            "cell_types": self.runtime_info["cell_types"],
            "store": self.store.status(),
            **self.outbound.tls.status(),
            "ssh": self.cell_services.settings["ssh"].status(),
            "secret_store": self.runtime_secrets.status(),
        }

    # -- start -------------------------------------------------------------------

    def privilegedStartService(self) -> None:
        try:
            self.manager.restore_sync()
            self.tokens.load(self.store.query_sync(
                "SELECT id, name, role, digest, created, expires, revoked, last_used FROM tokens"))
            self.runtime_secrets.load(self.store.query_sync("SELECT name, value FROM runtime_secrets"))
        except Exception as e:
            raise SystemExit(f"spin-runtime: {e}") from None
        for description in self.config.endpoints:
            self._listen(description)
        self._write_runtime_file()
        super().privilegedStartService()

    def _listen(self, description: str) -> None:
        try:
            endpoint = endpoints.serverFromString(self.reactor, description)
            apply_intermediate_profile(endpoint)
        except Exception as e:
            raise SystemExit(f"spin-runtime: bad --endpoint {description!r}: {_why(e)}") from None
        results: list[Any] = []
        endpoint.listen(self.site).addBoth(results.append)
        if not results:
            raise SystemExit(f"spin-runtime: --endpoint {description!r} did not start listening")
        if isinstance(results[0], Failure):
            raise SystemExit(
                f"spin-runtime: cannot listen on {description!r}: {_why(results[0].value)}"
            )
        port = results[0]
        self.ports.append(port)
        address = port.getHost()
        tls = description.split(":", 1)[0] in ("ssl", "tls")
        host = getattr(address, "host", "")
        shown = f"[{host}]" if ":" in host else host
        info = {
            "endpoint": description,
            "host": host,
            "port": getattr(address, "port", None),
            "tls": tls,
            "url": f"{'wss' if tls else 'ws'}://{shown}:{getattr(address, 'port', '')}/ws",
        }
        self.addresses.append(info)
        _log.info("spin-runtime {version} listening on {url}", version=__version__, url=info["url"])

    def _write_runtime_file(self) -> None:
        data = {
            "pid": os.getpid(),
            "version": __version__,
            "started": proto.timestamp(self.started),
            "listening": self.addresses,
        }
        tmp = self.config.runtime_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, self.config.runtime_file)

    def startService(self) -> None:
        self.outbound.log_policy()
        super().startService()
        self.store.start()
        self.audit.start()
        self.history.start()
        self.jupyter.start()

    # -- stop --------------------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop()).addErrback(
            lambda f: _log.failure("spin-runtime did not stop cleanly", f)
        )

    async def _stop(self) -> None:
        # The UI's assets load in a thread from the start (~50 ms): never leave it behind.
        await self.site.ui.when_ready()
        for pruning in (self.audit.stop(), self.history.stop()):
            if pruning is not None:
                await pruning
        # The store closes next: the open connections' last rows go in now.
        for conn in list(self.factory.connections):
            if conn.connection is not None:
                self.audit.record("disconnect", identity=conn.connection.who, client=conn.client_address,
                                  target={"route": "/ws"}, outcome="runtime_stopping")
        self.audit.closed = True
        self.jupyter.stop()
        await self.manager.stopService()
        for port in self.ports:
            await port.stopListening()
        for conn in list(self.factory.connections):
            conn.sendClose(1000, "runtime stopping")  # autobahn refuses 1001 from apps
        try:
            os.unlink(self.config.runtime_file)
        except OSError:
            pass
        # twistd re-raises the SIGTERM that stopped it, so the exit status
        # would say "killed"; after a complete shutdown we report success.
        if getattr(self.reactor, "_exitSignal", None) in (signal.SIGTERM, signal.SIGINT):
            self.reactor._exitSignal = None
        if self.store.lost:
            # A stop that leaves history unsaved is a failure, whatever asked
            # for it: the exit status says so to systemd, Docker and scripts.
            _log.error("spin-runtime stopped with {n} changes unsaved; exiting with status {code}",
                       n=self.store.lost, code=EXIT_UNSAVED)
            if self.owns_process:
                _exit_at_end(EXIT_UNSAVED)
            return
        _log.info("spin-runtime stopped")


EXIT_UNSAVED = 1  # the exit status of a stop that could not store every event


def _exit_at_end(code: int) -> None:
    """Make the process exit with ``code`` once twistd has finished: twistd
    itself always exits 0 (or by re-raising a signal)."""
    import atexit

    def leave() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)

    atexit.register(leave)


def _why(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return text.splitlines()[0] if text else type(e).__name__


def makeService(options: Any, reactor: Any = None, environ: Any = None) -> Service:
    owns_process = reactor is None  # twistd's call; tests and embedders pass their reactor
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    try:
        config = RuntimeConfig.from_options(options, os.environ if environ is None else environ)
        prepare_home(config)
        return RuntimeService(config, reactor, owns_process=owns_process)
    except ConfigError as e:
        raise SystemExit(f"spin-runtime: {e}") from None
