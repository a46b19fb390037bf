"""spinrt: a self-hosted execution runtime for SPIN operational notebooks."""

__version__ = "0.1.0"
