"""The process's open-file limit, raised to what the system allows.

A host holds one socket per member, observer and CLI; many systems start processes with a soft
limit of 1,024 descriptors, which a large pool (or a stranger holding sockets) would exhaust
long before the hard limit, and then the owner's own CLI could not connect.
"""

from __future__ import annotations

import logging

try:
    import resource
except ImportError:  # Windows: no such limit to raise
    resource = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


def raise_fd_limit() -> int | None:
    """Raise the soft limit on open files to the hard one; the limit now, None where the
    system has no such limit."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
        return soft
    return hard
