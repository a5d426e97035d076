"""Which messages each dialect may send, and the limits on the seed's unauthenticated devices.

The seed protocol has no authentication: anyone who can reach the legacy port may register.
So a seed session may send the seed's own messages and nothing else, its device ids live in a
namespace PoolNet never uses, and how many seed devices the pool keeps is bounded. Pure: the
runtime passes the session's dialect, the message's ``type`` and the time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from poolnet_desktop.core.ratelimit import TokenBucket

Dialect = Literal["seed", "poolnet"]

# What the seed's clients send (its API reference), ``task_submit`` apart: it runs commands.
SEED_MESSAGES = frozenset({"register", "heartbeat", "resource_update", "resource_request"})
SEED_TASK_MESSAGE = "task_submit"
# Seed messages a PoolNet session has no use for: ``register`` would open a seed session on a
# PoolNet link, and the seed's ``task_submit`` would run a shell command past PoolNet's own
# submission checks.
SEED_ONLY_MESSAGES = frozenset({"register", "resource_request", SEED_TASK_MESSAGE})
INTRODUCTIONS = frozenset({"register", "hello"})

# PoolNet device ids are ``pn-`` and a digest of the device's key (``core.auth.device_id_for``):
# a seed client may not take one, so it can never displace or shadow a PoolNet device.
POOLNET_ID_PREFIX = "pn-"
SEED_ROLE = "seed"


def may_send(dialect: Dialect | None, message_type: str, seed_may_submit: bool) -> bool:
    """May a session of ``dialect`` (None: not introduced yet) send a ``message_type``?"""
    if dialect is None:
        return message_type in INTRODUCTIONS
    if dialect == "seed":
        return message_type in SEED_MESSAGES or (seed_may_submit and message_type == SEED_TASK_MESSAGE)
    return message_type not in SEED_ONLY_MESSAGES


def seed_id_refusal(device_id: str) -> str | None:
    """Why a seed client may not register as ``device_id``, or None when it may."""
    if not device_id.strip():
        return "deviceId must not be empty"
    if device_id.startswith(POOLNET_ID_PREFIX):
        return f"device ids starting with {POOLNET_ID_PREFIX!r} belong to PoolNet devices"
    return None


class SeedAdmission:
    """Bounds on seed registrations: at most ``max_devices`` seed devices kept (online or not),
    ``per_address_burst`` registrations at once from one address then one every
    ``1 / per_address_rate`` seconds, and offline seed devices forgotten after ``keep_offline``
    seconds. At most ``max_addresses`` addresses are tracked; the least recently seen go first.
    """

    def __init__(
        self,
        max_devices: int = 500,
        per_address_rate: float = 0.5,
        per_address_burst: float = 20.0,
        keep_offline: float = 600.0,
        max_addresses: int = 4096,
    ) -> None:
        self.max_devices = max_devices
        self.per_address_rate = per_address_rate
        self.per_address_burst = per_address_burst
        self.keep_offline = keep_offline
        self.max_addresses = max_addresses
        self._buckets: dict[str, TokenBucket] = {}

    def capacity_refusal(self, seed_devices: int) -> str | None:
        """Why one more seed device may not be kept when the pool keeps ``seed_devices``."""
        if seed_devices >= self.max_devices:
            return f"this pool keeps at most {self.max_devices} seed devices"
        return None

    def rate_refusal(self, address: str, now: float) -> str | None:
        """Why ``address`` may not register a new seed device now, or None (and it is counted)."""
        bucket = self._buckets.pop(address, None)
        if bucket is None:
            bucket = TokenBucket(self.per_address_rate, self.per_address_burst, now)
            while len(self._buckets) >= self.max_addresses:
                del self._buckets[next(iter(self._buckets))]
        self._buckets[address] = bucket  # most recently seen last
        if not bucket.take(now):
            return f"too many registrations from {address}: try again in {bucket.retry_after(now):.0f} s"
        return None

    def to_prune(self, offline_seed_devices: Iterable[tuple[str, float]], now: float) -> list[str]:
        """The seed devices to forget: those offline since longer than ``keep_offline``
        (given as (id, last seen) on the same clock as ``now``)."""
        return [device_id for device_id, last_seen in offline_seed_devices if now - last_seen > self.keep_offline]


# Messages a session may send per second, and in a burst. PoolNet sessions are authenticated
# and their traffic is a few reports a second plus bursts of shard output: the limit is far
# above that and only stops a flood. Seed sessions send a report every 2 s and a heartbeat
# every 5 s; a session not yet introduced sends one message.
MESSAGE_BUDGETS: dict[Dialect | None, tuple[float, float]] = {
    "poolnet": (500.0, 2000.0),
    "seed": (5.0, 30.0),
    None: (5.0, 30.0),
}


# What a PoolNet member streams while its shards run, bounded by limits of its own: file
# chunks (transfers and their quotas) and shard output (each shard's output cap, on the
# member). A shard that prints line by line makes thousands of these a second, for a moment.
UNMETERED_POOLNET_MESSAGES = frozenset({"shard_output"})


def message_budget(dialect: Dialect | None) -> tuple[float, float]:
    """(rate per second, burst) of messages for a session of ``dialect``."""
    return MESSAGE_BUDGETS[dialect]


def is_metered(dialect: Dialect | None, message_type: str | None) -> bool:
    """Does a message count against the session's budget? ``message_type`` None: a binary
    file chunk; an undecodable frame counts as any message does."""
    if dialect != "poolnet":
        return True
    return message_type is not None and message_type not in UNMETERED_POOLNET_MESSAGES
