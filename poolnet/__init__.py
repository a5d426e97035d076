"""PoolNet for Python callers: ``concurrent.futures`` whose workers are the pool's members.

    import poolnet

    with poolnet.Pool() as pool:          # the pool ``poolnet submit`` would use
        squares = list(pool.map(square, range(100)))
        future = pool.submit(fit, data, rate=0.1)

Each call runs as a shard of a task in a member's sandbox (the window shows it); see
``poolnet_desktop.runtime.client.pool_api`` for how.
"""

from poolnet_desktop.runtime.client.pool_api import Pool, PoolError, RemoteError, RemoteTraceback

__all__ = ["Pool", "PoolError", "RemoteError", "RemoteTraceback"]
