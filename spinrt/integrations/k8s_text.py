"""How kubernetes cells write things as kubectl does: ages, quantities, describe. Pure."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .k8s_command import Kind
from .tables import Table


def age(timestamp: Any, now: float) -> str:
    """kubectl's short age: 45s, 12m, 5h, 3d."""
    if not isinstance(timestamp, str) or not timestamp:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return "<unknown>"
    seconds = max(0, int(now - then))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def cpu_cores(value: str) -> float:
    """Cores from a quantity: 250m, 1, 1200000n."""
    units = {"n": 1e-9, "u": 1e-6, "m": 1e-3}
    return float(value[:-1]) * units[value[-1]] if value and value[-1] in units else float(value or 0)


def memory_bytes(value: str) -> float:
    """Bytes from a quantity: 128Mi, 1Gi, 12345Ki, 1000000."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, size in units.items():
        if value.endswith(suffix):
            return float(value[:-len(suffix)]) * size
    return float(value or 0)


def describe_text(kind: Kind, obj: dict[str, Any], events: list[dict[str, Any]], now: float) -> str:
    """A short ``kubectl describe``: identity, labels, status, containers, events."""
    meta = obj.get("metadata") or {}
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    lines = [f"Name:         {meta.get('name')}"]
    if meta.get("namespace"):
        lines.append(f"Namespace:    {meta.get('namespace')}")
    lines.append(f"Kind:         {obj.get('kind') or kind.kind}")
    labels = ",".join(f"{k}={v}" for k, v in (meta.get("labels") or {}).items()) or "<none>"
    lines.append(f"Labels:       {labels}")
    lines.append(f"Created:      {meta.get('creationTimestamp')} ({age(meta.get('creationTimestamp'), now)} ago)")
    if kind.plural == "pods":
        lines.append(f"Node:         {spec.get('nodeName') or '<none>'}")
        lines.append(f"Status:       {status.get('phase')}")
        if status.get("podIP"):
            lines.append(f"IP:           {status.get('podIP')}")
        lines.append("Containers:")
        states = {c.get("name"): c for c in status.get("containerStatuses") or []}
        for c in spec.get("containers") or []:
            state = states.get(c.get("name"), {})
            current = state.get("state") or {}
            what = next(iter(current), "unknown")
            reason = (current.get(what) or {}).get("reason")
            lines.append(f"  {c.get('name')}:")
            lines.append(f"    Image:     {c.get('image')}")
            lines.append(f"    State:     {what.capitalize()}{f' ({reason})' if reason else ''}")
            lines.append(f"    Ready:     {state.get('ready', False)}")
            lines.append(f"    Restarts:  {state.get('restartCount', 0)}")
    elif "replicas" in spec:
        lines.append(f"Replicas:     {spec.get('replicas')} desired | {status.get('updatedReplicas', 0)} updated | "
                     f"{status.get('readyReplicas', 0)} ready | {status.get('availableReplicas', 0)} available")
    conditions = status.get("conditions") or []
    if conditions:
        lines.append("Conditions:")
        lines.append("  TYPE" + " " * 20 + "STATUS   REASON")
        for c in conditions:
            lines.append(f"  {str(c.get('type')):<24}{str(c.get('status')):<9}{c.get('reason') or ''}".rstrip())
    if kind.plural != "events":
        if events:
            lines.append("Events:")
            table = Table(["TYPE", "REASON", "AGE", "MESSAGE"],
                          [[e.get("type"), e.get("reason"), age(e.get("lastTimestamp") or e.get("eventTime"), now),
                            e.get("message")] for e in events])
            lines += ["  " + line for line in table.text().splitlines()]
        else:
            lines.append("Events:       <none>")
    return "\n".join(lines)
