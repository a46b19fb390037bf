"""Runs INSIDE every Python kernel: the launcher, ``SpinSecrets``, ``CellResult``.

The runtime starts each kernel as
``python -c "...; from spinrt.cells.kernel_startup import main; main()" -f CONN``.
``main`` ties the kernel's life to the runtime's (PR_SET_PDEATHSIG), starts
ipykernel and provides ``SpinSecrets`` and ``CellResult`` (``HELPERS``) in a
way nothing the user does to their namespace removes (see ``_provide``).
The runtime then drives the private ``_setup``/``_set_*`` helpers below with
silent executes (never echoed on iopub, never stored in history).

Only the standard library and IPython are imported here: this module is
loaded into every kernel before the user's code.
"""

from __future__ import annotations

import builtins
import json
import os
import signal
import sys
from typing import Any

# Pure and light (re and math only): a kernel starts no slower for it.
from spinrt.strictjson import scrub

# The session's secrets, pushed by the runtime; never part of the user namespace.
_secrets: dict[str, str] = {}
_MISSING = object()
_RESULT_KEYS = ("exit_code", "status_code", "text")


class SecretNotFound(LookupError):
    """No secret (and no runtime environment variable) of that name."""


class SpinSecrets:
    """The session's secrets: ``SpinSecrets.get_secret("NAME")``.

    A secret set for the session wins; otherwise the runtime's environment
    variable of that name (as ``{{secret:NAME}}`` does in templates)."""

    @staticmethod
    def get_secret(name: str, default: Any = _MISSING) -> Any:
        if name in _secrets:
            return _secrets[name]
        if name != "SPIN_TOKEN" and name in os.environ:
            return os.environ[name]
        if default is not _MISSING:
            return default
        raise SecretNotFound(
            f"no secret {name!r}: set it with secrets.set for this session "
            f"or in the runtime's environment"
        )

    @staticmethod
    def names() -> list[str]:
        """Names of the secrets set for this session (values are never listed)."""
        return sorted(_secrets)

    def __repr__(self) -> str:
        return f"<SpinSecrets: {len(_secrets)} session secrets>"


class CellResult(dict):  # type: ignore[type-arg]
    """The result of a shell/rest/llm cell: ``r.stdout`` or ``r["stdout"]``.

    A dict, so it stays JSON-able (templates and variables read it back)."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"CellResult has no field {name!r} (it has: {', '.join(self)})") from None

    def __dir__(self) -> list[str]:
        return sorted(set(dir(dict)) | {k for k in self if isinstance(k, str)})

    def __repr__(self) -> str:
        return f"CellResult({dict.__repr__(self)})"


# The names the runtime provides in every kernel (PROTOCOL.md section 5).
HELPERS: dict[str, Any] = {"SpinSecrets": SpinSecrets, "CellResult": CellResult}


def looks_like_result(value: Any) -> bool:
    # The same rule as the runtime's session.type_name().
    return isinstance(value, dict) and "status" in value and any(k in value for k in _RESULT_KEYS)


class _Raw:
    """Shows as its text exactly (a JSON document in a user_expressions reply)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


# -- helpers the runtime calls with silent executes ----------------------------------


def _shell() -> Any:
    from IPython.core.getipython import get_ipython

    return get_ipython()


def _setup(cwd: str | None, secrets_json: str, variables_json: str) -> None:
    """A kernel joins a session (warm-pool kernels start elsewhere)."""
    if cwd:
        os.chdir(cwd)
    _set_secrets(secrets_json)
    _set_variables(variables_json)


def _set_secrets(secrets_json: str) -> None:
    _secrets.update(json.loads(secrets_json))


def _del_secrets(names_json: str) -> None:
    for name in json.loads(names_json):
        _secrets.pop(name, None)


def _set_variables(variables_json: str) -> None:
    values = json.loads(variables_json)
    ns = _shell().user_ns
    for name, value in values.items():
        ns[name] = CellResult(value) if looks_like_result(value) else value


def _visible(ns: dict[str, Any], hidden: dict[str, Any], name: str) -> bool:
    return name in ns and not (name in hidden and hidden[name] is ns[name])


def _variables_json(names: list[str] | None, limit: int) -> _Raw:
    """The JSON-able globals among ``names`` (all public ones when None)."""
    shell = _shell()
    ns, hidden = shell.user_ns, shell.user_ns_hidden
    if names is None:
        names = [n for n in ns if not n.startswith("_") and _visible(ns, hidden, n)]
    out: dict[str, str] = {}
    for name in names:
        if not _visible(ns, hidden, name):
            continue
        try:
            text = json.dumps(ns[name], allow_nan=False, ensure_ascii=False)
        except ValueError:
            # NaN and infinities: as the strings the runtime uses (PROTOCOL.md section 15).
            try:
                text = json.dumps(scrub(ns[name]), allow_nan=False, ensure_ascii=False)
            except (TypeError, ValueError, RecursionError):
                continue
        except (TypeError, RecursionError):
            continue  # not JSON-able: modules, functions, DataFrames
        if len(text) <= limit:
            out[name] = text
    return _Raw("{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in out.items()) + "}")


