"""What the benchmark scripts share: loopback ports, descriptor limits, the host's /metrics."""

from __future__ import annotations

import socket
import ssl
import urllib.request
from pathlib import Path

from poolnet_desktop.runtime.fdlimit import raise_fd_limit
from poolnet_desktop.runtime.host.metrics import parse_samples
from poolnet_desktop.runtime.host.rest import read_rest_token

__all__ = ["free_port", "raise_fd_limit", "scrape"]


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int, data_dir: Path) -> dict[str, float]:
    """The host's ``/metrics`` as ``name{labels}`` -> value (its certificate is self-signed),
    asked with the owner's REST token from the host's data folder."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(
        f"https://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {read_rest_token(data_dir)}"}
    )
    with urllib.request.urlopen(request, context=context, timeout=5) as response:
        return parse_samples(response.read().decode())
