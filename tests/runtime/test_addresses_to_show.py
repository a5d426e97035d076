"""The addresses the host command and the window both show for a bind address."""

from __future__ import annotations

import pytest

from poolnet_desktop.runtime.net import discovery


@pytest.mark.parametrize("bind", ["0.0.0.0", "", "::"])
def test_a_wildcard_bind_shows_the_lan_addresses(bind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discovery, "lan_ipv4_addresses", lambda: ["192.168.1.20", "10.0.0.4"])
    assert discovery.addresses_to_show(bind) == ["192.168.1.20", "10.0.0.4"]


def test_a_wildcard_bind_without_a_lan_shows_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discovery, "lan_ipv4_addresses", list)
    assert discovery.addresses_to_show("::") == ["127.0.0.1"]


def test_a_specific_bind_is_shown_as_it_is() -> None:
    assert discovery.addresses_to_show("192.168.1.20") == ["192.168.1.20"]
