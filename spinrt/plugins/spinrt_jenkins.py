"""The jenkins cell and connection type (spinrt/integrations/jenkins.py), found like any add-on."""

from spinrt.integrations.jenkins import jenkins

__all__ = ["jenkins"]
