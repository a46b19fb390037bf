"""The splunk cell and connection type (spinrt/integrations/splunk.py), found like any add-on."""

from spinrt.integrations.splunk import splunk

__all__ = ["splunk"]
