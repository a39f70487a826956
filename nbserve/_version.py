"""The package version, apart from ``nbserve/__init__`` so the agent can name it without
importing the client API."""

__version__ = "0.1.0"
