"""The errors autumn-django raises.

Failures to get something done at Autumn form one tree rooted at
:class:`AutumnError`; ``retryable`` tells the sync engine whether trying
again later can help: rate limits, server faults and transport failures can;
a refused request cannot. Messages carry Autumn's own code and message,
never the secret key.

A broken configuration is not such a failure: :class:`AutumnImproperlyConfigured`
is only an ``ImproperlyConfigured``, so an ``except AutumnError`` written for
a failed call never hides it (as django-anymail does on purpose).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured


def message_text(value: object, limit: int = 2000) -> str:
    """``str(value)`` made safe to store and show: cut to ``limit``
    characters, NUL characters and lone surrogates escaped (PostgreSQL
    refuses both, and an error message is often what we store)."""
    text = str(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


class AutumnError(Exception):
    """Anything that went wrong talking to Autumn."""

    retryable = False


class AutumnImproperlyConfigured(ImproperlyConfigured):
    """``settings.AUTUMN`` is missing or wrong; the message names the setting.

    Deliberately outside the :class:`AutumnError` tree: code that catches
    ``AutumnError`` for a failed call must not turn a broken configuration
    into a flash message or a failed row.
    """


class MappingError(AutumnError):
    """The site's mapping (``CUSTOMER_ID``, ``CUSTOMER_DATA``) gave something
    Autumn cannot take; the message names the setting to fix. Nothing was
    sent; the row is marked failed with this message, and retrying cannot
    help until the mapping or the user changes."""


class AutumnConnectionError(AutumnError):
    """No answer from Autumn: DNS, refused or dropped connection, timeout."""

    retryable = True


class AutumnRequestError(AutumnError):
    """The request could not be made at all (an error raised on our side
    while building or sending it). The message names the operation and the
    exception type only: the original text may hold the secret key."""


class AutumnAPIError(AutumnError):
    """Autumn answered with an error status.

    ``status`` is the HTTP status (``None`` when the client refused the input
    before sending it), ``code`` and ``message`` are Autumn's, ``env`` the
    environment Autumn reported, ``body`` the decoded JSON body (or the text of
    a non-JSON one), and ``operation`` the route, e.g. ``customers.update``.
    """

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        *,
        env: str | None = None,
        body: Any = None,
        operation: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.env = env
        self.body = body
        self.operation = operation
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.operation}: " if self.operation else ""
        if self.status is None:
            return f"{where}refused before sending ({self.code}): {self.message}"
        return f"{where}HTTP {self.status} {self.code}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r}, operation={self.operation!r})"
        )

    def __reduce__(self) -> Any:
        # Keep the keyword-only fields when pickled (task backends do that).
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[AutumnAPIError], state: dict[str, Any]) -> AutumnAPIError:
    error = cls.__new__(cls)
    error.__dict__.update(state)
    Exception.__init__(error, str(error))
    return error


class InvalidRequest(AutumnAPIError):
    """400: the request was refused as invalid (``invalid_inputs`` and kin)."""


class AuthenticationError(AutumnAPIError):
    """401: the secret key is missing, malformed, unknown or revoked."""


class Forbidden(AutumnAPIError):
    """403: the key lacks a scope, e.g. ``customers:write``."""


class NotFound(AutumnAPIError):
    """404: no such customer (``customer_not_found``) or plan, or route."""


class Conflict(AutumnAPIError):
    """409: the new customer id is taken, or an idempotency key was reused."""


class RateLimited(AutumnAPIError):
    """429 after retries ran out; ``retry_after`` is in seconds, if Autumn said."""

    retryable = True

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(*args, **kwargs)


class NoCallSlot(RateLimited):
    """Pacing found no slot for the call in the wait allowed (or would have
    had to sleep inside a database transaction); nothing was sent. As
    retryable as Autumn's own 429."""


class ServerError(AutumnAPIError):
    """5xx: Autumn (or a proxy in front of it) failed; worth retrying later."""

    retryable = True


class ServiceUnavailable(ServerError):
    """503: a transient database or cache failure at Autumn."""

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(*args, **kwargs)


def error_class_for_status(status: int) -> type[AutumnAPIError]:
    if status == 400:
        return InvalidRequest
    if status == 401:
        return AuthenticationError
    if status == 403:
        return Forbidden
    if status == 404:
        return NotFound
    if status == 409:
        return Conflict
    if status == 429:
        return RateLimited
    if status == 503:
        return ServiceUnavailable
    if status >= 500:
        return ServerError
    return AutumnAPIError


class InvalidResponse(AutumnAPIError):
    """Autumn answered, but not as its contract says (a body that is not
    JSON, a customer with another id, a field of the wrong type...). Nothing
    of it is written to the mirror; ``message`` says what was wrong. Worth
    retrying later: a proxy or a wrong ``BASE_URL`` is the usual cause."""

    retryable = True


class MirrorWriteError(AutumnError):
    """The mirror's database refused a row (a value its columns cannot hold).
    The row is marked failed with this message; the others carry on."""


class SyncFailed(AutumnError):
    """A user's save could not be synced and ``AUTUMN["RAISE_ERRORS"]`` is on.
    The mirror row holds the same error; nothing is lost."""
