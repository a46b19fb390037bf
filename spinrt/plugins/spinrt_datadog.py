"""The datadog cell and connection type (spinrt/integrations/datadog.py), found like any add-on."""

from spinrt.integrations.datadog import datadog

__all__ = ["datadog"]
