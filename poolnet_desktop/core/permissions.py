"""Who may do what in a pool: pure decisions over plain values (no I/O, no clock).

Each device the host trusts holds a set of permissions, kept in the trust store:

* ``member``   - joins as a member and runs shards;
* ``observer`` - watches the pool (devices, totals, the task list as summaries);
* ``submit``   - submits tasks, and then controls and reads its own tasks.

Pairing with the code grants all three: whoever has the code was invited by the owner. An
owner's approval without a code grants ``member`` and ``observer`` only: the owner clicked
"let this machine in" from a prompt that shows little more than a name, which is consent to
lend it work and let it watch, not consent to run its code on everyone else's machines. The
owner (the host's own identity) holds everything and may grant or take away any permission.

A task's details (command line, shard placement and reasons, logs, results) and its control
(cancel, retry, forget) belong to its submitter and the owner only; anybody else who may observe sees
it as a summary (name, state, counts). Changing who is in the pool is the owner's alone.
Sessions that did not authenticate (the seed's plain port) own nothing and administer nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Literal, get_args

Permission = Literal["member", "observer", "submit"]
PERMISSIONS: tuple[Permission, ...] = get_args(Permission)
ALL_PERMISSIONS: frozenset[str] = frozenset(PERMISSIONS)
GRANTED_BY_CODE: frozenset[str] = ALL_PERMISSIONS
GRANTED_BY_APPROVAL: frozenset[str] = frozenset({"member", "observer"})


class Action(Enum):
    """Everything a session may ask that some callers may not."""

    SUBMIT = "submit tasks"
    CANCEL = "cancel this task"
    RETRY = "retry this task"
    WATCH = "read this task's logs"
    FETCH = "fetch this task's results"
    SEE_DETAIL = "see this task's details"
    FORGET_TASK = "forget this task"
    ADMINISTER = "change who is in the pool or what devices may do"
    FORGET = "forget devices"


# Actions on one task: the task's submitter and the owner only.
TASK_ACTIONS = frozenset(
    {Action.CANCEL, Action.RETRY, Action.WATCH, Action.FETCH, Action.SEE_DETAIL, Action.FORGET_TASK}
)
OWNER_ACTIONS = frozenset({Action.ADMINISTER, Action.FORGET})


@dataclass(frozen=True)
class Caller:
    """One session, as the decisions see it. ``device_id`` is the authenticated peer's id
    (None for a session that never authenticated: the seed's port)."""

    device_id: str | None
    permissions: frozenset[str] = frozenset()
    owner: bool = False

    @property
    def authenticated(self) -> bool:
        return self.device_id is not None


def parse_permissions(text: str | Iterable[str]) -> frozenset[str]:
    """Permissions from the trust store's comma list (or any iterable); ``ValueError`` names
    an unknown one rather than dropping it silently."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    chosen = frozenset(n for n in names if n)
    unknown = chosen - ALL_PERMISSIONS
    if unknown:
        raise ValueError(f"unknown permission {sorted(unknown)[0]!r}; one of {', '.join(PERMISSIONS)}")
    return chosen


def format_permissions(permissions: Iterable[str]) -> str:
    """The stored and shown form: the known names in a fixed order, comma-separated."""
    chosen = set(permissions)
    return ",".join(p for p in PERMISSIONS if p in chosen)


def granted_on_pairing(method: str) -> frozenset[str]:
    """What a device newly let in receives: everything with the code, less with approval."""
    return GRANTED_BY_CODE if method == "code" else GRANTED_BY_APPROVAL


def effective(caller: Caller) -> frozenset[str]:
    """The owner holds every permission whatever the store says."""
    return ALL_PERMISSIONS if caller.owner else caller.permissions


def may_join(caller: Caller, role: str) -> str | None:
    """None if ``caller`` may open a session in ``role`` (``member`` or ``observer``), else
    the reason it may not, to show the device."""
    if role in effective(caller):
        return None
    return f"this device may not join as {role}: the pool's owner has not given it that permission"


def may(caller: Caller, action: Action, submitter: str | None = None) -> str | None:
    """None if ``caller`` may take ``action`` (on a task submitted by ``submitter``, for task
    actions), else the reason it may not."""
    if caller.owner:
        return None
    if action in OWNER_ACTIONS:
        return f"only the pool's owner may {action.value}"
    if not caller.authenticated:
        return f"an unauthenticated client may not {action.value}"
    if action is Action.SUBMIT:
        return None if "submit" in caller.permissions else "this device may not submit tasks: ask the pool's owner"
    if action in TASK_ACTIONS:
        if submitter is not None and submitter == caller.device_id:
            return None
        return f"only the task's submitter and the pool's owner may {action.value}"
    raise ValueError(f"no rule for {action}")  # a new Action must come with its rule
