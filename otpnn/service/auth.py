"""Bearer-token authentication: with a token file, every endpoint but /healthz and the
dashboard's static page needs it."""

from __future__ import annotations

import hmac
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from otpnn.service.limits import json_error

# The dashboard's page and files hold no data (it comes through the API, with the token).
OPEN_PATHS = frozenset({"/healthz", "/"})
OPEN_PREFIXES = ("/ui/",)


def read_token(path: str | Path) -> str:
    """The token is the file's content without surrounding whitespace; it must not be empty."""
    token = Path(path).read_text().strip()
    if len(token) < 16:
        raise ValueError(f"{path}: the token must be at least 16 characters")
    return token


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class BearerAuth:
    """ASGI middleware: ``Authorization: Bearer <token>`` or 401 (constant-time comparison)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(given, self.expected):
            await json_error(
                send, 401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
            )
            return
        await self.app(scope, receive, send)
