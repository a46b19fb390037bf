"""The kubectl-like command of a ``kubernetes`` cell, parsed. Pure.

Grammar (a subset of kubectl's, same spelling; a leading ``kubectl`` is
allowed)::

    get KIND[/NAME] [NAME...] [-n NS | -A] [-l SELECTOR] [--field-selector S] [-o wide|json|yaml|name] [-w]
    describe KIND[/NAME] [NAME...] [-n NS | -A] [-l SELECTOR]
    logs POD [-c CONTAINER] [--tail N] [--since 5m] [-f] [-n NS]
    events [-n NS | -A] [--for KIND/NAME]
    top pods|nodes [NAME] [-n NS | -A] [-l SELECTOR]
    rollout restart KIND/NAME | KIND NAME       (writes: options.allow_writes)
    scale KIND/NAME --replicas=N                (writes)
    delete pod NAME... [-n NS]                  (writes)
    cordon NODE / uncordon NODE                 (writes)

A kind that is not in :data:`KINDS` is kept unresolved (``group`` empty)
for the cell to look up in the cluster's discovery API. Names, namespaces
and container names are checked as Kubernetes names: they end up in URL
paths. Errors are IntegrationError ``bad_command`` or ``unknown_kind`` with
the words to fix them.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

import attrs

from .base import IntegrationError
from .times import parse_duration


@attrs.frozen
class Kind:
    plural: str
    group: str  # the API path prefix: /api/v1, /apis/apps/v1
    namespaced: bool
    kind: str
    aliases: tuple[str, ...] = ()

    def path(self, namespace: str | None, name: str | None = None) -> str:
        parts = [self.group]
        if self.namespaced and namespace is not None:
            parts += ["namespaces", namespace]
        parts.append(self.plural)
        if name is not None:
            parts.append(name)
        return "/".join(parts)


KINDS = (
    Kind("pods", "/api/v1", True, "Pod", ("pod", "po")),
    Kind("services", "/api/v1", True, "Service", ("service", "svc")),
    Kind("namespaces", "/api/v1", False, "Namespace", ("namespace", "ns")),
    Kind("nodes", "/api/v1", False, "Node", ("node", "no")),
    Kind("configmaps", "/api/v1", True, "ConfigMap", ("configmap", "cm")),
    Kind("secrets", "/api/v1", True, "Secret", ("secret",)),
    Kind("events", "/api/v1", True, "Event", ("event", "ev")),
    Kind("endpoints", "/api/v1", True, "Endpoints", ("ep",)),
    Kind("persistentvolumeclaims", "/api/v1", True, "PersistentVolumeClaim", ("persistentvolumeclaim", "pvc")),
    Kind("persistentvolumes", "/api/v1", False, "PersistentVolume", ("persistentvolume", "pv")),
    Kind("serviceaccounts", "/api/v1", True, "ServiceAccount", ("serviceaccount", "sa")),
    Kind("deployments", "/apis/apps/v1", True, "Deployment", ("deployment", "deploy")),
    Kind("replicasets", "/apis/apps/v1", True, "ReplicaSet", ("replicaset", "rs")),
    Kind("statefulsets", "/apis/apps/v1", True, "StatefulSet", ("statefulset", "sts")),
    Kind("daemonsets", "/apis/apps/v1", True, "DaemonSet", ("daemonset", "ds")),
    Kind("jobs", "/apis/batch/v1", True, "Job", ("job",)),
    Kind("cronjobs", "/apis/batch/v1", True, "CronJob", ("cronjob", "cj")),
    Kind("ingresses", "/apis/networking.k8s.io/v1", True, "Ingress", ("ingress", "ing")),
    Kind("horizontalpodautoscalers", "/apis/autoscaling/v2", True, "HorizontalPodAutoscaler",
         ("horizontalpodautoscaler", "hpa")),
)
_BY_NAME = {n: k for k in KINDS for n in (k.plural, k.kind.lower(), *k.aliases)}
READS = ("get", "describe", "logs", "events", "top")
WRITES = ("rollout", "scale", "delete", "cordon", "uncordon")
OUTPUTS = ("wide", "json", "yaml", "name")

# flag -> (attribute, takes a value)
_FLAGS = {
    "-n": ("namespace", True), "--namespace": ("namespace", True),
    "-A": ("all_namespaces", False), "--all-namespaces": ("all_namespaces", False),
    "-l": ("selector", True), "--selector": ("selector", True),
    "--field-selector": ("field_selector", True),
    "-o": ("output", True), "--output": ("output", True),
    "-c": ("container", True), "--container": ("container", True),
    "--tail": ("tail", True), "--since": ("since", True),
    "-f": ("follow", False), "--follow": ("follow", False),
    "-w": ("watch", False), "--watch": ("watch", False),
    "--replicas": ("replicas", True), "--for": ("for_object", True),
}


# Object names, namespaces and kinds go into URL paths: RFC 1123 names (plus
# ':' for RBAC names such as system:node), never '/' or '..'.
_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._:-]{0,251}[A-Za-z0-9])?\Z")


def check_name(value: str, what: str) -> str:
    if not _NAME.match(value) or ".." in value:
        raise IntegrationError("bad_command", f"{value[:64]!r} is not a valid {what}")
    return value


def unresolved(word: str) -> Kind:
    """A kind this module does not list (a CRD, a newer API): the cell looks
    it up in the cluster's discovery API before using it (``group`` empty)."""
    check_name(word, "kind")
    return Kind(word.lower(), "", True, word)


