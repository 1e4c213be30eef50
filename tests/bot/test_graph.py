"""The Graph client against the simulated Entra + Graph over HTTPS: tokens, retries, writes, paging, $batch, errors."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from bot.errors import GraphAuthError, GraphError, GraphThrottled, GraphUnavailable, OutcomeUnknown
from bot.graph import GraphClient, MsalTokenSource, odata_string
from bot.settings import Settings
from simulator import Simulator
from simulator.control import Call
from simulator.testing import running_simulator
from tests.harness import free_port, settings_for

DB = "sqlite+aiosqlite:///:memory:"
CART3_01 = "27ab6835-99f8-5907-ac4d-64c0365f0d40"  # NHS-CART3-01, ChromeOS, never deprovisioned
CART3_02 = "02611379-4a85-55c4-b925-43bd8d4d90ca"  # NHS-CART3-02
MISSING = "99999999-9999-4999-8999-999999999999"
DEVICE_PATH = f"/beta/deviceManagement/managedDevices/{CART3_01}"
DEPROVISION_PATH = f"{DEVICE_PATH}/deprovision"


class Sleeps:
    """The client's ``sleep``: records every wait; sleeps for real only when asked to."""

    def __init__(self, *, real: bool = False) -> None:
        self.delays: list[float] = []
        self.real = real

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self.real:
            await asyncio.sleep(delay)


GraphFactory = Callable[..., GraphClient]


@pytest.fixture
async def make_graph(sim: Simulator) -> AsyncIterator[GraphFactory]:
    """``make_graph(sleep=Sleeps(), GRAPH_TIMEOUT="1")`` — a real client (msal + httpx) pointed at the simulator."""
    clients: list[GraphClient] = []

    def factory(*, sleep: Sleeps | None = None, **env: str) -> GraphClient:
        settings = settings_for(sim, DB, **{"GRAPH_TIMEOUT": "1", **env})
        tokens = MsalTokenSource(settings, settings.graph_resource)
        http = GraphClient.build_http(settings)
        client = GraphClient(settings, tokens, http, sleep=sleep or asyncio.sleep)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client._http.aclose()


@pytest.fixture
def graph(make_graph: GraphFactory) -> GraphClient:
    return make_graph()


def graph_calls(sim: Simulator, method: str, path: str) -> list[Call]:
    return [c for c in sim.calls if c.method == method and c.path == path]


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


# -- odata_string --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("5CD0832TGL", "'5CD0832TGL'"),
        ("O'Brien-Lab-01", "'O''Brien-Lab-01'"),
        ("x' or deviceName eq 'y", "'x'' or deviceName eq ''y'"),
        ("''", "''''''"),
        ("", "''"),
        ("PF2K9&7+QZ %", "'PF2K9&7+QZ %'"),  # URL encoding is httpx's job, not the literal's
    ],
)
def test_odata_string_doubles_single_quotes_only(value: str, literal: str) -> None:
    assert odata_string(value) == literal


# -- tokens ------------------------------------------------------------------------------------------


async def test_one_token_request_serves_many_calls(sim: Simulator, graph: GraphClient) -> None:
    await asyncio.gather(*(graph.get(DEVICE_PATH, {"$select": "id"}) for _ in range(10)))
    for _ in range(10):
        await graph.get(DEVICE_PATH, {"$select": "id"})
    assert len(graph_calls(sim, "GET", DEVICE_PATH)) == 20
    assert len(sim.token_requests) == 1
    request = sim.token_requests[0]
    assert (request.grant_type, request.scope, request.status) == (
        "client_credentials",
        "https://graph.microsoft.com/.default",
        200,
    )


async def test_401_gets_one_fresh_token_and_one_retry(sim: Simulator, graph: GraphClient) -> None:
    await graph.get(DEVICE_PATH, {"$select": "id"})
    sim.expire_tokens()
    row = await graph.get(DEVICE_PATH, {"$select": "id,deviceName"})
    assert row["deviceName"] == "NHS-CART3-01"
    assert [c.status for c in graph_calls(sim, "GET", DEVICE_PATH)] == [200, 401, 200]
    assert len(sim.token_requests) == 2
    rejected, retried = graph_calls(sim, "GET", DEVICE_PATH)[1:]
    assert rejected.headers["client-request-id"] == retried.headers["client-request-id"]


