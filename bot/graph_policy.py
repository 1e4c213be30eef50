"""What a Graph answer means, and whether another attempt is allowed — pure, no I/O.

* :func:`classify` turns a response into ``None`` (success) or a :class:`Failure`: the typed error
  (:mod:`bot.errors`) and whether trying again may help.
* :func:`transport_failure` does the same for a request that got no response.
* :class:`RetryBudget` is the bookkeeping of one call: attempts left, time already waited, the next wait.

The rules: 429 and 503 with ``Retry-After`` say "not processed", so anything may be retried after the
(capped) wait. Other 5xx and connection errors are retried — for reads only. A write is also retried when
the connection was never made; after a timeout, a dropped connection or any other 5xx its outcome is unknown
(:class:`~bot.errors.OutcomeUnknown`) and it is never re-sent blindly.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from bot.errors import GraphAuthError, GraphError, GraphThrottled, GraphUnavailable, OutcomeUnknown
from bot.logs import safe

BACKOFF_BASE = 0.25  # seconds: the first backoff's ceiling; it doubles per attempt
BACKOFF_CEILING = 8.0
_NEVER_CONNECTED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_RETRYABLE_READ_STATUS = (500, 502, 503, 504)


@dataclass(frozen=True)
class Failure:
    """A call that did not succeed: the error to raise, and whether another attempt may help."""

    error: GraphError | OutcomeUnknown
    retryable: bool = False
    retry_after: float | None = None  # what Graph asked for, uncapped


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (Graph sends seconds, never an HTTP date); ``None`` when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_details(response: httpx.Response) -> tuple[str, str]:
    """(code, message) of a Graph error body, Intune's JSON-in-a-string message unwrapped (graph-intune.md §11)."""
    code, message = "UnknownError", response.reason_phrase or ""
    try:
        body = response.json()
    except ValueError:
        return code, safe(response.text, 300)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code") or code)
        message = str(err.get("message") or "")
        try:
            inner = json.loads(message)
            if isinstance(inner, dict) and inner.get("Message"):
                message = str(inner["Message"])
        except ValueError:
            pass
    return code, safe(message, 500)


def classify(response: httpx.Response, *, idempotent: bool, client_request_id: str) -> Failure | None:
    """``None`` for a success (< 400); otherwise the typed error and whether it is worth another attempt.

    A 401 here is final: :class:`~bot.graph_auth.BearerAuth` has already spent the one refresh.
    """
    status = response.status_code
    if status < 400:
        return None
    code, message = error_details(response)
    request_id = response.headers.get("request-id")
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    ids = {"request_id": request_id, "client_request_id": client_request_id}
    if status == 401:
        return Failure(GraphAuthError(status, code, message, **ids))
    not_processed = status == 429 or (status == 503 and retry_after is not None)
    if not idempotent and status >= 500 and not not_processed:
        # Any 5xx but 503 + Retry-After may come after Intune applied the write: unknown until Intune says.
        return Failure(OutcomeUnknown(f"HTTP {status} {code}", client_request_id=client_request_id))
    error_type: type[GraphError] = GraphError
    if not_processed:
        error_type = GraphThrottled
    elif status >= 500:
        error_type = GraphUnavailable
    error = error_type(status, code, message, retry_after=retry_after, **ids)
    retryable = not_processed or (idempotent and status in _RETRYABLE_READ_STATUS)
    return Failure(error, retryable=retryable, retry_after=retry_after)


def transport_failure(exc: httpx.TransportError, *, idempotent: bool, client_request_id: str) -> Failure:
    """No response: never connected (safe to retry anything), or lost after sending (reads only)."""
    name = type(exc).__name__
    error: GraphError | OutcomeUnknown
    if isinstance(exc, _NEVER_CONNECTED):
        error = GraphUnavailable(0, "ConnectionFailed", name, client_request_id=client_request_id)
    elif not idempotent:
        error = OutcomeUnknown(name, client_request_id=client_request_id)
    else:
        error = GraphUnavailable(0, "TransportError", name, client_request_id=client_request_id)
    error.__cause__ = exc
    return Failure(error, retryable=not isinstance(error, OutcomeUnknown))


def backoff_ceiling(attempt: int) -> float:
    """The longest backoff after failed attempt ``attempt`` (1-based): 0.25 s, 0.5 s, 1 s, … at most 8 s."""
    return min(BACKOFF_CEILING, BACKOFF_BASE * (2 ** (attempt - 1)))


@dataclass
class RetryBudget:
    """The retry bookkeeping of one call: at most ``max_attempts`` tries and ``max_wait`` seconds of waiting.

    ``next_delay(retry_after)`` answers "may I try again, and after how long?": ``Retry-After`` capped at
    ``retry_after_cap`` when Graph sent one, exponential backoff with full jitter otherwise; ``None`` when
    another attempt would exceed either bound (then nothing is spent).
    """

    max_attempts: int
    max_wait: float
    retry_after_cap: float
    jitter: Callable[[float, float], float] = random.uniform
    attempt: int = 1  # the attempt that just failed
    waited: float = 0.0

    def next_delay(self, retry_after: float | None = None) -> float | None:
        if self.attempt >= self.max_attempts:
            return None
        if retry_after is not None:
            delay = min(retry_after, self.retry_after_cap)
        else:
            delay = self.jitter(0, backoff_ceiling(self.attempt))
        if self.waited + delay > self.max_wait:
            return None
        self.attempt += 1
        self.waited += delay
        return delay
