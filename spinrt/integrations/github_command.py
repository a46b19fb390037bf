"""The grammar of ``github`` cells (pure): one command a cell.

::

    issues OWNER/REPO [NUMBER]        pulls OWNER/REPO [NUMBER]
    commits OWNER/REPO                compare OWNER/REPO BASE...HEAD
    runs OWNER/REPO [RUN_ID]          run-log OWNER/REPO RUN_ID
    comment OWNER/REPO NUMBER         graphql (the query on the following lines)

Flags ``--state``, ``--label`` (repeatable), ``--since``, ``--workflow``,
``--status``, ``--branch``, ``--limit`` (``--name value`` or
``--name=value``; cell options of the same names too). ``#`` starts a
comment. Anything else: IntegrationError ``bad_command``.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from .base import IntegrationError

COMMANDS = ("issues", "pulls", "commits", "compare", "runs", "run-log", "comment", "graphql")
WRITES = ("comment",)
FLAGS = ("state", "label", "since", "workflow", "status", "branch", "limit")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+\Z")


def _bad(message: str) -> IntegrationError:
    return IntegrationError("bad_command", message + " (see docs/integrations.rst, github)")


def parse(source: str, options: dict[str, Any]) -> dict[str, Any]:
    """The command of a cell's source: ``{verb, repo, args, flags, query}``;
    bad_command for anything the grammar does not allow."""
    lines = source.strip().splitlines()
    if not lines:
        raise _bad("the source is a command, e.g. 'runs octo/app --status failure'")
    try:
        words = shlex.split(lines[0], comments=True)
    except ValueError as e:
        raise _bad(f"cannot read the command: {e}") from None
    if not words or words[0] not in COMMANDS:
        raise _bad(f"unknown command {(words or [''])[0][:40]!r}; one of {', '.join(COMMANDS)}")
    verb, rest = words[0], words[1:]
    flags: dict[str, Any] = {k: options[k] for k in FLAGS if options.get(k) is not None}
    labels = list(flags.pop("label", []) if isinstance(flags.get("label"), list) else
                  [flags.pop("label")] if "label" in flags else [])
    args: list[str] = []
    while rest:
        word = rest.pop(0)
        if not word.startswith("--"):
            args.append(word)
            continue
        name, eq, value = word[2:].partition("=")
        if name not in FLAGS:
            raise _bad(f"unknown flag --{name[:40]}; the flags: {', '.join('--' + f for f in FLAGS)}")
        if not eq:
            if not rest:
                raise _bad(f"--{name} needs a value")
            value = rest.pop(0)
        if name == "label":
            labels.append(value)
        else:
            flags[name] = value
    if labels:
        flags["label"] = labels
    if verb == "graphql":
        if args:
            raise _bad("graphql takes no arguments: the query is on the following lines")
        return {"verb": verb, "repo": None, "args": [], "flags": flags, "query": "\n".join(lines[1:]).strip()}
    if len(lines) > 1 and any(line.strip() and not line.strip().startswith("#") for line in lines[1:]):
        raise _bad(f"{verb} is one line; only graphql reads the following lines")
    arity = {"issues": (0, 1), "pulls": (0, 1), "commits": (0, 0), "compare": (1, 1), "runs": (0, 1),
             "run-log": (1, 1), "comment": (1, 1)}[verb]
    if not args or not _REPO.match(args[0]):
        raise _bad(f"{verb} needs OWNER/REPO first, e.g. '{verb} octo/app'")
    repo, args = args[0], args[1:]
    if not arity[0] <= len(args) <= arity[1]:
        raise _bad(f"{verb} OWNER/REPO takes {arity[1]} argument(s) at most, got {' '.join(args)[:80]!r}"
                   if arity[0] == 0 else f"{verb} needs {'BASE...HEAD' if verb == 'compare' else 'a number'}")
    if verb == "compare" and "..." not in args[0]:
        raise _bad("compare needs BASE...HEAD, e.g. 'compare octo/app v1.2.0...main'")
    if verb != "compare" and args and not args[0].isdigit():
        raise _bad(f"{verb}: {args[0][:40]!r} is not a number")
    return {"verb": verb, "repo": repo, "args": args, "flags": flags, "query": ""}
