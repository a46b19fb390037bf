"""``spin token create|list|revoke`` and ``spin audit``: a team's runtime, from a shell.

Both talk to a running runtime: ``--url`` (default ``$SPIN_URL``, else
``ws://127.0.0.1:8888/ws``) with the owner's token from ``SPIN_TOKEN`` or
``--token-file``. ``spin token`` speaks the WebSocket protocol (``tokens.*``
ops); ``spin audit`` reads ``GET /api/audit`` page by page (token in the
``Authorization`` header) and prints each row, oldest first.

Exit codes: 0 done; 1 the runtime refused the request (``forbidden``, no
such token, a bad name...); 2 bad usage; 4 the runtime cannot be reached or
refuses the token. ``spin token create`` prints the new secret alone on
stdout (it is shown once: keep it), and what it made on stderr.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Mapping, TextIO

import treq
from autobahn.websocket.util import parse_url
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

from .client import Connection, RequestFailed, RuntimeUnavailable, shown_url

DEFAULT_URL = "ws://127.0.0.1:8888/ws"
PAGE = 1000
EXIT_REFUSED = 1


def add_commands(commands: Any, parser_class: Any) -> None:
    """Add ``token`` and ``audit`` to spin's sub-command parsers."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", metavar="WS_URL", help=f"the runtime, ws(s)://host:port/ws (default: $SPIN_URL, "
                                                      f"else {DEFAULT_URL})")
        p.add_argument("--token-file", metavar="PATH", help="file holding an owner token (default: $SPIN_TOKEN)")
        p.add_argument("--ca-file", metavar="PATH", help="CA certificates for a wss:// runtime "
                                                         "(default: $REQUESTS_CA_BUNDLE, else the system's)")
        p.add_argument("--json", action="store_true", help="print JSON instead of text")

    token = commands.add_parser("token", help="create, list and revoke named tokens (owner only)",
                                description="Named tokens with roles (viewer < runner < editor < owner) on a "
                                            "running runtime. Needs an owner token.")
    actions = token.add_subparsers(dest="action", parser_class=parser_class)
    create = actions.add_parser("create", help="make a token; its secret is printed once")
    create.add_argument("name", metavar="NAME", help="who it is for (letters, digits, . _ @ -)")
    create.add_argument("--role", required=True, choices=("viewer", "runner", "editor", "owner"))
    create.add_argument("--expires-in-days", type=float, metavar="DAYS", help="expire after DAYS (default never)")
    common(create)
    listing = actions.add_parser("list", help="the tokens not revoked")
    common(listing)
    revoke = actions.add_parser("revoke", help="revoke a token; its connections close at once")
    revoke.add_argument("id", metavar="ID", help="the token's id (see spin token list)")
    common(revoke)

    audit = commands.add_parser("audit", help="print the audit trail (owner only)",
                                description="Print the runtime's audit trail, oldest first: who did what, "
                                            "when, from where.")
    audit.add_argument("--since", metavar="TIME", help="from this ISO 8601 time (e.g. 2026-11-30T00:00:00Z)")
    audit.add_argument("--until", metavar="TIME", help="before this ISO 8601 time")
    audit.add_argument("--limit", type=int, metavar="N", help="at most N rows (default all)")
    common(audit)


