"""``--kernel-spec NAME``: Python kernels from a Jupyter kernelspec.

By default the runtime starts every Python kernel itself, in its own Python
(``kernel_launcher``). With ``--kernel-spec NAME`` new kernels come from the
kernelspec NAME, found as ``jupyter kernelspec list`` finds it (the standard
Jupyter data paths: ``JUPYTER_PATH``, the user's, the environment's, the
system's; jupyter_client's ``KernelSpecManager``), and started through the
kernel provisioner the spec names (jupyter_client's provisioning API;
``LocalProvisioner`` when it names none).

Such a kernel was not started by ``kernel_startup.main``, so the runtime's
first silent execute adopts it (``adopt_code``): it loads the runtime's own
``spinrt.strictjson`` and ``spinrt.cells.kernel_startup`` into the kernel
from their source (the kernel's Python need not have spinrt installed, and
one that has gets this runtime's version of the helpers all the same), then
``kernel_startup._adopt`` provides ``SpinSecrets`` and ``CellResult`` and
mends messages as ``main`` does.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

from .. import strictjson
from . import kernel_startup


class KernelSpecError(Exception):
    """The named kernelspec cannot serve Python cells; one line for the user."""


def find(name: str) -> Any:
    """The ``KernelSpec`` named ``name`` from the standard Jupyter paths.

    KernelSpecError when there is none (naming the directories searched) or
    when it is not a Python kernel (``language`` other than python)."""
    manager = KernelSpecManager()
    try:
        spec = manager.get_kernel_spec(name)
    except NoSuchKernel:
        dirs = ", ".join(manager.kernel_dirs)
        found = ", ".join(sorted(manager.find_kernel_specs())) or "none"
        raise KernelSpecError(
            f"--kernel-spec {name}: no such kernelspec (found: {found}; searched {dirs})"
        ) from None
    except Exception as e:  # an unreadable or malformed kernel.json
        raise KernelSpecError(f"--kernel-spec {name}: cannot read it: {e}") from None
    if (spec.language or "").lower() != "python":
        raise KernelSpecError(
            f"--kernel-spec {name} is a {spec.language or 'unknown'} kernel; "
            f"Python cells need a Python (IPython) kernel"
        )
    return spec


def _sources() -> list[tuple[str, str]]:
    # strictjson first: kernel_startup imports it.
    return [("spinrt.strictjson", inspect.getsource(strictjson)),
            ("spinrt.cells.kernel_startup", inspect.getsource(kernel_startup))]


# Runs in the kernel's own fresh globals (exec), so nothing is left in the
# user's namespace. Package stubs only when the kernel has no spinrt.
_ADOPT = """
import sys, types
try:
    import spinrt.cells
except ImportError:
    for _name in ("spinrt", "spinrt.cells"):
        _pkg = types.ModuleType(_name)
        _pkg.__path__ = []
        sys.modules[_name] = _pkg
    sys.modules["spinrt"].cells = sys.modules["spinrt.cells"]
for _name, _source in SOURCES:
    _module = types.ModuleType(_name)
    _module.__file__ = "<spin runtime: " + _name + ">"
    sys.modules[_name] = _module
    _parent, _, _leaf = _name.rpartition(".")
    setattr(sys.modules[_parent], _leaf, _module)
    exec(compile(_source, _module.__file__, "exec"), _module.__dict__)
sys.modules["spinrt.cells.kernel_startup"]._adopt(RUNTIME_PID)
"""


def adopt_code() -> str:
    """The silent execute that gives a kernelspec's kernel the runtime's helpers."""
    return (f"exec({_ADOPT!r}, {{'__name__': '__spin_adopt__', 'SOURCES': {_sources()!r}, "
            f"'RUNTIME_PID': {os.getpid()!r}}})")
