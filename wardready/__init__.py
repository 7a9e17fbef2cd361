"""wardready: the shared core of the agent and the server (inventory, report schema, metrics)."""

__version__ = "0.1.0"
