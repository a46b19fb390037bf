"""Template parameters of a notebook: their declarations and the values given for them.

Pure (no I/O). PROTOCOL.md section 12: a notebook declares
``metadata.spin.parameters = [{name, kind, label?, default?, options?, code?}]``
with ``kind`` one of

- ``input``: free text;
- ``static``: one of ``options`` (a non-empty list of strings);
- ``code_python``: one of the strings the Python ``code`` computes (its last
  expression), evaluated when a client asks (``notebook.parameters``).

Values are text: a parameter becomes a session variable that templates
(``{{name}}``) read. A parameter's ``name`` follows the rules of session
variable names (an identifier, not a Go template keyword: PROTOCOL.md 14).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .templates import reserved_name

KINDS = ("input", "static", "code_python")
FIELDS = ("name", "kind", "label", "default", "options", "code")
MAX_PARAMETERS = 200
MAX_OPTIONS = 10_000


def _strings(field: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"'{field}' must be a list of strings")
    if len(value) > MAX_OPTIONS:
        raise ValueError(f"'{field}' holds more than {MAX_OPTIONS} options")
    return list(value)


def parse_parameter(value: Any, field: str) -> dict[str, Any]:
    """One declaration, checked; the result holds only the fields given
    (``null`` counts as not given). ValueError naming the field."""
    if not isinstance(value, dict):
        raise ValueError(f"'{field}' must be an object")
    unknown = sorted(str(k)[:32] for k in value if k not in FIELDS)
    if unknown:
        raise ValueError(f"'{field}' has unknown fields: {', '.join(unknown)} "
                         f"(a parameter has {', '.join(FIELDS)})")
    given = {k: v for k, v in value.items() if v is not None}
    name = given.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"'{field}.name' must be an identifier (it becomes a session variable)")
    if reserved_name(name):
        raise ValueError(f"'{field}.name' may not be {name!r}: Go template keywords are never "
                         "variables (PROTOCOL.md section 14)")
    kind = given.get("kind")
    if kind not in KINDS:
        raise ValueError(f"'{field}.kind' must be one of {', '.join(KINDS)}")
    out: dict[str, Any] = {"name": name, "kind": kind}
    for key in ("label", "default"):
        if key in given:
            if not isinstance(given[key], str):
                raise ValueError(f"'{field}.{key}' must be a string")
            out[key] = given[key]
    if kind == "static":
        if "options" not in given:
            raise ValueError(f"'{field}.options' is required for a static parameter")
        out["options"] = _strings(f"{field}.options", given["options"])
        if not out["options"]:
            raise ValueError(f"'{field}.options' must hold at least one option")
        if "default" in out and out["default"] not in out["options"]:
            raise ValueError(f"'{field}.default' must be one of its options")
    elif "options" in given:
        raise ValueError(f"'{field}.options' is only for static parameters "
                         f"(a {kind} parameter's options {'come from its code' if kind == 'code_python' else 'are free text'})")
    if kind == "code_python":
        if not isinstance(given.get("code"), str) or not given["code"].strip():
            raise ValueError(f"'{field}.code' must be Python code whose last expression is a list of strings")
        out["code"] = given["code"]
    elif "code" in given:
        raise ValueError(f"'{field}.code' is only for code_python parameters")
    return out


def parse_parameters(field: str, value: Any) -> list[dict[str, Any]]:
    """A list of declarations, checked (also the protocol layer's field check).
    ValueError naming the field, e.g. ``'parameters[1].kind' must be ...``."""
    if not isinstance(value, list):
        raise ValueError(f"'{field}' must be a list of parameters")
    if len(value) > MAX_PARAMETERS:
        raise ValueError(f"'{field}' holds more than {MAX_PARAMETERS} parameters")
    seen: set[str] = set()
    out = []
    for i, item in enumerate(value):
        parameter = parse_parameter(item, f"{field}[{i}]")
        if parameter["name"] in seen:
            raise ValueError(f"'{field}[{i}].name' {parameter['name']!r} is declared twice")
        seen.add(parameter["name"])
        out.append(parameter)
    return out


def described(parameter: Mapping[str, Any], options: list[str] | None = None) -> dict[str, Any]:
    """A declaration as ``notebook.parameters`` returns it: ``{name, kind,
    label, default, options}``, every key present (label defaults to the
    name, default to null; options: a static parameter's own, a code_python
    one's computed ``options``, null for input)."""
    if options is None and parameter["kind"] == "static":
        options = list(parameter["options"])
    return {
        "name": parameter["name"],
        "kind": parameter["kind"],
        "label": parameter.get("label", parameter["name"]),
        "default": parameter.get("default"),
        "options": options,
    }


def _shown(values: Sequence[str]) -> str:
    text = ", ".join(repr(v) for v in values[:10])
    return text + (f" and {len(values) - 10} more" if len(values) > 10 else "")


def check_parameter_values(parameters: Sequence[Mapping[str, Any]], values: Mapping[str, Any]) -> None:
    """Check the values given for a notebook's parameters (``session.create``
    with ``notebook`` and ``variables``, PROTOCOL.md section 12).

    ``parameters``: the declarations (as stored, or as ``notebook.parameters``
    returns them). A value must be a string; a static parameter's must be one
    of its options, and so must a code_python one's when ``options`` were
    computed (present and a list). Values for names no parameter declares,
    and parameters without a value, are not checked here.
    Raises ValueError naming the parameter, e.g.
    ``'variables.region' must be one of 'eu', 'us' (parameter 'region' is static), not 'mars'``.
    """
    for parameter in parameters:
        name = parameter["name"]
        if name not in values:
            continue
        value = values[name]
        kind = parameter["kind"]
        if not isinstance(value, str):
            raise ValueError(f"'variables.{name}' must be a string (parameter {name!r} is {kind}), "
                             f"not {type(value).__name__}")
        options = parameter.get("options")
        if kind in ("static", "code_python") and isinstance(options, list) and value not in options:
            shown = value if len(value) <= 64 else value[:63] + "\u2026"
            raise ValueError(f"'variables.{name}' must be one of {_shown(options)} "
                             f"(parameter {name!r} is {kind}), not {shown!r}")
