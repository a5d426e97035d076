"""The seed's REST paths, served on the WebSocket port: JSON over plain HTTP GET."""

from __future__ import annotations

import http
import secrets
from pathlib import Path
from typing import Any

import msgspec
from websockets.datastructures import Headers
from websockets.http11 import Response

from poolnet_desktop import __version__
from poolnet_desktop.runtime.host.coordinator import Coordinator
from poolnet_desktop.runtime.security.identity import write_private_file

# The main port's REST paths answer only a request that carries this file's token: only the
# host's owner can read it (0600 in the host's data folder), so no other local user gets the
# pool's tasks or metrics. The seed's paths on the legacy port stay open, as the seed served them.
REST_TOKEN_FILE = "rest.token"


def load_or_create_rest_token(data_dir: Path) -> str:
    """The host's REST token, made (random, 256 bits) on first use."""
    path = data_dir / REST_TOKEN_FILE
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if len(token) < 32:
        token = secrets.token_urlsafe(32)
        write_private_file(path, token.encode())
    return token


def read_rest_token(data_dir: Path) -> str:
    """The token a client on the host's machine sends as ``Authorization: Bearer``."""
    return (data_dir / REST_TOKEN_FILE).read_text().strip()

_json = msgspec.json.Encoder()


def json_response(status: int, body: Any) -> Response:
    payload = _json.encode(body)
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, payload)


def error_response(status: int, message: str) -> Response:
    """The seed's error shape: ``{error, code}`` with the HTTP status as ``code``."""
    return json_response(status, {"error": message, "code": status})


class RestApi:
    """Answers ``/``, ``/api/devices``, ``/api/resources`` and ``/api/stats`` from live state."""

    def __init__(self, coordinator: Coordinator, clock_wall: Any) -> None:
        self._coordinator = coordinator
        self._wall = clock_wall
        self._routes = {
            "/": self._root,
            "/api/devices": self._devices,
            "/api/resources": self._resources,
            "/api/stats": self._stats,
        }

    def extend(self, path: str, route: Any) -> None:
        """Add a route (``/metrics``, task listings) owned by another service."""
        self._routes[path] = route

    def answer(self, path: str) -> Response | None:
        """The response for ``path``, or None for a path this API does not serve."""
        route = self._routes.get(path.split("?", 1)[0].rstrip("/") or "/")
        return route() if route is not None else None

    def _root(self) -> Response:
        registry = self._coordinator.registry
        return json_response(
            200,
            {
                "service": "PoolNet",
                "version": __version__,
                "devices": registry.online_count(),
                "status": "running",
                "pool": self._coordinator.config.pool_name,
                "poolId": self._coordinator.config.pool_id,
            },
        )

    def _devices(self) -> Response:
        return json_response(200, {"devices": [d.view() for d in self._coordinator.registry.all()]})

    def _resources(self) -> Response:
        return json_response(200, {"pool": self._coordinator.registry.totals()})

    def _stats(self) -> Response:
        coordinator = self._coordinator
        return json_response(
            200,
            {
                "devices": coordinator.registry.online_count(),
                "resources": coordinator.registry.totals(),
                "uptime": round(self._wall() - coordinator.started_at, 3),
                "tasks": coordinator.task_counts(),
            },
        )