def kind_of(word: str) -> Kind:
    """``pods``, ``po``, ``Pod``, ``deployments.apps``: the Kind, or unknown_kind."""
    found = _BY_NAME.get(word.lower()) or _BY_NAME.get(word.lower().split(".", 1)[0])
    if found is None:
        known = ", ".join(k.plural for k in KINDS)
        raise IntegrationError("unknown_kind", f"unknown kind {word[:64]!r}; this cell knows: {known}")
    return found


@attrs.frozen
class Command:
    verb: str
    kind: Kind | None = None
    names: tuple[str, ...] = ()
    sub: str | None = None  # rollout's action
    namespace: str | None = None
    all_namespaces: bool = False
    selector: str | None = None
    field_selector: str | None = None
    output: str | None = None
    container: str | None = None
    tail: int | None = None
    since: float | None = None
    follow: bool = False
    watch: bool = False
    replicas: int | None = None
    for_object: str | None = None

    @property
    def writes(self) -> bool:
        return self.verb in WRITES


def _bad(message: str) -> IntegrationError:
    return IntegrationError("bad_command", message)


def parse(source: str) -> Command:
    try:
        words = shlex.split(source, comments=True)
    except ValueError as e:
        raise _bad(f"cannot split the command into words ({e})") from None
    if words and words[0] == "kubectl":
        words = words[1:]
    if not words:
        raise _bad("the cell's source is a kubectl-like command, e.g. get pods -n default")
    verb, rest = words[0], words[1:]
    if verb not in READS + WRITES:
        raise _bad(f"unknown command {verb[:40]!r}; reads: {', '.join(READS)}; writes (with options.allow_writes): "
                   f"{', '.join(WRITES)}")
    flags: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(rest):
        word = rest[i]
        name, eq, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if name.startswith("-") and name not in _FLAGS:
            raise _bad(f"unknown flag {name[:40]!r} for {verb}")
        if name in _FLAGS:
            attr, takes = _FLAGS[name]
            if takes:
                if not eq:
                    i += 1
                    if i >= len(rest):
                        raise _bad(f"{name} needs a value")
                    value = rest[i]
                flags[attr] = value
            else:
                flags[attr] = True
        else:
            positional.append(word)
        i += 1
    return _build(verb, positional, flags)


