"""core.permissions: who may do what, decided on plain values."""

from __future__ import annotations

import pytest

from poolnet_desktop.core.permissions import (
    ALL_PERMISSIONS,
    Action,
    Caller,
    format_permissions,
    granted_on_pairing,
    may,
    may_join,
    parse_permissions,
)

OWNER = Caller("pn-owner", frozenset(), owner=True)
ALICE = Caller("pn-alice", ALL_PERMISSIONS)
BOB = Caller("pn-bob", ALL_PERMISSIONS)
WATCHER = Caller("pn-watch", frozenset({"observer"}))
SEED = Caller(None)  # a seed client: never authenticated


@pytest.mark.parametrize("action", [Action.CANCEL, Action.RETRY, Action.WATCH, Action.FETCH, Action.SEE_DETAIL,
                                    Action.FORGET_TASK])
def test_a_tasks_submitter_and_the_owner_control_it_and_nobody_else(action: Action) -> None:
    assert may(ALICE, action, submitter="pn-alice") is None
    assert may(OWNER, action, submitter="pn-alice") is None
    assert "submitter" in may(BOB, action, submitter="pn-alice")
    assert may(WATCHER, action, submitter="pn-alice") is not None
    assert may(BOB, action, submitter=None) is not None


def test_a_seed_client_owns_nothing_even_under_a_claimed_id() -> None:
    claimed = Caller(None, ALL_PERMISSIONS)
    assert may(claimed, Action.CANCEL, submitter="seed:pn-alice") is not None
    assert may(SEED, Action.FETCH, submitter="") is not None
    assert may(SEED, Action.SUBMIT) is not None


@pytest.mark.parametrize("action", [Action.ADMINISTER, Action.FORGET])
def test_administration_is_the_owners_alone(action: Action) -> None:
    assert may(OWNER, action) is None
    assert "owner" in may(ALICE, action)
    assert may(SEED, action) is not None


def test_submitting_needs_the_submit_permission() -> None:
    assert may(ALICE, Action.SUBMIT) is None
    assert "may not submit" in may(Caller("pn-x", frozenset({"member", "observer"})), Action.SUBMIT)
    assert may(OWNER, Action.SUBMIT) is None  # the owner holds everything whatever is stored


def test_roles_asked_for_must_be_within_the_permissions() -> None:
    assert may_join(WATCHER, "observer") is None
    assert "member" in may_join(WATCHER, "member")
    assert may_join(Caller("pn-x", frozenset({"member"})), "observer") is not None
    assert may_join(OWNER, "member") is None and may_join(OWNER, "observer") is None


def test_the_code_grants_everything_and_an_approval_no_submitting() -> None:
    assert granted_on_pairing("code") == {"member", "observer", "submit"}
    assert granted_on_pairing("approval") == {"member", "observer"}


def test_permissions_round_trip_in_a_fixed_order_and_unknown_ones_are_named() -> None:
    assert format_permissions({"submit", "member"}) == "member,submit"
    assert parse_permissions("member,submit") == {"member", "submit"}
    assert parse_permissions("") == frozenset()
    with pytest.raises(ValueError, match="'admin'"):
        parse_permissions("member,admin")
