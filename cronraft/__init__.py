"""Cronraft: a distributed, fault-tolerant cron.

Sub-packages map to the repository's top-level folders: `cronraft.daemon`, `cronraft.raft`,
`cronraft.proto`, `cronraft.timerwheel`, `cronraft.client`. The SDK is `cronraft.client`.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