def _parameter_options(code: str, limit: int) -> _Raw:
    """A ``code_python`` parameter's options (PROTOCOL.md section 12): run
    ``code`` (IPython syntax) in the user namespace and take the value of its
    last expression, which must be a list of at most ``limit`` strings.
    ``{"options": [...]}`` or ``{"error": "..."}`` as JSON; an exception the
    code raises propagates (the user_expressions reply reports it)."""
    import ast

    shell = _shell()
    tree = ast.parse(shell.transform_cell(code), "<parameter>", "exec")
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return _Raw(json.dumps({"error": "the code must end with an expression: the list of options"}))
    last = tree.body.pop()
    assert isinstance(last, ast.Expr)
    exec(compile(tree, "<parameter>", "exec"), shell.user_ns)
    value = eval(compile(ast.Expression(last.value), "<parameter>", "eval"), shell.user_ns)
    if not isinstance(value, (list, tuple)):
        return _Raw(json.dumps({"error": f"the last expression must be a list of strings, not {type(value).__name__}"}))
    for i, item in enumerate(value):
        if not isinstance(item, str):
            return _Raw(json.dumps({"error": f"option {i} is {type(item).__name__}, not a string"}))
    if len(value) > limit:
        return _Raw(json.dumps({"error": f"the code returned {len(value)} options; at most {limit} are allowed"}))
    # A lone surrogate in an option reaches the runtime as U+FFFD (_mend_messages).
    return _Raw(json.dumps({"options": list(value)}, ensure_ascii=False))


def _clear_variables(names: list[str] | None) -> None:
    shell = _shell()
    ns, hidden = shell.user_ns, shell.user_ns_hidden
    if names is None:
        names = [n for n in ns if not n.startswith("_") and _visible(ns, hidden, n)]
    for name in names:
        if _visible(ns, hidden, name):
            del ns[name]


# -- the launcher -------------------------------------------------------------------------


def _provide(shell: Any) -> None:
    """Make ``HELPERS`` outlive ``%reset``, ``%reset_selective``, ``del`` and ``globals().clear()``.

    They go into ``builtins``, where every name lookup ends (as ``print``
    does): nothing that clears the user namespace reaches them, a user's own
    global of the same name shadows them, and ``del`` of that global uncovers
    them again. Set for good, not through IPython's builtin_trap (which holds
    only while a cell executes), so threads and callbacks a cell leaves
    running find them too.

    Every execute also starts with them as hidden globals, as IPython's own
    ``get_ipython`` is both: ``del SpinSecrets`` in a cell works as it always
    did, and ``%who``, ``%whos`` and the runtime's variable listing leave them
    out (``user_ns_hidden``)."""
    builtins.__dict__.update(HELPERS)

    def hide() -> None:
        ns, hidden = shell.user_ns, shell.user_ns_hidden
        for name, value in HELPERS.items():
            hidden[name] = value
            ns.setdefault(name, value)  # a user's own global of that name stays theirs

    hide()
    # 'pre_execute' fires before every execute, silent ones included (IPython events).
    shell.events.register("pre_execute", hide)


def _mend_messages(session: Any) -> None:
    """Let output that is not valid Unicode reach the runtime as U+FFFD.

    jupyter_client packs every message as strict JSON in UTF-8, so a
    ``print`` or ``display`` of a string holding a lone surrogate (from
    ``surrogatepass`` decoding, a broken file name, a C extension) or a NaN
    in JSON output fails inside the kernel, and the output is lost. Retry
    such a message mended the same way the runtime mends what it stores."""
    pack = session.pack

    def mended(obj: Any) -> bytes:
        try:
            return pack(obj)
        except (UnicodeError, ValueError, TypeError):
            return pack(scrub(obj))

    session.pack = mended


def _die_with_parent() -> None:
    """SIGKILL this kernel when the runtime dies, even by ``kill -9``."""
    expected = os.environ.pop("SPIN_RUNTIME_PID", None)
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The runtime may have died before prctl took effect.
    if expected is not None and os.getppid() != int(expected):
        os._exit(1)


def _adopt(runtime_pid: int | None) -> None:
    """A kernel started from a kernelspec (``--kernel-spec``), not by ``main``:
    the runtime's first silent execute gives it what ``main`` gives its own
    kernels. Its life is tied to the runtime's only when the runtime is its
    parent: a kernelspec may start it through a wrapper, or elsewhere."""
    shell = _shell()
    kernel = getattr(shell, "kernel", None)
    if getattr(kernel, "session", None) is not None:
        _mend_messages(kernel.session)
    _provide(shell)
    if runtime_pid is not None and os.getppid() == runtime_pid and sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def main() -> None:
    _die_with_parent()
    # Like ipykernel_launcher: keep the working directory off sys.path while
    # ipykernel loads (IPython puts '' back for the user's code).
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    app.initialize(sys.argv[1:])
    _mend_messages(app.session)
    if app.shell is not None:
        _provide(app.shell)
    app.start()
