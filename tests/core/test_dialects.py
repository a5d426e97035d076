"""Which messages each dialect may send, and the bounds on seed devices, with plain values."""

from __future__ import annotations

import pytest

from poolnet_desktop.core.dialects import SeedAdmission, is_metered, may_send, message_budget, seed_id_refusal

POOLNET_REQUESTS = ["list_tasks", "watch_task", "fetch_results", "cancel_task", "retry_task", "submit_task",
                    "revoke_device", "approve_device", "list_access", "forget_device", "set_accept_tasks"]


@pytest.mark.parametrize("message_type", ["register", "heartbeat", "resource_update", "resource_request"])
def test_a_seed_session_may_send_the_seeds_messages(message_type: str) -> None:
    assert may_send("seed", message_type, seed_may_submit=False)


@pytest.mark.parametrize("message_type", [*POOLNET_REQUESTS, "hello", "auth", "shards_report", "shard_output"])
def test_a_seed_session_may_send_nothing_of_poolnets(message_type: str) -> None:
    assert not may_send("seed", message_type, seed_may_submit=True)


def test_a_seed_task_submit_only_where_the_host_allows_it() -> None:
    assert not may_send("seed", "task_submit", seed_may_submit=False)
    assert may_send("seed", "task_submit", seed_may_submit=True)


@pytest.mark.parametrize("message_type", ["register", "task_submit", "resource_request"])
def test_a_poolnet_session_may_not_send_seed_only_messages(message_type: str) -> None:
    assert not may_send("poolnet", message_type, seed_may_submit=True)


@pytest.mark.parametrize("message_type", [*POOLNET_REQUESTS, "heartbeat", "resource_update"])
def test_a_poolnet_session_sends_its_own_messages(message_type: str) -> None:
    assert may_send("poolnet", message_type, seed_may_submit=False)


def test_before_introducing_itself_a_session_may_only_register_or_say_hello() -> None:
    assert may_send(None, "register", False) and may_send(None, "hello", False)
    assert not any(may_send(None, t, True) for t in ["heartbeat", "list_tasks", "task_submit"])


def test_seed_ids_never_enter_poolnets_namespace() -> None:
    assert seed_id_refusal("alice") is None
    assert seed_id_refusal("pn-abcdefghijklmnopqrstuvwxyz") is not None
    assert seed_id_refusal("  ") is not None


def test_seed_devices_are_capped() -> None:
    admission = SeedAdmission(max_devices=3)
    assert admission.capacity_refusal(2) is None
    assert "at most 3" in (admission.capacity_refusal(3) or "")


def test_one_address_registers_a_burst_then_at_the_rate() -> None:
    admission = SeedAdmission(per_address_rate=0.5, per_address_burst=3)
    assert [admission.rate_refusal("10.0.0.9", 100.0) for _ in range(3)] == [None, None, None]
    assert admission.rate_refusal("10.0.0.9", 100.0) is not None
    assert admission.rate_refusal("10.0.0.8", 100.0) is None  # another address has its own
    assert admission.rate_refusal("10.0.0.9", 102.0) is None  # two seconds later: one more


def test_addresses_tracked_are_bounded_and_the_least_recent_go_first() -> None:
    admission = SeedAdmission(per_address_burst=1, max_addresses=2)
    admission.rate_refusal("a", 0.0)
    admission.rate_refusal("b", 0.0)
    admission.rate_refusal("a", 0.0)  # refused, and now the most recent
    admission.rate_refusal("c", 0.0)  # "b" is dropped to make room
    assert admission.rate_refusal("a", 0.0) is not None
    assert admission.rate_refusal("b", 0.0) is None  # forgotten: starts afresh


def test_offline_seed_devices_are_pruned_after_a_while() -> None:
    admission = SeedAdmission(keep_offline=600.0)
    assert admission.to_prune([("old", 0.0), ("recent", 500.0)], now=700.0) == ["old"]


def test_seed_sessions_get_a_strict_budget_poolnet_ones_a_generous_one() -> None:
    seed_rate, seed_burst = message_budget("seed")
    poolnet_rate, poolnet_burst = message_budget("poolnet")
    assert seed_rate * 10 <= poolnet_rate and seed_burst * 10 <= poolnet_burst
    assert message_budget(None) == message_budget("seed")


def test_what_a_member_streams_is_bounded_elsewhere_and_not_metered() -> None:
    assert not is_metered("poolnet", None)  # a file chunk
    assert not is_metered("poolnet", "shard_output")
    assert is_metered("poolnet", "list_tasks") and is_metered("poolnet", "")
    assert is_metered("seed", None) and is_metered("seed", "shard_output") and is_metered(None, "hello")
