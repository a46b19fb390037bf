"""The grafana cell and connection type (spinrt/integrations/grafana.py), found like any add-on."""

from spinrt.integrations.grafana import grafana

__all__ = ["grafana"]
