"""RuntimeConfig: every setting from the command line and the environment.

Each bad setting becomes one ConfigError whose message is a single line a
user can act on; tap.py prints it and exits instead of showing a traceback.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Mapping

import attrs

from .sessions.tails import DEFAULT_TAIL_MEMORY
from .web.auth import OriginPolicy
from .web.proxies import IPNetwork, parse_network

DEFAULT_HOME = "/opt/spin"
DEFAULT_ENDPOINT = "tcp:8888"
DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024
MAX_TAIL_MEMORY = 64 * 1024 ** 3


class ConfigError(Exception):
    """A setting the runtime cannot start with (one line)."""


@attrs.frozen
class RuntimeConfig:
    token: str = attrs.field(repr=False)
    home: str
    endpoints: tuple[str, ...]
    allow_origins: tuple[str, ...]
    max_message_size: int
    environ: Mapping[str, str] = attrs.field(repr=False)
    kernel_pool: int = 1
    trusted_proxies: tuple[IPNetwork, ...] = ()
    audit_retention_days: float = 90.0  # 0: keep the audit trail for ever
    history_retention_days: float = 0.0  # 0: keep closed sessions for ever
    # The runtime secret store's keys (SPIN_SECRET_KEY or --secret-key-file), or None: off.
    secret_keys: Any = attrs.field(default=None, repr=False)
    metrics_public: bool = False
    cull_idle_kernels: float = 0.0  # seconds; 0: Jupyter kernels are never culled
    kernel_spec: str | None = None  # --kernel-spec: Python kernels from this Jupyter kernelspec
    tail_memory: int = DEFAULT_TAIL_MEMORY  # bytes: all sessions' in-memory tails together

    @property
    def var_dir(self) -> str:
        return os.path.join(self.home, "var")

    @property
    def notebooks_dir(self) -> str:
        return os.path.join(self.home, "notebooks")

    @property
    def store_path(self) -> str:
        return os.path.join(self.var_dir, "spin.sqlite3")

    @property
    def runtime_file(self) -> str:
        return os.path.join(self.var_dir, "runtime.json")

    @classmethod
    def from_options(cls, options: Mapping[str, Any], environ: Mapping[str, str]) -> "RuntimeConfig":
        token = environ.get("SPIN_TOKEN", "")
        if not token.strip():
            raise ConfigError(
                "SPIN_TOKEN is not set: export SPIN_TOKEN=<a long random secret> "
                "(the same token the SPIN UI uses for this runtime)"
            )
        if token != token.strip():
            raise ConfigError("SPIN_TOKEN has leading or trailing whitespace; remove it")
        home = options.get("home") or environ.get("SPIN_HOME") or DEFAULT_HOME
        home = os.path.abspath(os.path.expanduser(home))
        endpoints = tuple(options.get("endpoint") or ()) or (DEFAULT_ENDPOINT,)
        size = options.get("max-message-size") or DEFAULT_MAX_MESSAGE
        try:
            size = int(size)
        except (TypeError, ValueError):
            raise ConfigError(f"--max-message-size must be a number of bytes, not {size!r}") from None
        if size < 1024:
            raise ConfigError("--max-message-size must be at least 1024 bytes")
        pool = options.get("kernel-pool")
        try:
            pool = 1 if pool is None else int(pool)
        except (TypeError, ValueError):
            raise ConfigError(f"--kernel-pool must be a whole number, not {pool!r}") from None
        if not 0 <= pool <= 64:
            raise ConfigError("--kernel-pool must be between 0 and 64")
        origins = tuple(options.get("allow-origin") or ())
        try:
            OriginPolicy(origins)
        except ValueError as e:
            raise ConfigError(f"--allow-origin {e}") from None
        proxies = []
        for value in options.get("trusted-proxy") or ():
            try:
                proxies.append(parse_network(value))
            except ValueError as e:
                raise ConfigError(f"--trusted-proxy {e}") from None
        keys = _secret_keys(options.get("secret-key-file"), environ)
        tail_memory = options.get("tail-memory")
        try:
            tail_memory = DEFAULT_TAIL_MEMORY if tail_memory is None else int(tail_memory)
        except (TypeError, ValueError):
            raise ConfigError(f"--tail-memory must be a number of bytes, not {tail_memory!r}") from None
        if not 0 <= tail_memory <= MAX_TAIL_MEMORY:
            raise ConfigError(f"--tail-memory must be between 0 and {MAX_TAIL_MEMORY} bytes")
        spec = options.get("kernel-spec")
        if spec is not None:
            from .cells.kernel_specs import KernelSpecError, find

            try:
                find(spec)
            except KernelSpecError as e:
                raise ConfigError(str(e)) from None
        return cls(
            kernel_spec=spec,
            tail_memory=tail_memory,
            secret_keys=keys,
            audit_retention_days=_days(options, "audit-retention-days", 90.0),
            history_retention_days=_days(options, "history-retention-days", 0.0),
            metrics_public=bool(options.get("metrics-public")),
            cull_idle_kernels=_seconds(options, "cull-idle-kernels"),
            kernel_pool=pool,
            trusted_proxies=tuple(proxies),
            token=token,
            home=home,
            endpoints=endpoints,
            allow_origins=origins,
            max_message_size=size,
            # Cells see this environment ({{runtime_env:...}}, processes, kernels): never the store's key.
            environ={k: v for k, v in environ.items() if k != "SPIN_SECRET_KEY"},
        )


def _secret_keys(path: str | None, environ: Mapping[str, str]) -> Any:
    """The secret store's MultiFernet from --secret-key-file or SPIN_SECRET_KEY, or None; ConfigError."""
    from .secret_store import parse_keys

    if path:
        try:
            with open(os.path.expanduser(path), encoding="ascii") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"--secret-key-file {path}: {getattr(e, 'strerror', None) or e}") from None
        source = f"--secret-key-file {path}"
    elif environ.get("SPIN_SECRET_KEY", "").strip():
        text, source = environ["SPIN_SECRET_KEY"], "SPIN_SECRET_KEY"
    else:
        return None
    try:
        return parse_keys(text, source)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _days(options: Mapping[str, Any], name: str, default: float) -> float:
    value = options.get(name)
    try:
        days = default if value is None else float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--{name} must be a number of days, not {value!r}") from None
    if not 0 <= days <= 36500:  # also refuses nan
        raise ConfigError(f"--{name} must be between 0 (keep for ever) and 36500")
    return days


def _seconds(options: Mapping[str, Any], name: str) -> float:
    value = options.get(name)
    try:
        seconds = 0.0 if value is None else float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--{name} must be a number of seconds, not {value!r}") from None
    if not 0 <= seconds <= 365 * 86400:  # also refuses nan
        raise ConfigError(f"--{name} must be between 0 (never) and {365 * 86400} seconds")
    return seconds


def prepare_home(config: RuntimeConfig) -> None:
    """Create SPIN_HOME/var and SPIN_HOME/notebooks (0700) and prove var is
    writable, or ConfigError."""
    try:
        os.makedirs(config.var_dir, mode=0o700, exist_ok=True)
        os.makedirs(config.notebooks_dir, mode=0o700, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=config.var_dir, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ConfigError(
            f"SPIN_HOME {config.home} is not usable ({e.strerror or e}): set SPIN_HOME "
            f"or --home to a directory this user can write"
        ) from None
