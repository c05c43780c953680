"""What crosses the wire: the emulator's answer, its log entry, and the
bodies Autumn (and the proxies in front of it) answer with.

Every other part of the emulator builds its answers from here, so an error
body has one shape wherever it is refused: Autumn's JSON, or the plain text
and HTML that a rate limiter or a proxy sends instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import contract

JSONDict = dict[str, Any]

PLAIN_TEXT_429 = "Too many requests, please try again later."
SERVICE_UNAVAILABLE = "Service is temporarily unavailable, please retry shortly."
BAD_GATEWAY_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)


@dataclass
class Response:
    """What the emulator answers; ``drop`` means close the connection instead."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the emulator saw it; the Authorization header is not kept."""

    at: float
    method: str
    path: str
    route: str | None
    status: int
    env: str | None
    api_version: str | None
    headers: Mapping[str, str]
    body: Any


class Refusal(Exception):
    """Stops handling with an error response (raised by the checks and routes)."""

    def __init__(self, response: Response) -> None:
        self.response = response


def parse_body(body: bytes) -> JSONDict:
    """Autumn reads an unparsable or empty body as ``{}`` (then fails
    validation); so is one nested too deep for the parser, which a server
    must answer, not die on."""
    try:
        value = json.loads(body) if body else {}
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        status,
        json.dumps(payload, separators=(",", ":")).encode(),
        {"Content-Type": "application/json", **(headers or {})},
    )


def error_response(status: int, code: str, message: str, env: str) -> Response:
    """Autumn's error body; a 503 also says when to retry."""
    headers = {"Retry-After": "1"} if status == 503 else {}
    return json_response(status, {"message": message, "code": code, "env": env}, headers)


def too_many_requests(retry_after: int, headers: Mapping[str, str] | None = None) -> Response:
    """The rate limiter's 429: plain text, not JSON."""
    return Response(
        429,
        PLAIN_TEXT_429.encode(),
        {"Content-Type": "text/plain; charset=utf-8", "Retry-After": str(retry_after), **(headers or {})},
    )


def failure_response(
    status: int,
    code: str | None = None,
    message: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An injected failure that looks like the real one for that status: the
    plain-text 429 of the limiter, the HTML page of a proxy's 502, Autumn's
    JSON for the rest."""
    extra = dict(headers or {})
    if code is None and message is None:
        if status == 429:
            return too_many_requests(1, extra)
        if status == 502:
            return Response(502, BAD_GATEWAY_PAGE, {"Content-Type": "text/html", **extra})
        message = SERVICE_UNAVAILABLE if status == 503 else "Internal server error"
    response = error_response(
        status, code or contract.default_error_code(status), message or "Injected failure", "sandbox"
    )
    response.headers.update(extra)
    return response