async def test_concurrent_401s_share_one_fresh_token(sim: Simulator, graph: GraphClient) -> None:
    await graph.get(DEVICE_PATH, {"$select": "id"})
    sim.expire_tokens()
    await asyncio.gather(*(graph.get(DEVICE_PATH, {"$select": "id"}) for _ in range(5)))
    statuses = [c.status for c in graph_calls(sim, "GET", DEVICE_PATH)]
    assert statuses.count(200) == 6
    assert len(sim.token_requests) == 2


async def test_second_401_raises_auth_error(sim: Simulator, make_graph: GraphFactory) -> None:
    # A token for the wrong audience: Entra issues it happily, Graph rejects it every time.
    graph = make_graph(GRAPH_RESOURCE="https://api.botframework.com")
    with pytest.raises(GraphAuthError) as caught:
        await graph.get(DEVICE_PATH, {"$select": "id"})
    assert caught.value.status == 401
    assert caught.value.code == "InvalidAuthenticationToken"
    assert "Invalid audience" in caught.value.message
    assert [c.status for c in graph_calls(sim, "GET", DEVICE_PATH)] == [401, 401]
    assert len(sim.token_requests) == 2
    assert {t.scope for t in sim.token_requests} == {"https://api.botframework.com/.default"}


async def test_short_lived_tokens_are_still_cached(sim: Simulator, graph: GraphClient) -> None:
    sim.control.token_ttl = 240  # shorter than the five-minute renewal margin
    for _ in range(5):
        await graph.get(DEVICE_PATH, {"$select": "id"})
    assert len(sim.token_requests) == 1


async def test_token_refused_by_entra_is_auth_error(sim: Simulator) -> None:
    settings = settings_for(sim, DB, AZURE_CLIENT_SECRET="wrong-secret")
    tokens = MsalTokenSource(settings, settings.graph_resource)
    with pytest.raises(GraphAuthError) as caught:
        await tokens.token()
    assert caught.value.code == "invalid_client"
    assert "wrong-secret" not in str(caught.value)
    assert tokens.stats.failures == 1
    assert sim.calls == []


