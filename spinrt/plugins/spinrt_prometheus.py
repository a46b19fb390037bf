"""The prometheus cell and connection type (spinrt/integrations/prometheus.py), found like any add-on."""

from spinrt.integrations.prometheus import prometheus

__all__ = ["prometheus"]