def _url(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    from .main import UsageError

    url = args.url or environ.get("SPIN_URL") or DEFAULT_URL
    try:
        parse_url(url)
    except Exception as e:
        raise UsageError(f"--url: {e}") from None
    return url


def _settings(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[str, str, Any]:
    from .main import _token, trust_root

    url = _url(args, environ)
    token = _token(args.token_file, environ)
    ca, source = (args.ca_file, "--ca-file") if args.ca_file else (environ.get("REQUESTS_CA_BUNDLE"), "REQUESTS_CA_BUNDLE")
    trust = trust_root(ca, source) if ca and url.lower().startswith("wss:") else None
    return url, token, trust


async def token_command(args: argparse.Namespace, reactor: Any, environ: Mapping[str, str],
                        stdout: TextIO, stderr: TextIO) -> int:
    from .main import EXIT_USAGE

    if args.action is None:
        stderr.write("spin: error: spin token create|list|revoke\n")
        return EXIT_USAGE
    url, token, trust = _settings(args, environ)
    conn = await Connection.open(reactor, url, token, trust)
    try:
        if args.action == "create":
            params: dict[str, Any] = {"name": args.name, "role": args.role}
            if args.expires_in_days is not None:
                params["expires_in_days"] = args.expires_in_days
            reply = await conn.request("tokens.create", **params)
            made = reply["token"]
            if args.json:
                stdout.write(json.dumps({"token": made, "secret": reply["secret"]}) + "\n")
            else:
                stdout.write(reply["secret"] + "\n")
                stderr.write(f"created token {made['id']} for {made['name']} ({made['role']}), expires "
                             f"{made['expires'] or 'never'}; the secret above is shown once\n")
        elif args.action == "list":
            tokens = (await conn.request("tokens.list"))["tokens"]
            if args.json:
                stdout.write(json.dumps(tokens) + "\n")
            else:
                stdout.write(_table(tokens))
        else:
            await conn.request("tokens.revoke", token=args.id)
            if not args.json:
                stderr.write(f"revoked token {args.id}; its connections were closed\n")
    except RequestFailed as e:
        stderr.write(f"spin: the runtime refused {e}\n")
        return EXIT_REFUSED
    finally:
        await conn.close()
    return 0


def _table(tokens: list[dict[str, Any]]) -> str:
    columns = ("id", "name", "role", "created", "expires", "last_used")
    rows = [[str(t.get(c) or "-") for c in columns] for t in tokens]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def audit_url(ws_url: str) -> str:
    """ws://host:port/ws -> http://host:port/api/audit (wss -> https)."""
    secure, host, port, _, _, _ = parse_url(ws_url)
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if secure else 'http'}://{shown}:{port}/api/audit"


def audit_line(row: Mapping[str, Any]) -> str:
    who = row.get("identity") or "-"
    if row.get("role"):
        who += f" ({row['role']})"
    target = " ".join(f"{k}={json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v}"
                      for k, v in (row.get("target") or {}).items())
    return f"{row['ts']}  {who}  from {row.get('client') or '-'}  {row['action']}  {target}  -> {row['outcome']}"


async def audit_command(args: argparse.Namespace, reactor: Any, environ: Mapping[str, str],
                        stdout: TextIO, stderr: TextIO) -> int:
    from .main import UsageError

    url, token, trust = _settings(args, environ)
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    agent = Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=trust)) if trust is not None else Agent(reactor)
    base = audit_url(url)
    query: dict[str, str] = {}
    for name in ("since", "until"):
        if getattr(args, name):
            query[name] = getattr(args, name)
    printed, cursor = 0, None
    while args.limit is None or printed < args.limit:
        page = PAGE if args.limit is None else min(PAGE, args.limit - printed)
        params = {**query, "limit": str(page), **({"cursor": str(cursor)} if cursor is not None else {})}
        try:
            response = await treq.get(base, params=params, headers={"Authorization": f"Bearer {token}"},
                                      agent=agent, timeout=60)
            body = await response.content()
        except Exception as e:
            raise RuntimeUnavailable(f"cannot reach the runtime at {shown_url(url)}: {e}") from None
        if response.code != 200:
            try:
                error = json.loads(body)["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": str(response.code), "message": body.decode("utf-8", "replace")[:200]}
            if response.code in (401, 429):
                raise RuntimeUnavailable(f"the runtime refused the token (HTTP {response.code}): "
                                         "check SPIN_TOKEN or --token-file")
            stderr.write(f"spin: the runtime refused GET /api/audit: {error['message']} ({error['code']})\n")
            return EXIT_REFUSED
        rows = [json.loads(line) for line in body.splitlines() if line.strip()]
        for row in rows:
            stdout.write((json.dumps(row, ensure_ascii=False) if args.json else audit_line(row)) + "\n")
        printed += len(rows)
        if len(rows) < page:
            break
        cursor = rows[-1]["id"]
    return 0
