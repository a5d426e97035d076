"""PoolNet: pool the computers on a LAN and run real work on them.

Layers: ``core`` is pure (no I/O, no asyncio, no Qt); ``runtime`` holds the asyncio services;
``gui`` is the Qt desktop app on top. Dependencies point downwards only.
"""

__version__ = "0.1.0"
