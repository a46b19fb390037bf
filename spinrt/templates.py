r"""Expand ``{{...}}`` placeholders in cell sources and options (PROTOCOL.md 6).

Pure: no I/O, no Twisted, no environment access. Values come from a
:class:`Resolver` supplied by the caller.

Placeholders
------------
Only these shapes are placeholders; each sits on one line, with optional
spaces or tabs after ``{{``, before ``}}`` and around ``:`` and ``|``::

    {{name}}  {{ name }}  {{name.path.0}}   a session variable, then a path
    {{runtime_env:NAME}}                     the runtime's environment variable
    {{secret:NAME}}                          a secret
    {{secret_var:name}}                      the secret whose NAME is the value
                                             of variable ``name`` (a path is
                                             allowed: ``{{secret_var:db.key}}``)

``name`` and path steps are identifiers (letters, digits, ``_``, not starting
with a digit); a step may also be a non-negative integer without leading
zeros. On a mapping a step is a key (a number tries the string key, then the
int key); on a list or tuple an index; on anything else an attribute, never
one starting with ``_``. ``NAME`` is ASCII letters, digits, ``_``, ``.`` and
``-``, starting with a letter or ``_``.

Filters, applied left to right: ``|shquote`` (POSIX shell quoting) and
``|json`` (JSON text), e.g. ``{{ secret:TOKEN | json }}``,
``{{hosts.0|shquote}}``, ``{{cfg|json|shquote}}``. Any other filter name is
an error.

Everything else passes through byte for byte: ``{{.Names}}``, ``{{ json . }}``,
``{{- if .x }}``, ``{{ .Values.image }}``, ``{{ x | default('y') }}``,
``{% for %}``, ``{{ range $i, $e := .Items }}``.

A value becomes text this way: a string as is; ``None``, booleans, numbers,
dicts, lists and tuples as JSON (``null``, ``true``, ``3``, ``{"a": 1}``);
anything else with ``str()``. ``|json`` always gives JSON (parts that JSON
cannot encode go through ``str()`` first).

Every placeholder of a text is resolved before anything is returned; the first
one that cannot be resolved raises :class:`TemplateError`, which names the
placeholder as written and never a resolved value.

Never placeholders (PROTOCOL.md 14)
-----------------------------------
Text of another template language (kubectl and Helm go-templates, GitHub
Actions) is never looked up, whatever variables exist, and passes through
byte for byte:

- a Go keyword as the name, also with a path or filters: ``{{end}}``,
  ``{{ else }}`` (:data:`RESERVED_NAMES`, case-sensitive as in Go). No
  variable may have such a name (:func:`reserved_name`): ``{{secret_var:end}}``
  fails;
- ``{{`` directly after ``$``: ``${{ github.sha }}``, ``${{secrets.X}}``;
- anything starting with ``-`` or ``/*`` inside the braces, or ending with a
  space and ``-`` (trim markers: ``{{- end -}}``); a Go comment,
  ``{{/* ... */}}`` or ``{{- /* ... */ -}}``, is kept whole, newlines and all.

A name that is none of these, such as the typo ``{{hostnme}}``, still fails.

Escape
------
A backslash directly before text of the placeholder shape keeps it literal:
``\{{name}}`` gives ``{{name}}``. In a run of backslashes directly before it
each pair gives one backslash, and an odd one left over keeps it literal:
``\\{{name}}`` gives a backslash then the value of ``name``;
``\\\{{name}}`` gives ``\{{name}}``. This holds for keywords too
(``\{{ end }}`` gives ``{{ end }}``) and ``$\{{ github.sha }}`` gives
``${{ github.sha }}``. Backslashes anywhere else, inside a Go comment, and
before brace text without the placeholder shape (``\{{.Names}}``), are left
alone. Jinja's ``{{ item }}`` has the shape: write ``\{{ item }}``.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

__all__ = [
    "RESERVED_NAMES", "Placeholder", "Resolver", "TemplateError", "expand", "expand_cell",
    "expand_cell_with_secrets", "expand_value", "expand_with_secrets", "find_placeholders",
    "reserved_name", "variable_names",
]

_T = TypeVar("_T")

#: The Go text/template keywords (https://pkg.go.dev/text/template, "Actions"):
#: ``{{end}}`` and friends are Go text, never placeholders (PROTOCOL.md 14).
RESERVED_NAMES: frozenset[str] = frozenset(
    {"block", "break", "continue", "define", "else", "end", "if", "nil", "range", "template", "with"}
)


def reserved_name(name: str) -> bool:
    """Whether ``name`` can never be a session variable read by a placeholder.

    True for the Go keywords of :data:`RESERVED_NAMES` (case-sensitive):
    ``{{end}}`` is always Go text, so a variable of that name could never be
    read. PROTOCOL.md 14 has ``session.create`` variables and
    ``output_variable`` refuse such names with ``bad_request``.
    """
    return name in RESERVED_NAMES


class TemplateError(Exception):
    """A placeholder that cannot be expanded.

    ``placeholder`` is its text as written, ``reason`` a short explanation;
    neither ever holds a resolved value.
    """

    def __init__(self, placeholder: str, reason: str) -> None:
        super().__init__(placeholder, reason)
        self.placeholder = placeholder
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot expand {self.placeholder}: {self.reason}"


class Resolver(Protocol):
    """Where placeholder values come from; each method raises KeyError."""

    def variable(self, name: str) -> object: ...

    def env(self, name: str) -> str: ...

    def secret(self, name: str) -> str: ...


@dataclass(frozen=True)
class Placeholder:
    """One placeholder found in a text; ``text == source[start:end]``."""

    text: str
    kind: str  # 'var' | 'env' | 'secret' | 'secret_var'
    name: str  # variable root name, or the env / secret NAME
    path: tuple[str | int, ...]
    filters: tuple[str, ...]
    start: int
    end: int


# No nested quantifier can match the same characters two ways, and no
# placeholder contains "{", so matching stays linear in the input length.
_WS = r"[ \t]*"
_IDENT = r"[^\W\d]\w*"
_STEP = rf"(?:{_IDENT}|0|[1-9][0-9]*)"
_PATTERN = re.compile(
    rf"\{{\{{{_WS}"
    rf"(?:(?P<kind>runtime_env|secret){_WS}:{_WS}(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)"
    rf"|(?:(?P<sv>secret_var){_WS}:{_WS})?(?P<path>{_IDENT}(?:\.{_STEP})*))"
    rf"(?P<filters>(?:{_WS}\|{_WS}{_IDENT})*){_WS}\}}\}}"
)
_ESCAPE_HINT = r" (write \{{ to keep the braces)"
# Go comments (text/template "Actions"): may hold newlines, do not nest, and
# "*/" must be followed by the closing delimiter, with an optional trim marker.
_COMMENT_OPEN = re.compile(r"\{\{(?:-[ \t\r\n])?/\*")
_COMMENT_CLOSE = re.compile(r"\*/(?:[ \t\r\n]-)?\}\}")


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, int, float, dict, list, tuple)):
        return _json(value)
    return str(value)


_FILTERS: dict[str, Callable[[object], str]] = {
    "json": _json,
    "shquote": lambda value: shlex.quote(_text(value)),
}


def _comments(text: str) -> Iterator[tuple[int, int]]:
    """The (start, end) spans of the Go comments of ``text``, in order."""
    close = pos = 0
    while (opener := _COMMENT_OPEN.search(text, pos)) is not None:
        if close < opener.end():  # reuse the last "*/" while it lies ahead: linear time
            close = text.find("*/", opener.end())
            if close < 0:
                return
        closer = _COMMENT_CLOSE.match(text, close)
        if closer is None:  # Go rejects this; not a comment
            pos = opener.end()
            continue
        yield opener.start(), closer.end()
        pos = closer.end()


def _scan(text: str) -> Iterator[tuple[re.Match[str], int, bool]]:
    """Yield each placeholder-shaped match, the index where the run of
    backslashes directly before it starts, and whether it is a placeholder
    (not escaped, not Go or CI text)."""
    previous_end = 0
    comments = _comments(text)
    comment = next(comments, None)
    for match in _PATTERN.finditer(text):
        start = first = match.start()
        while comment is not None and comment[1] <= start:
            comment = next(comments, None)
        in_comment = comment is not None and comment[0] <= start  # kept whole, backslashes too
        while not in_comment and first > previous_end and text[first - 1] == "\\":
            first -= 1
        live = (
            not in_comment
            and (start - first) % 2 == 0
            and not (start and text[start - 1] == "$")  # ${{ ... }}: GitHub Actions and co.
            and not (match["path"] and not match["sv"] and reserved_name(match["path"].split(".", 1)[0]))
        )
        yield match, first, live
        previous_end = match.end()


def _parse(match: re.Match[str]) -> Placeholder:
    path: tuple[str | int, ...] = ()
    if match["kind"]:
        kind = "env" if match["kind"] == "runtime_env" else "secret"
        name = match["name"]
    else:
        kind = "secret_var" if match["sv"] else "var"
        name, *steps = match["path"].split(".")
        path = tuple(int(s) if s[0] in "0123456789" else s for s in steps)
    filters = tuple(f.strip(" \t") for f in match["filters"].split("|")[1:])
    return Placeholder(match.group(), kind, name, path, filters, match.start(), match.end())


def find_placeholders(text: str) -> list[Placeholder]:
    """The placeholders of ``text`` in order; escaped ones, Go keywords and
    ``${{ ... }}`` are not placeholders and are left out."""
    return [_parse(m) for m, _, live in _scan(text) if live]


def variable_names(value: object) -> set[str]:
    """Root names of the variables that expanding ``value`` reads.

    ``value`` is a string, or dicts / lists / tuples holding strings (keys are
    not looked at), so a caller can fetch only the variables a cell needs.
    """
    if isinstance(value, str):
        return {p.name for p in find_placeholders(value) if p.kind in ("var", "secret_var") and not reserved_name(p.name)}
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return set().union(*(variable_names(item) for item in value))
    return set()


class _StepError(Exception):
    """A path step that does not apply; the argument is the reason."""


_MISSING = object()


def _step(value: object, step: str | int, where: str) -> object:
    if isinstance(value, Mapping):
        for key in (str(step), step) if isinstance(step, int) else (step,):
            if key in value:
                return value[key]
        raise _StepError(f"{where!r} has no key {str(step)!r}")
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
        if not isinstance(step, int):
            raise _StepError(f"{where!r} is a sequence, {step!r} is not an index")
        if step >= len(value):
            raise _StepError(f"index {step} is out of range for {where!r}")
        return value[step]
    if isinstance(step, int):
        raise _StepError(f"{where!r} ({type(value).__name__}) cannot be indexed")
    if step.startswith("_"):
        raise _StepError(f"attribute {step!r} is private")
    found = getattr(value, step, _MISSING)
    if found is _MISSING:
        raise _StepError(f"{where!r} ({type(value).__name__}) has no attribute {step!r}")
    return found


def _walk(placeholder: Placeholder, value: object) -> object:
    where = placeholder.name
    for step in placeholder.path:
        try:
            value = _step(value, step, where)
        except _StepError as e:
            raise TemplateError(placeholder.text, str(e)) from None
        except Exception as e:  # a property or __getitem__ that raised
            reason = f"reading {where}.{step} failed ({type(e).__name__})"
            raise TemplateError(placeholder.text, reason) from None
        where = f"{where}.{step}"
    return value


def _lookup(placeholder: Placeholder, get: Callable[[str], _T], key: str, reason: str) -> _T:
    try:
        return get(key)
    except KeyError:
        raise TemplateError(placeholder.text, reason) from None


def _resolve(p: Placeholder, resolver: Resolver) -> tuple[object, bool]:
    """The value of ``p`` and whether it is a secret."""
    if p.kind == "env":
        return _lookup(p, resolver.env, p.name, f"environment variable {p.name!r} is not set"), False
    if p.kind == "secret":
        return _lookup(p, resolver.secret, p.name, f"secret {p.name!r} is not set (secrets.set, or the runtime's environment)"), True
    if reserved_name(p.name):  # only secret_var gets here: {{end}} is never parsed
        raise TemplateError(p.text, f"{p.name!r} is a Go template keyword, never a variable name")
    value = _walk(p, _lookup(p, resolver.variable, p.name, f"unknown variable {p.name!r}" + _ESCAPE_HINT))
    if p.kind == "var":
        return value, False
    where = ".".join(map(str, (p.name, *p.path)))
    if not isinstance(value, str):
        raise TemplateError(p.text, f"variable {where!r} does not hold a secret name (a string)")
    return _lookup(p, resolver.secret, value, f"no secret has the name held in variable {where!r}"), True


def _render(p: Placeholder, value: object) -> str:
    try:
        for name in p.filters:
            value = _FILTERS[name](value)
        return _text(value)
    except Exception as e:  # unencodable value (cycle, odd keys) or failing __str__
        raise TemplateError(p.text, f"value cannot be written as text ({type(e).__name__})") from None


class _Expansion:
    """One expansion: resolves placeholders and records the secrets used."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.secrets: set[str] = set()

    def placeholder(self, p: Placeholder) -> str:
        unknown = [f for f in p.filters if f not in _FILTERS]
        if unknown:
            raise TemplateError(p.text, f"unknown filter {unknown[0]!r} (known: json, shquote)")
        value, is_secret = _resolve(p, self.resolver)
        text = _render(p, value)
        if is_secret and isinstance(value, str) and value:
            self.secrets.add(value)
            if value not in text:  # a filter escaped it: mask the written form too
                self.secrets.add(text)
        return text

    def text(self, text: str) -> str:
        if "{{" not in text:
            return text
        parts: list[str] = []
        done = 0
        for match, first, live in _scan(text):
            backslashes = match.start() - first
            parts += [text[done:first], "\\" * (backslashes // 2)]
            parts.append(self.placeholder(_parse(match)) if live else match.group())
            done = match.end()
        parts.append(text[done:])
        return "".join(parts)

    def value(self, value: object) -> object:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self.value(item) for item in value)
        return value


def expand_with_secrets(text: str, resolver: Resolver) -> tuple[str, set[str]]:
    """Expand ``text``; also return the secret values it substituted.

    The set holds each non-empty secret value used and, where a filter changed
    how it is written (``|json`` escapes), the written form as well, so that
    masking every member hides every substituted secret.
    """
    expansion = _Expansion(resolver)
    return expansion.text(text), expansion.secrets


def expand(text: str, resolver: Resolver) -> str:
    """Expand every placeholder of ``text``; raise TemplateError on the first
    one that cannot be resolved."""
    return expand_with_secrets(text, resolver)[0]


def expand_value(value: _T, resolver: Resolver) -> _T:
    """Expand every string inside dicts / lists / tuples; dict keys and other
    values are returned as they are."""
    return cast(_T, _Expansion(resolver).value(value))


def expand_cell_with_secrets(
    source: str, options: dict[str, Any], resolver: Resolver
) -> tuple[str, dict[str, Any], set[str]]:
    """Expand a cell's source, then its options; also return the secrets used."""
    expansion = _Expansion(resolver)
    new_source = expansion.text(source)
    new_options = cast("dict[str, Any]", expansion.value(options))
    return new_source, new_options, expansion.secrets


def expand_cell(source: str, options: dict[str, Any], resolver: Resolver) -> tuple[str, dict[str, Any]]:
    """Expand a cell's source, then its options."""
    return expand_cell_with_secrets(source, options, resolver)[:2]
