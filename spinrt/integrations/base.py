"""What an integration is: a cell type and a connection type of one name.

``Integration`` is the base class each integration module subclasses (see
docs/integrations.rst, "Writing an integration"). It provides ``ICellType``
(the runtime asks it for a processor: :class:`spinrt.integrations.cell.IntegrationProcessor`)
and ``IConnectionType`` (its connection schema, checks and ``connections.test``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import attrs
from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface, implementer

from ..cells.base import ICellType

if TYPE_CHECKING:
    from .cell import IntegrationRun
    from .connections import Connection
    from ..cells.base import Outcome, RuntimeServices

FIELD_KINDS = ("string", "text", "boolean", "integer")


class IntegrationError(Exception):
    """A failure with its error ``code`` and a message a user can act on.

    Cells finish ``error`` with it; ``connections.set`` / ``connections.test``
    answer it as the reply's error. ``status`` is the HTTP status when a
    server answered, ``value`` a CellResult to keep even so."""

    def __init__(self, code: str, message: str, *, status: int | None = None,
                 value: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.value = value


@attrs.frozen
class Field:
    """One setting of a connection type, as ``connections.types`` describes it.

    ``kind``: ``string`` (one line), ``text`` (several lines: PEM, kubeconfig),
    ``boolean`` or ``integer``. A ``secret`` field is never sent back by
    ``connections.list``, and its value is masked in every output of a cell
    that uses the connection."""

    name: str
    description: str
    required: bool = False
    secret: bool = False
    kind: str = "string"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "required": self.required, "secret": self.secret,
                "kind": self.kind, "description": self.description}


# The field names every HTTP-based type uses (the contract: scripts
# and UIs rely on them).
URL = Field("url", "Base URL of the API, e.g. https://prometheus.example:9090", required=True)
TOKEN = Field("token", "Bearer token (prefer a reference: {{secret:NAME}})", secret=True)
USERNAME = Field("username", "User name for HTTP basic authentication")
PASSWORD = Field("password", "Password for HTTP basic authentication (prefer {{secret:NAME}})", secret=True)
CA = Field("ca", "CA certificate(s) that sign the server's certificate, for this connection only: "
                 "PEM text or the path of a PEM file", kind="text")


def http_fields(url_example: str, basic: bool = True) -> tuple[Field, ...]:
    """``url``, ``token``, ``username``/``password`` (when ``basic``) and ``ca``."""
    url = attrs.evolve(URL, description=f"Base URL of the API, e.g. {url_example}")
    return (url, TOKEN, *((USERNAME, PASSWORD) if basic else ()), CA)


class IConnectionType(Interface):
    """A plugin: one type of ``connections.set`` (PROTOCOL.md section 13)."""

    name = Attribute("The connection type, e.g. 'prometheus'.")
    description = Attribute("One line shown to users.")
    fields = Attribute("The schema: a tuple of Field.")

    def check(fields: Mapping[str, Any]) -> None:
        """Checks beyond the schema (combinations, URL shapes) on the stored
        form (references not resolved); raise IntegrationError('bad_request')."""

    def test(connection: "Connection", services: "RuntimeServices") -> Any:
        """Coroutine: check the connection works; return a short detail
        (``"Prometheus 2.42.0"``) or raise IntegrationError with one of the
        codes ``unreachable``, ``tls_error``, ``remote_unauthorized``,
        ``remote_forbidden``, ``bad_response``."""


@implementer(IPlugin, ICellType, IConnectionType)
class Integration:
    """Base class: subclass it, set the class attributes, write ``execute``
    and ``test``, and expose one instance from a ``spinrt/plugins`` module."""

    name: str = ""
    description: str = ""
    fields: tuple[Field, ...] = ()
    # Cell options this type accepts besides ``connection`` and ``timeout_s``
    # (name -> description); any other option is refused with bad_option.
    options: Mapping[str, str] = {}
    # Seconds a run may take when the cell sets no timeout_s.
    default_timeout: float = 300.0

    def make_processor(self, services: "RuntimeServices") -> Any:
        from .cell import IntegrationProcessor

        return IntegrationProcessor(self, services)

    def check(self, fields: Mapping[str, Any]) -> None:
        return None

    async def test(self, connection: "Connection", services: "RuntimeServices") -> str:
        raise NotImplementedError

    async def execute(self, run: "IntegrationRun") -> "Outcome":
        """Run one cell: ``run`` has the cell, its options, the connection
        (resolved, its secrets already masked) and helpers for outputs."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<integration {self.name}>"
