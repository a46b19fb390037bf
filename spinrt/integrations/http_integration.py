"""The base of integrations that speak HTTP to one base URL (most of them).

:class:`HttpIntegration` adds to :class:`~spinrt.integrations.base.Integration`
the standard fields (``url``, ``token`` or ``username``/``password``, ``ca``;
PROTOCOL.md section 13 and docs/integrations.rst), their checks, the
:class:`~spinrt.integrations.http.HttpApi` of a connection (authentication
headers, the connection's own CA) and a ``connections.test`` that asks one
path (``test_path``) and reports ``test_detail`` of its JSON answer.
"""

from __future__ import annotations

from typing import Any, Mapping

from hyperlink import URL

from ..cells.base import Outcome
from .base import Integration, IntegrationError, http_fields
from .cell import IntegrationRun
from .connections import Connection
from .http import HttpApi, agents_of, authorization, certificates, for_test, pem_of


def check_url(value: Any, where: str, code: str = "bad_request") -> str:
    """An absolute http(s) URL with a host, or IntegrationError(code)."""
    text = value.strip() if isinstance(value, str) else ""
    try:
        url = URL.from_text(text)
    except Exception:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise IntegrationError(code, f"{where} must be an absolute http:// or https:// URL with a host, "
                                     f"e.g. https://prometheus.example:9090")
    if url.userinfo or url.query:
        raise IntegrationError(code, f"{where} must not carry credentials or a query: use the token, "
                                     f"username and password fields")
    return text


def literal(value: Any) -> bool:
    """A value given as is (not a {{secret:...}} / {{runtime_env:...}} reference)."""
    return isinstance(value, str) and "{{" not in value


class HttpIntegration(Integration):
    """An integration whose connection is a base URL with a token or basic auth."""

    url_example = "https://api.example"
    basic_auth = True  # username/password allowed besides token
    token_scheme = "Bearer"
    test_path = "/"
    api_class = HttpApi  # a subclass may keep per-run state (GitHub's rate limit)

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "fields" not in cls.__dict__:
            cls.fields = http_fields(cls.url_example, cls.basic_auth)

    def check(self, fields: Mapping[str, Any]) -> None:
        if literal(fields.get("url")):
            check_url(fields["url"], "'url'")
        if fields.get("token") and (fields.get("username") or fields.get("password")):
            raise IntegrationError("bad_request", "give either 'token' or 'username' and 'password', not both")
        if bool(fields.get("username")) != bool(fields.get("password")):
            raise IntegrationError("bad_request", "'username' and 'password' go together")
        ca = fields.get("ca")
        if literal(ca) and "-----BEGIN" in ca:
            try:
                certificates(ca.encode("utf-8"), "ca", "the connection")
            except IntegrationError as e:
                raise IntegrationError("bad_request", e.message) from None

    def headers(self, connection: Connection) -> dict[str, str]:
        """Authentication (and any other fixed) headers of a connection."""
        user = connection.get("username")
        return authorization(connection.get("token"), (user, connection.get("password") or "") if user else None,
                             self.token_scheme)

    def base_url(self, connection: Connection) -> Any:
        """The API's base URL (``url``; a type may derive it, as Datadog does from ``site``)."""
        return connection.get("url")

    async def api(self, services: Any, connection: Connection, run: IntegrationRun | None = None) -> HttpApi:
        """The connection's HttpApi (stopped with ``run`` when one is given)."""
        what = f"connection {connection.name!r}"
        url = check_url(self.base_url(connection), f"{what}: 'url'", "bad_connection")
        ca = connection.get("ca")
        pem = await pem_of(services, ca, "ca", what) if ca else None
        agent = agents_of(services).agent(pem, None, what)
        api = self.api_class(services, url, headers=self.headers(connection), agent=agent, what=what)
        if run is not None:
            run.track(api)
        return api

    async def run_choice(self, run: IntegrationRun, option: str, choices: tuple[str, ...]) -> Outcome:
        """For types whose ``options[option]`` picks what the cell does
        (grafana's ``action``, datadog's ``kind``; the first choice is the
        default): ``self._<choice>(run, api)``'s value, with the choice in it,
        as the run's Outcome."""
        choice = run.option(option, (str,), choices[0])
        if choice not in choices:
            raise IntegrationError("bad_option", f"options.{option} must be one of {', '.join(choices)}")
        api = await self.api(run.services, run.connection, run)
        value = await getattr(self, "_" + choice)(run, api)
        value[option] = choice
        return Outcome(status="ok", value=value)

    async def test(self, connection: Connection, services: Any) -> str:
        api = await self.api(services, connection)
        try:
            data = await api.get_json(self.test_path)
        except IntegrationError as e:
            raise for_test(e) from None
        return self.test_detail(data, api)

    def test_detail(self, data: Any, api: HttpApi) -> str:
        return f"{api.base_url} answered"
