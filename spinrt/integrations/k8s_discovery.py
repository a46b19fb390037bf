"""Kinds a kubernetes cell does not list, found in the cluster's discovery documents."""

from __future__ import annotations

from .base import IntegrationError
from .http import HttpApi
from .k8s_command import KINDS, Kind


async def discover(api: HttpApi, word: str, cache: dict[tuple[str, str], Kind]) -> Kind:
    """A kind the cell does not list (a CRD such as certificates.cert-manager.io),
    found as kubectl finds it: the discovery documents /api/v1, /apis and
    /apis/GROUP/VERSION (https://kubernetes.io/docs/concepts/overview/kubernetes-api/,
    "Discovery API", unaggregated). Remembered per API server."""
    key = (api.base_url, word.lower())
    if key in cache:
        return cache[key]
    name, _, group = word.lower().partition(".")
    versions = [] if group else ["/api/v1"]
    listing = await api.get_json("/apis")
    for entry in listing.get("groups") or []:
        preferred = (entry.get("preferredVersion") or {}).get("groupVersion")
        if preferred and (not group or entry.get("name") == group):
            versions.append(f"/apis/{preferred}")
    for path in versions:
        reply = await api.call("GET", path)
        if not 200 <= reply.status < 300:
            continue  # an aggregated API that is down (metrics-server) hides nothing else
        for resource in reply.json().get("resources") or []:
            names = {resource.get("name"), resource.get("singularName"), str(resource.get("kind", "")).lower(),
                     *(resource.get("shortNames") or [])}
            if "/" not in resource.get("name", "/") and name in names:
                found = Kind(resource["name"], path, bool(resource.get("namespaced")), resource.get("kind", word))
                cache[key] = found
                return found
    known = ", ".join(k.plural for k in KINDS)
    raise IntegrationError("unknown_kind", f"unknown kind {word[:64]!r}: the cluster serves no resource of that "
                                           f"name (looked in {len(versions)} API group versions); kinds known "
                                           f"without asking: {known}")