class SlowEntra:
    """A second simulator plus a loopback TCP relay that holds every new connection for ``delay`` seconds.

    Both run on their own event loop in a thread, so a token source that blocked the test's loop would still get its
    answer (late) instead of deadlocking, and the test fails on the lag it measured rather than hanging.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.sim: Simulator | None = None
        self.relay_port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> SlowEntra:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("slow Entra did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def settings(self) -> Settings:
        assert self.sim is not None
        return settings_for(self.sim, DB, AZURE_AUTHORITY_HOST=f"127.0.0.1:{self.relay_port}")

    async def _main(self) -> None:
        async with running_simulator() as sim:
            self.sim = sim
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
            self.relay_port = int(server.sockets[0].getsockname()[1])
            self._ready.set()
            await self._stop.wait()
            server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.sim is not None
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.sim.port)
        await asyncio.sleep(self.delay)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture
def slow_entra() -> Iterator[SlowEntra]:
    with SlowEntra(delay=0.6) as slow:
        yield slow


async def test_slow_token_endpoint_does_not_block_the_event_loop(slow_entra: SlowEntra) -> None:
    settings = slow_entra.settings()
    tokens = MsalTokenSource(settings, settings.graph_resource)
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = loop.time()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = loop.time()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    started = loop.time()
    token = await tokens.token()
    elapsed = loop.time() - started
    done.set()
    await ticking

    assert token.startswith("sim.")
    assert slow_entra.sim is not None and len(slow_entra.sim.token_requests) == 1
    assert elapsed >= slow_entra.delay  # the token endpoint really was slow...
    assert len(gaps) >= 10
    assert max(gaps) < slow_entra.delay / 2  # ...and the loop kept ticking meanwhile


# -- retries on reads --------------------------------------------------------------------------------


async def test_429_waits_retry_after_then_succeeds(sim: Simulator, make_graph: GraphFactory) -> None:
    sleeps = Sleeps(real=True)
    graph = make_graph(sleep=sleeps)
    sim.control.add_fault("GET", DEVICE_PATH + "$", 429, retry_after=0.2)
    row = await graph.get(DEVICE_PATH, {"$select": "id"})
    assert row["id"] == CART3_01
    throttled, retried = graph_calls(sim, "GET", DEVICE_PATH)
    assert (throttled.status, retried.status) == (429, 200)
    assert sleeps.delays == [pytest.approx(0.2)]
    assert retried.time - throttled.time >= 0.19


async def test_retry_after_is_capped(sim: Simulator, make_graph: GraphFactory) -> None:
    sleeps = Sleeps()
    graph = make_graph(sleep=sleeps, GRAPH_RETRY_AFTER_CAP="0.5")
    sim.control.add_fault("GET", DEVICE_PATH + "$", 429, retry_after=30)
    await graph.get(DEVICE_PATH, {"$select": "id"})
    assert sleeps.delays == [0.5]


async def test_persistent_503_without_retry_after_is_unavailable(sim: Simulator, make_graph: GraphFactory) -> None:
    sleeps = Sleeps()
    graph = make_graph(sleep=sleeps)
    sim.control.add_fault("GET", DEVICE_PATH + "$", 503, count=50)
    with pytest.raises(GraphUnavailable) as caught:
        await graph.get(DEVICE_PATH, {"$select": "id"})
    assert caught.value.status == 503
    assert caught.value.code == "ServiceUnavailable"
    assert len(graph_calls(sim, "GET", DEVICE_PATH)) == 4
    assert len(sleeps.delays) == 3
    assert sum(sleeps.delays) <= graph._settings.graph_max_retry_wait


async def test_persistent_503_with_retry_after_is_throttled(sim: Simulator, make_graph: GraphFactory) -> None:
    sleeps = Sleeps()
    graph = make_graph(sleep=sleeps, GRAPH_RETRY_AFTER_CAP="1", GRAPH_MAX_RETRY_WAIT="2.5")
    sim.control.add_fault("GET", DEVICE_PATH + "$", 503, retry_after=5, count=50)
    with pytest.raises(GraphThrottled) as caught:
        await graph.get(DEVICE_PATH, {"$select": "id"})
    assert caught.value.retry_after == 5
    assert sleeps.delays == [1, 1]  # a third wait would break the 2.5 s budget
    assert len(graph_calls(sim, "GET", DEVICE_PATH)) == 3


async def test_read_timeout_is_retried(sim: Simulator, make_graph: GraphFactory) -> None:
    sleeps = Sleeps()
    graph = make_graph(sleep=sleeps, GRAPH_TIMEOUT="0.3")
    sim.control.add_fault("GET", DEVICE_PATH + "$", 500, delay=0.6)
    row = await graph.get(DEVICE_PATH, {"$select": "id"})
    assert row["id"] == CART3_01
    assert len(sleeps.delays) == 1
    await wait_until(lambda: len(graph_calls(sim, "GET", DEVICE_PATH)) == 2)


# -- the deprovision POST ------------------------------------------------------------------------------


async def deprovision(graph: GraphClient, device_id: str = CART3_01) -> Any:
    return await graph.deprovision(device_id, "retiring_device", client_request_id="crid-test-1")


async def test_deprovision_posts_once_and_gets_204(sim: Simulator, graph: GraphClient) -> None:
    response = await deprovision(graph)
    assert response.status == 204
    assert response.client_request_id == "crid-test-1"
    (post,) = graph_calls(sim, "POST", DEPROVISION_PATH)
    assert post.body == {"deprovisionReason": "retiring_device"}
    assert post.headers["client-request-id"] == "crid-test-1"
    assert len(sim.deprovision_posts(CART3_01)) == 1


async def test_timeout_on_deprovision_is_outcome_unknown_and_never_resent(
    sim: Simulator, make_graph: GraphFactory
) -> None:
    graph = make_graph(GRAPH_TIMEOUT="0.3")
    sim.control.add_fault("POST", "/deprovision$", 500, delay=0.8, after_apply=True)
    with pytest.raises(OutcomeUnknown) as caught:
        await deprovision(graph)
    assert caught.value.client_request_id == "crid-test-1"
    await wait_until(lambda: len(graph_calls(sim, "POST", DEPROVISION_PATH)) >= 1)
    await asyncio.sleep(0.1)
    assert len(graph_calls(sim, "POST", DEPROVISION_PATH)) == 1
    assert len(sim.deprovision_posts(CART3_01)) == 1  # Intune did act on it: the outcome really was unknown


async def test_dropped_connection_on_deprovision_is_outcome_unknown(sim: Simulator, graph: GraphClient) -> None:
    sim.control.add_fault("POST", "/deprovision$", drop=True, after_apply=True)
    with pytest.raises(OutcomeUnknown):
        await deprovision(graph)
    assert len(graph_calls(sim, "POST", DEPROVISION_PATH)) == 1
    assert len(sim.deprovision_posts(CART3_01)) == 1


async def test_429_on_deprovision_is_retried_once_accepted(sim: Simulator, make_graph: GraphFactory) -> None:
    sleeps = Sleeps(real=True)
    graph = make_graph(sleep=sleeps)
    sim.control.add_fault("POST", "/deprovision$", 429, retry_after=0.1)
    response = await deprovision(graph)
    assert response.status == 204
    posts = graph_calls(sim, "POST", DEPROVISION_PATH)
    assert [c.status for c in posts] == [429, 204]
    assert {c.headers["client-request-id"] for c in posts} == {"crid-test-1"}
    assert len(sim.deprovision_posts(CART3_01)) == 1
    assert sleeps.delays == [pytest.approx(0.1)]


async def test_write_rate_limit_429_from_intune_is_retried(sim: Simulator, make_graph: GraphFactory) -> None:
    graph = make_graph(sleep=Sleeps(real=True))
    sim.control.write_limit = (1, 0.2)
    await deprovision(graph, CART3_01)
    response = await deprovision(graph, CART3_02)
    assert response.status == 204
    assert [c.status for c in sim.calls if c.method == "POST"] == [204, 429, 204]
    assert len(sim.deprovision_posts()) == 2


async def test_500_on_deprovision_is_not_retried_and_is_unknown(sim: Simulator, make_graph: GraphFactory) -> None:
    """A 5xx other than 503 + Retry-After may come after Intune applied the write: unknown, never "failed"."""
    sleeps = Sleeps()
    graph = make_graph(sleep=sleeps)
    sim.control.add_fault("POST", "/deprovision$", 500, count=5)
    with pytest.raises(OutcomeUnknown) as caught:
        await deprovision(graph)
    assert "HTTP 500" in caught.value.detail
    assert len(graph_calls(sim, "POST", DEPROVISION_PATH)) == 1
    assert sleeps.delays == []
    assert sim.deprovision_posts() == []


async def test_503_without_retry_after_on_deprovision_is_not_retried(sim: Simulator, make_graph: GraphFactory) -> None:
    graph = make_graph(sleep=Sleeps())
    sim.control.add_fault("POST", "/deprovision$", 503, count=5)
    with pytest.raises(OutcomeUnknown):  # only 503 *with* Retry-After says "not processed"
        await deprovision(graph)
    assert len(graph_calls(sim, "POST", DEPROVISION_PATH)) == 1


async def test_deprovision_retried_when_connection_never_made(sim: Simulator) -> None:
    settings = settings_for(sim, DB, GRAPH_BASE_URL=f"https://127.0.0.1:{free_port()}")
    sleeps = Sleeps()
    graph = GraphClient(
        settings, MsalTokenSource(settings, settings.graph_resource), GraphClient.build_http(settings), sleep=sleeps
    )
    try:
        with pytest.raises(GraphUnavailable) as caught:
            await deprovision(graph)
    finally:
        await graph._http.aclose()
    assert caught.value.code == "ConnectionFailed"
    assert graph.stats.calls == 4
    assert len(sleeps.delays) == 3


async def test_rejected_deprovision_unwraps_intune_message(sim: Simulator, graph: GraphClient) -> None:
    windows = "f71fba32-c04a-5e8b-b378-77aa430c1b4a"  # NHS-OFFICE-PC01
    with pytest.raises(GraphError) as caught:
        await deprovision(graph, windows)
    (post,) = [c for c in sim.calls if c.method == "POST"]
    error = caught.value
    assert (error.status, error.code) == (400, "BadRequest")
    assert error.message.startswith("The deprovision action is not supported on this device platform ('Windows')")
    assert not error.message.startswith("{")
    assert error.request_id == post.request_id
    assert error.client_request_id == "crid-test-1"


# -- typed errors on reads -----------------------------------------------------------------------------


async def test_404_is_typed_and_carries_ids(sim: Simulator, graph: GraphClient) -> None:
    with pytest.raises(GraphError) as caught:
        await graph.get(f"/beta/deviceManagement/managedDevices/{MISSING}")
    error = caught.value
    call = sim.calls[-1]
    assert type(error) is GraphError
    assert (error.status, error.code) == (404, "ResourceNotFound")
    assert error.message.startswith(f"Resource not found: managedDevice with id '{MISSING}' does not exist.")
    assert "_version" not in error.message
    assert error.request_id == call.request_id
    assert error.client_request_id == call.headers["client-request-id"]
    assert call.request_id in str(error)


async def test_plain_graph_error_message_is_kept(sim: Simulator, graph: GraphClient) -> None:
    sim.control.intune_error_envelope = False
    with pytest.raises(GraphError) as caught:
        await graph.get(f"/beta/deviceManagement/managedDevices/{MISSING}")
    assert caught.value.message == f"Resource not found: managedDevice with id '{MISSING}' does not exist."
    with pytest.raises(GraphError) as directory:
        await graph.get("/v1.0/users/nobody@contoso.edu")
    assert directory.value.code == "Request_ResourceNotFound"


async def test_403_names_the_missing_scopes(sim: Simulator, graph: GraphClient) -> None:
    sim.state.revoke(["DeviceManagementManagedDevices.Read.All", "DeviceManagementManagedDevices.ReadWrite.All"])
    with pytest.raises(GraphError) as caught:
        await graph.get(DEVICE_PATH)
    assert (caught.value.status, caught.value.code) == (403, "Forbidden")
    assert "DeviceManagementManagedDevices.Read.All" in caught.value.message
    assert len(graph_calls(sim, "GET", DEVICE_PATH)) == 1


async def test_fault_code_and_message_reach_the_error(sim: Simulator, graph: GraphClient) -> None:
    sim.control.add_fault("GET", DEVICE_PATH + "$", 409, code="Conflict", message="Busy with another action")
    with pytest.raises(GraphError) as caught:
        await graph.get(DEVICE_PATH)
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        409,
        "Conflict",
        "Busy with another action",
    )


# -- paging --------------------------------------------------------------------------------------------


async def test_list_all_follows_next_link_verbatim(sim: Simulator, graph: GraphClient) -> None:
    seen: list[tuple[str, str | None]] = []

    async def record(response: httpx.Response) -> None:
        await response.aread()
        seen.append((str(response.request.url), response.json().get("@odata.nextLink")))

    graph._http.event_hooks["response"] = [record]
    items, truncated = await graph.list_all(
        "/beta/deviceManagement/managedDevices",
        {"$select": "id,deviceName", "$filter": "operatingSystem eq 'ChromeOS'"},
    )
    expected = {d["id"] for d in sim.state.devices.values() if d["operatingSystem"] == "ChromeOS"}
    assert not truncated
    assert len(items) == len(expected) and {i["id"] for i in items} == expected
    assert len(seen) == -(-len(expected) // sim.page_size) > 2
    for (_, next_link), (url, _) in itertools.pairwise(seen):
        assert url == next_link  # the very URL Graph handed out, not one rebuilt from parts
    assert seen[-1][1] is None
    assert all("$skiptoken" in c.query for c in sim.round_trips()[1:])


async def test_list_all_stops_at_max_items(sim: Simulator, graph: GraphClient) -> None:
    items, truncated = await graph.list_all("/beta/deviceManagement/managedDevices", {"$select": "id"}, max_items=7)
    assert truncated
    assert len(items) == 7
    assert len(sim.round_trips()) == 2


async def test_list_all_refuses_a_next_link_to_another_host(sim: Simulator) -> None:
    settings = settings_for(sim, DB)
    requested: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requested.append(str(request.url))
        return httpx.Response(200, json={"value": [{"id": "1"}], "@odata.nextLink": "https://evil.example/v1.0/x"})

    http = httpx.AsyncClient(base_url=settings.graph_base_url, transport=httpx.MockTransport(handler))

    class StaticToken:
        async def token(self, *, force_refresh: bool = False) -> str:
            return "token"

    graph = GraphClient(settings, StaticToken(), http)
    try:
        with pytest.raises(GraphError) as caught:
            await graph.list_all("/v1.0/x")
    finally:
        await http.aclose()
    assert caught.value.code == "UnexpectedNextLink"
    assert requested == [f"{settings.graph_base_url}/v1.0/x"]


# -- $batch --------------------------------------------------------------------------------------------


def device_requests(*ids: str) -> list[dict[str, Any]]:
    return [
        {"id": str(i), "method": "GET", "url": f"/deviceManagement/managedDevices/{d}?$select=id"}
        for i, d in enumerate(ids)
    ]


async def test_batch_retries_a_throttled_sub_request_once(sim: Simulator, make_graph: GraphFactory) -> None:
    sleeps = Sleeps(real=True)
    graph = make_graph(sleep=sleeps)
    sim.control.add_fault("GET", f"/managedDevices/{CART3_02}$", 429, retry_after=0.05)
    answers = await graph.batch(device_requests(CART3_01, CART3_02), version="beta")
    assert {k: v["status"] for k, v in answers.items()} == {"0": 200, "1": 200}
    assert answers["1"]["body"]["id"] == CART3_02
    batches = [c for c in sim.round_trips() if c.path == "/beta/$batch"]
    assert len(batches) == 2
    assert [r["id"] for r in batches[1].body["requests"]] == ["1"]
    assert sleeps.delays == [pytest.approx(0.05)]


async def test_batch_gives_up_after_one_retry(sim: Simulator, make_graph: GraphFactory) -> None:
    sleeps = Sleeps()
    graph = make_graph(sleep=sleeps)
    sim.control.add_fault("GET", f"/managedDevices/{CART3_02}$", 429, retry_after=0.05, count=10)
    answers = await graph.batch(device_requests(CART3_01, CART3_02), version="beta")
    assert {k: v["status"] for k, v in answers.items()} == {"0": 200, "1": 429}
    assert len([c for c in sim.round_trips() if c.path == "/beta/$batch"]) == 2
    assert len(sleeps.delays) == 1  # no pointless wait after the last attempt


async def test_batch_returns_other_failures_untouched(sim: Simulator, graph: GraphClient) -> None:
    answers = await graph.batch(device_requests(CART3_01, MISSING), version="beta")
    assert answers["1"]["status"] == 404
    assert answers["1"]["body"]["error"]["code"] == "ResourceNotFound"
    assert len(sim.round_trips()) == 1


async def test_batch_limits(graph: GraphClient, sim: Simulator) -> None:
    assert await graph.batch([]) == {}
    with pytest.raises(ValueError, match="20"):
        await graph.batch(device_requests(*([CART3_01] * 21)))
    assert sim.calls == []
