"""A pool's address: the forms a person types, their one spelling, and what is refused."""

from __future__ import annotations

import pytest

from poolnet_desktop.core.pool_url import PoolAddressError, normalise_pool_url


@pytest.mark.parametrize(("given", "spelled"), [
    ("192.168.1.10:3000", "wss://192.168.1.10:3000/ws"),
    ("render-box", "wss://render-box:3000/ws"),  # a bare host: a pool's default port
    ("[::1]:4000", "wss://[::1]:4000/ws"),
    ("https://box:3000", "wss://box:3000/ws"),
    ("WSS://box:3000/ws", "wss://box:3000/ws"),
    ("wss://box/ws", "wss://box/ws"),  # a full URL keeps its own (HTTPS) port: a proxy may serve it
])
def test_the_forms_a_person_types_are_spelled_one_way(given: str, spelled: str) -> None:
    assert normalise_pool_url(given) == spelled
    assert normalise_pool_url(spelled) == spelled  # the member reads it again: the same answer


@pytest.mark.parametrize(("given", "why"), [
    ("ws://box:3000/ws", "pool links use TLS"),
    ("http://box:3000", "pool links use TLS"),
    ("ftp://box:3000", "pool links use TLS"),
    ("box:99999", "Port out of range"),
    ("box:http", "Port could not be cast"),
    ("wss://[::1:3000/ws", "Invalid IPv6 URL"),
    ("wss://:3000/ws", "give HOST:PORT"),
    ("box:0", "give HOST:PORT"),
    ("box:", "give HOST:PORT"),  # was 'wss://box::3000/ws', a traceback at the next reading
    ("wss:/box:3000", "give HOST:PORT"),
    ("box:3000?x=1", "give HOST:PORT"),
    ("wss:// box:3000/ws", "give HOST:PORT"),
    ("a..b:3000", "label empty or too long"),
    (f"{'x' * 64}.lan:3000", "label empty or too long"),
])
def test_an_address_no_pool_link_could_use_is_refused_before_connecting(given: str, why: str) -> None:
    with pytest.raises(PoolAddressError) as refused:
        normalise_pool_url(given)
    assert str(refused.value).startswith(f"{given!r} is not a pool address: ")
    assert why in str(refused.value)
