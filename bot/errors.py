"""The bot's error tree. User-facing words live in :mod:`bot.messages`, never here.

::

    BotError
    ├── GraphError(status, code, message, request_id, client_request_id)
    │   ├── GraphThrottled          429 / 503 after the retry budget was spent ("try later")
    │   ├── GraphUnavailable        other 5xx / connection failures after retries
    │   └── GraphAuthError          token could not be obtained, or 401 after one refresh
    ├── OutcomeUnknown              a write was sent but its outcome could not be learnt (timeout, dropped connection)
    ├── InvalidInput                user text that cannot be used (too long, control characters, empty)
    └── RbacUnavailable             the permission check could not be completed (fail closed)
"""

from __future__ import annotations


class BotError(Exception):
    """Base of every error the bot raises on purpose."""


class GraphError(BotError):
    """Microsoft Graph answered with an error (or could not be reached)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        request_id: str | None = None,
        client_request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"Graph {status} {code}: {message} (request-id {request_id})")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.client_request_id = client_request_id
        self.retry_after = retry_after


class GraphThrottled(GraphError):
    """Graph said "not now" (429, or 503 with Retry-After) and the retry budget is spent; nothing was done."""


class GraphUnavailable(GraphError):
    """Graph failed with 5xx or could not be reached, after retries."""


class GraphAuthError(GraphError):
    """The app could not authenticate to Graph."""


class OutcomeUnknown(BotError):
    """A write request may or may not have been processed by Graph. Never re-send it blindly."""

    def __init__(self, detail: str, *, client_request_id: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.client_request_id = client_request_id


class InvalidInput(BotError):
    """User input that cannot be used; ``problem`` is a short machine key (``empty``, ``too_long``, ``control``)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class RbacUnavailable(BotError):
    """The role check could not be completed; the bot fails closed."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause
