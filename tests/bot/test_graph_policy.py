"""The pure half of the Graph client: classifying answers into typed errors, and the retry budget."""

from __future__ import annotations

import json

import httpx
import pytest

from bot.errors import GraphAuthError, GraphError, GraphThrottled, GraphUnavailable, OutcomeUnknown
from bot.graph_policy import (
    Failure,
    RetryBudget,
    backoff_ceiling,
    classify,
    error_details,
    parse_retry_after,
    transport_failure,
)

CRID = "crid-1"
READ = httpx.Request("GET", "https://graph.example/v1.0/x")


def answer(
    status: int, *, retry_after: str | None = None, code: str = "Oops", message: str = "went wrong"
) -> httpx.Response:
    headers = {"request-id": "rid-1"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    body = {"error": {"code": code, "message": message}}
    return httpx.Response(status, json=body, headers=headers, request=READ)


def failure(status: int, *, idempotent: bool = True, retry_after: str | None = None) -> Failure:
    result = classify(answer(status, retry_after=retry_after), idempotent=idempotent, client_request_id=CRID)
    assert result is not None
    return result


# -- classify ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 204, 302])
def test_success_is_no_failure(status: int) -> None:
    assert classify(httpx.Response(status, request=READ), idempotent=False, client_request_id=CRID) is None


@pytest.mark.parametrize(
    ("status", "retry_after", "idempotent", "error_type", "retryable"),
    [
        # reads
        (400, None, True, GraphError, False),
        (403, None, True, GraphError, False),
        (404, None, True, GraphError, False),
        (409, None, True, GraphError, False),
        (401, None, True, GraphAuthError, False),  # BearerAuth already spent the one refresh
        (429, None, True, GraphThrottled, True),
        (429, "3", True, GraphThrottled, True),
        (503, "3", True, GraphThrottled, True),
        (503, None, True, GraphUnavailable, True),
        (500, None, True, GraphUnavailable, True),
        (502, None, True, GraphUnavailable, True),
        (504, None, True, GraphUnavailable, True),
        (501, None, True, GraphUnavailable, False),
        # writes: retried only when Graph certainly did not process them
        (400, None, False, GraphError, False),
        (401, None, False, GraphAuthError, False),
        (429, None, False, GraphThrottled, True),
        (503, "3", False, GraphThrottled, True),
        (503, None, False, OutcomeUnknown, False),
        (500, None, False, OutcomeUnknown, False),
        (502, "3", False, OutcomeUnknown, False),
        (504, None, False, OutcomeUnknown, False),
    ],
)
def test_classify_table(
    status: int, retry_after: str | None, idempotent: bool, error_type: type[Exception], retryable: bool
) -> None:
    result = failure(status, idempotent=idempotent, retry_after=retry_after)
    assert type(result.error) is error_type
    assert result.retryable is retryable


def test_graph_errors_carry_status_code_message_and_ids() -> None:
    result = failure(429, retry_after="7")
    error = result.error
    assert isinstance(error, GraphThrottled)
    assert (error.status, error.code, error.message) == (429, "Oops", "went wrong")
    assert (error.request_id, error.client_request_id, error.retry_after) == ("rid-1", CRID, 7.0)
    assert result.retry_after == 7.0  # uncapped: the budget caps it


def test_unknown_write_outcome_names_status_and_code() -> None:
    error = failure(500, idempotent=False).error
    assert isinstance(error, OutcomeUnknown)
    assert (error.detail, error.client_request_id) == ("HTTP 500 Oops", CRID)


def test_intune_json_in_a_message_is_unwrapped() -> None:
    inner = json.dumps({"_version": 3, "Message": "Not supported on Windows - Operation ID: x"})
    code, message = error_details(answer(400, code="BadRequest", message=inner))
    assert (code, message) == ("BadRequest", "Not supported on Windows - Operation ID: x")


def test_non_json_error_body_keeps_its_text() -> None:
    response = httpx.Response(502, text="<html>Bad gateway</html>", request=READ)
    assert error_details(response) == ("UnknownError", "<html>Bad gateway</html>")


@pytest.mark.parametrize(
    ("value", "seconds"), [(None, None), ("", None), ("soon", None), ("2", 2.0), ("0.5", 0.5), ("-3", 0.0)]
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


# -- transport_failure ---------------------------------------------------------------------------------


@pytest.mark.parametrize("exc_type", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
@pytest.mark.parametrize("idempotent", [True, False])
def test_never_connected_is_retryable_for_writes_too(exc_type: type[httpx.TransportError], idempotent: bool) -> None:
    exc = exc_type("no route", request=READ)
    result = transport_failure(exc, idempotent=idempotent, client_request_id=CRID)
    assert isinstance(result.error, GraphUnavailable)
    assert (result.error.code, result.retryable, result.error.__cause__) == ("ConnectionFailed", True, exc)


@pytest.mark.parametrize("exc_type", [httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError])
def test_lost_after_sending(exc_type: type[httpx.TransportError]) -> None:
    exc = exc_type("gone", request=READ)
    read = transport_failure(exc, idempotent=True, client_request_id=CRID)
    assert isinstance(read.error, GraphUnavailable)
    assert (read.error.code, read.retryable) == ("TransportError", True)
    write = transport_failure(exc, idempotent=False, client_request_id=CRID)
    assert isinstance(write.error, OutcomeUnknown)
    assert (write.error.detail, write.error.client_request_id, write.retryable) == (exc_type.__name__, CRID, False)


# -- RetryBudget ---------------------------------------------------------------------------------------


def top_of_range(low: float, high: float) -> float:
    return high


def test_backoff_doubles_up_to_a_ceiling() -> None:
    assert [backoff_ceiling(n) for n in range(1, 8)] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_retry_after_is_honoured_and_capped() -> None:
    budget = RetryBudget(max_attempts=4, max_wait=100, retry_after_cap=5)
    assert budget.next_delay(2) == 2
    assert budget.next_delay(30) == 5
    assert (budget.attempt, budget.waited) == (3, 7)


def test_backoff_with_full_jitter_when_no_retry_after() -> None:
    asked: list[tuple[float, float]] = []

    def jitter(low: float, high: float) -> float:
        asked.append((low, high))
        return high / 2

    budget = RetryBudget(max_attempts=4, max_wait=100, retry_after_cap=5, jitter=jitter)
    assert [budget.next_delay(), budget.next_delay(), budget.next_delay()] == [0.125, 0.25, 0.5]
    assert asked == [(0, 0.25), (0, 0.5), (0, 1.0)]


def test_attempts_are_bounded() -> None:
    budget = RetryBudget(max_attempts=3, max_wait=100, retry_after_cap=5, jitter=top_of_range)
    assert budget.next_delay() is not None
    assert budget.next_delay() is not None
    assert budget.next_delay() is None
    assert budget.next_delay(0) is None
    assert budget.attempt == 3


def test_total_wait_is_bounded_and_a_refused_wait_spends_nothing() -> None:
    budget = RetryBudget(max_attempts=10, max_wait=2.5, retry_after_cap=1)
    assert [budget.next_delay(5), budget.next_delay(5)] == [1, 1]
    assert budget.next_delay(5) is None  # a third second would pass 2.5
    assert budget.next_delay(0.5) == 0.5  # a shorter wait still fits
    assert budget.waited == 2.5


def test_one_attempt_never_retries() -> None:
    assert RetryBudget(max_attempts=1, max_wait=100, retry_after_cap=5).next_delay(0) is None