def _build(verb: str, positional: list[str], flags: dict[str, Any]) -> Command:
    if flags.get("namespace") and flags.get("all_namespaces"):
        raise _bad("give -n NAMESPACE or -A, not both")
    output = flags.get("output")
    if output is not None and output not in OUTPUTS:
        raise _bad(f"-o {output[:40]!r} is not supported (use {', '.join(OUTPUTS)})")
    converted: dict[str, Any] = {}
    for attr, label in (("tail", "--tail"), ("replicas", "--replicas")):
        if attr in flags:
            try:
                converted[attr] = int(flags[attr])
            except ValueError:
                raise _bad(f"{label} must be a whole number") from None
            if converted[attr] < 0:
                raise _bad(f"{label} must not be negative")
    if "since" in flags:
        try:
            converted["since"] = parse_duration(flags["since"], "since")
        except ValueError:
            raise _bad("--since must be a duration such as 30s, 5m or 1h") from None
    fields = {**flags, **converted}
    for attr, what in (("namespace", "namespace"), ("container", "container name")):
        if fields.get(attr) is not None:
            check_name(fields[attr], what)
    if verb in ("get", "describe"):
        if not positional:
            raise _bad(f"{verb} needs a kind, e.g. {verb} pods")
        kind, names = _kind_and_names(positional)
        if names and fields.get("all_namespaces") and kind.namespaced:
            raise _bad("a resource cannot be retrieved by name across all namespaces: give -n NAMESPACE")
        return Command(verb, kind, names, **fields)
    if verb == "logs":
        if len(positional) != 1:
            raise _bad("logs needs one pod: logs POD [-c CONTAINER] [--tail N] [--since 5m] [-f]")
        name = positional[0].split("/", 1)[1] if positional[0].startswith(("pod/", "pods/")) else positional[0]
        return Command(verb, kind_of("pods"), (check_name(name, "pod name"),), **fields)
    if verb == "events":
        if positional:
            raise _bad("events takes no names: use --for KIND/NAME")
        return Command(verb, kind_of("events"), (), **fields)
    if verb == "top":
        if not positional or positional[0] not in ("pod", "pods", "po", "node", "nodes", "no"):
            raise _bad("top needs pods or nodes: top pods [-n NS] or top nodes")
        return Command(verb, kind_of(positional[0]), tuple(check_name(n, "name") for n in positional[1:]), **fields)
    if verb == "rollout":
        if not positional or positional[0] != "restart":
            raise _bad("rollout supports restart: rollout restart deployment/NAME")
        kind, names = _kind_and_names(positional[1:])
        if kind.plural not in ("deployments", "statefulsets", "daemonsets") or not names:
            raise _bad("rollout restart needs a deployment, statefulset or daemonset and its name")
        return Command(verb, kind, names, sub="restart", **fields)
    if verb == "scale":
        kind, names = _kind_and_names(positional)
        if kind.plural not in ("deployments", "statefulsets", "replicasets") or len(names) != 1:
            raise _bad("scale needs one deployment, statefulset or replicaset: scale deployment/NAME --replicas=N")
        if fields.get("replicas") is None:
            raise _bad("scale needs --replicas=N")
        return Command(verb, kind, names, **fields)
    if verb == "delete":
        kind, names = _kind_and_names(positional)
        if kind.plural != "pods" or not names:
            raise _bad("delete supports pods only: delete pod NAME")
        return Command(verb, kind, names, **fields)
    # cordon / uncordon
    if len(positional) != 1:
        raise _bad(f"{verb} needs one node: {verb} NODE")
    name = positional[0].split("/", 1)[1] if "/" in positional[0] else positional[0]
    return Command(verb, kind_of("nodes"), (check_name(name, "node name"),), **fields)


def _kind_and_names(words: list[str]) -> tuple[Kind, tuple[str, ...]]:
    kind, names = _split_kind_and_names(words)
    for name in names:
        check_name(name, "name")
    return kind, names


def _split_kind_and_names(words: list[str]) -> tuple[Kind, tuple[str, ...]]:
    if not words:
        raise _bad("a kind is needed, e.g. pods or deployment/web")
    first = words[0]
    if "/" in first:
        kind_word, _, name = first.partition("/")
        if not name:
            raise _bad(f"{first!r}: the name after '/' is missing")
        kind = _listed_or_unresolved(kind_word)
        names = [name]
        for word in words[1:]:
            other, slash, more = word.partition("/")
            if slash and _listed_or_unresolved(other) != kind:
                raise _bad(f"one kind per command: {first!r} and {word!r} are of two kinds")
            names.append(more if slash else word)
        return kind, tuple(names)
    return _listed_or_unresolved(first), tuple(words[1:])


def _listed_or_unresolved(word: str) -> Kind:
    try:
        return kind_of(word)
    except IntegrationError:
        return unresolved(word)
