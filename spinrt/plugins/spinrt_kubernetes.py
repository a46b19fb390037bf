"""The kubernetes cell and connection type (spinrt/integrations/kubernetes.py), found like any add-on."""

from spinrt.integrations.kubernetes import kubernetes

__all__ = ["kubernetes"]
