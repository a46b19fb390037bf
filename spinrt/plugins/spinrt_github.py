"""The github cell and connection type (spinrt/integrations/github.py), found like any add-on."""

from spinrt.integrations.github import github

__all__ = ["github"]
