"""The Graph client's aiohttp transport (bot/graph_transport.py) against raw TLS servers that misbehave on purpose.

What matters is the line the retry policy draws: a request that never left this process may be sent again (even the
deprovision POST), one that may have reached Graph may not. Each server here records the requests it read, so a
test sees exactly how many times a write went out.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import pytest
import trustme

from bot.errors import GraphUnavailable, OutcomeUnknown
from bot.graph import GraphClient, ssl_context
from bot.graph_policy import transport_failure
from bot.graph_transport import AiohttpTransport, httpx_error
from simulator import Simulator
from tests.harness import free_port, settings_for

DB = "sqlite+aiosqlite:///:memory:"
DEPROVISION = "/beta/deviceManagement/managedDevices/27ab6835-99f8-5907-ac4d-64c0365f0d40/deprovision"
DEVICE = "/beta/deviceManagement/managedDevices/27ab6835-99f8-5907-ac4d-64c0365f0d40"


@dataclass
class Seen:
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RawServer:
    """A TLS server on loopback; ``behaviour`` decides what happens after it has read a whole request."""

    behaviour: str  # "close", "reset", "hang", "gzip", "idle-close"
    ca_file: str
    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in lines if ":" in h)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append(Seen(line.split(" ")[1], headers, body))
                if self.behaviour == "idle-close":  # answer, then close the idle keep-alive connection
                    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    writer.close()
                    return
                if self.behaviour == "gzip":
                    payload = gzip.compress(json.dumps({"id": "x", "name": "Ünïcode"}).encode())
                    writer.write(
                        b"HTTP/1.1 200 Fine Thanks\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                        b"request-id: r-1\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload
                    )
                    await writer.drain()
                    continue
                if self.behaviour == "hang":
                    await reader.read()  # until the client gives up and closes
                elif self.behaviour == "reset":
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
                    writer.transport.abort()
                    return
                writer.close()
                return
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            writer.close()


@contextlib.asynccontextmanager
async def raw_server(behaviour: str, tmp_path: Path) -> AsyncIterator[RawServer]:
    ca = trustme.CA()
    ca_file = str(tmp_path / "raw-ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = RawServer(behaviour, ca_file)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=context)
    server.port = int(listener.sockets[0].getsockname()[1])
    try:
        yield server
    finally:
        listener.close()
        for writer in server.writers:
            writer.transport.abort()
        await listener.wait_closed()
        await asyncio.sleep(0.05)  # let the handlers see the aborts and finish


class StaticToken:
    async def token(self, *, force_refresh: bool = False) -> str:
        return "token"


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


GraphAt = Callable[..., GraphClient]


@pytest.fixture
async def graph_at(sim: Simulator) -> AsyncIterator[GraphAt]:
    """``graph_at(server, GRAPH_TIMEOUT="0.3")`` — the bot's GraphClient (built by build_http) aimed at a raw server."""
    made: list[GraphClient] = []

    def factory(server: RawServer, *, ca_file: str | None = None, **env: str) -> GraphClient:
        ca = server.ca_file if ca_file is None else ca_file
        settings = settings_for(
            sim, DB, GRAPH_BASE_URL=f"https://127.0.0.1:{server.port}", SSL_CERT_FILE=ca, REQUESTS_CA_BUNDLE=ca, **env
        )
        graph = GraphClient(settings, StaticToken(), GraphClient.build_http(settings), sleep=Sleeps())
        made.append(graph)
        return graph

    yield factory
    for graph in made:
        await graph.aclose()


def cause(error: BaseException) -> BaseException | None:
    return error.__cause__


# -- the mapping, one exception at a time ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "mapped"),
    [
        (aiohttp.ConnectionTimeoutError("pool or connect"), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError("sock_read"), httpx.ReadTimeout),
        (aiohttp.ServerTimeoutError("read"), httpx.ReadTimeout),
        (TimeoutError(), httpx.ReadTimeout),
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), httpx.ReadError),
        (aiohttp.ClientConnectionResetError("Cannot write to closing transport"), httpx.ReadError),
        (aiohttp.ClientPayloadError("Response payload is not completed"), httpx.ReadError),
        (aiohttp.ClientConnectionError("anything else"), httpx.ReadError),
        (OSError("socket"), httpx.ReadError),
    ],
)
def test_only_failures_before_sending_map_to_connect_errors(raised: BaseException, mapped: type[Exception]) -> None:
    assert httpx_error(raised) is mapped
    failure = transport_failure(mapped("x"), idempotent=False, client_request_id="c")
    never_sent = isinstance(raised, aiohttp.ConnectionTimeoutError)
    assert isinstance(failure.error, GraphUnavailable if never_sent else OutcomeUnknown)
    assert failure.retryable is never_sent


# -- a write that may have reached Graph is never sent twice ---------------------------------------------


@pytest.mark.parametrize(("behaviour", "expected"), [("close", httpx.RemoteProtocolError), ("reset", httpx.ReadError)])
async def test_connection_lost_after_the_post_is_outcome_unknown_and_sent_once(
    graph_at: GraphAt, tmp_path: Path, behaviour: str, expected: type[Exception]
) -> None:
    async with raw_server(behaviour, tmp_path) as server:
        graph = graph_at(server)
        with pytest.raises(OutcomeUnknown) as caught:
            await graph.deprovision("27ab6835-99f8-5907-ac4d-64c0365f0d40", "retiring_device", client_request_id="c-1")
        await asyncio.sleep(0.1)  # a second POST, if one were sent, would have arrived by now
    assert isinstance(cause(caught.value), expected)
    assert [(r.target, r.body) for r in server.requests] == [(DEPROVISION, b'{"deprovisionReason":"retiring_device"}')]
    assert server.requests[0].headers["client-request-id"] == "c-1"


async def test_read_timeout_on_the_post_is_outcome_unknown_and_sent_once(graph_at: GraphAt, tmp_path: Path) -> None:
    async with raw_server("hang", tmp_path) as server:
        graph = graph_at(server, GRAPH_TIMEOUT="0.3")
        with pytest.raises(OutcomeUnknown) as caught:
            await graph.deprovision("27ab6835-99f8-5907-ac4d-64c0365f0d40", "retiring_device", client_request_id="c-2")
        await asyncio.sleep(0.1)
    assert isinstance(cause(caught.value), httpx.ReadTimeout)
    assert len(server.requests) == 1


async def test_reads_lost_after_sending_are_retried_as_before(graph_at: GraphAt, tmp_path: Path) -> None:
    async with raw_server("close", tmp_path) as server:
        graph = graph_at(server)
        with pytest.raises(GraphUnavailable) as caught:
            await graph.get(DEVICE)
    assert caught.value.code == "TransportError"
    assert len(server.requests) == 4  # max_attempts; aiohttp's own silent retry of idempotent requests adds none
    assert graph.stats.calls == 4


async def test_a_keep_alive_connection_closed_while_idle_is_not_reused(graph_at: GraphAt, tmp_path: Path) -> None:
    async with raw_server("idle-close", tmp_path) as server:
        graph = graph_at(server)
        first = await graph.deprovision(
            "27ab6835-99f8-5907-ac4d-64c0365f0d40", "retiring_device", client_request_id="a"
        )
        await asyncio.sleep(0.3)  # the server has closed the idle connection meanwhile
        second = await graph.deprovision(
            "02611379-4a85-55c4-b925-43bd8d4d90ca", "retiring_device", client_request_id="b"
        )
    assert (first.status, second.status) == (204, 204)
    assert [r.headers["client-request-id"] for r in server.requests] == ["a", "b"]
    assert len(server.writers) == 2  # a new connection for the second POST, not a failed write on the dead one


# -- never connected: retried, even for the write ---------------------------------------------------------


async def test_refused_connection_is_retried_even_for_the_post(graph_at: GraphAt, tmp_path: Path) -> None:
    refused = RawServer("close", str(tmp_path / "unused.pem"), port=free_port())
    graph = graph_at(refused, ca_file="")
    with pytest.raises(GraphUnavailable) as caught:
        await graph.deprovision("27ab6835-99f8-5907-ac4d-64c0365f0d40", "retiring_device", client_request_id="c-3")
    assert caught.value.code == "ConnectionFailed"
    assert isinstance(cause(caught.value), httpx.ConnectError)
    assert graph.stats.calls == 4


async def test_untrusted_certificate_never_sends_the_request(graph_at: GraphAt, tmp_path: Path) -> None:
    async with raw_server("close", tmp_path) as server:
        other = trustme.CA()
        other_ca = str(tmp_path / "other-ca.pem")
        other.cert_pem.write_to_path(other_ca)
        graph = graph_at(server, ca_file=other_ca)
        with pytest.raises(GraphUnavailable) as caught:
            await graph.deprovision("27ab6835-99f8-5907-ac4d-64c0365f0d40", "retiring_device", client_request_id="c-4")
    assert caught.value.code == "ConnectionFailed"
    assert isinstance(cause(caught.value), httpx.ConnectError)
    assert "certificate verify failed" in str(cause(caught.value))
    assert server.requests == []


async def test_tls_handshake_that_never_completes_is_a_connect_timeout(tmp_path: Path) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # plain TCP: accepts, never answers the TLS ClientHello
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.close()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    transport = AiohttpTransport(verify=ssl_context(None), limits=httpx.Limits())
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(2.0, connect=0.2, pool=0.2)) as client:
        with pytest.raises(httpx.ConnectTimeout):
            await client.get(f"https://127.0.0.1:{port}/x")
    assert len(accepted) == 1
    listener.close()
    accepted[0].transport.abort()
    await listener.wait_closed()
    await asyncio.sleep(0.05)  # let the handler see the abort and finish


async def test_waiting_for_a_pooled_connection_times_out_before_sending(tmp_path: Path) -> None:
    async with raw_server("hang", tmp_path) as server:
        transport = AiohttpTransport(verify=ssl_context(server.ca_file), limits=httpx.Limits(max_connections=1))
        async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, connect=0.1, pool=0.1)) as client:
            url = f"https://127.0.0.1:{server.port}/x"
            holder = asyncio.create_task(client.get(url))  # takes the only connection and waits for an answer
            while not server.requests:
                await asyncio.sleep(0.01)
            with pytest.raises(httpx.ConnectTimeout):
                await client.post(url, json={"a": 1})
            holder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await holder
    assert [r.target for r in server.requests] == ["/x"]


# -- what goes over the wire and what comes back -----------------------------------------------------------


async def test_request_and_response_pass_through_unchanged(graph_at: GraphAt, tmp_path: Path) -> None:
    async with raw_server("gzip", tmp_path) as server:
        graph = graph_at(server)
        value = "O'Brien+1/2 é&x=y"
        body = await graph.get("/v1.0/devices", {"$filter": f"displayName eq '{value}'", "$top": "1"})
        seen = graph._http.build_request("GET", "/v1.0/devices", params={"$filter": f"displayName eq '{value}'"})
        await graph.get("/v1.0/devices")  # the same keep-alive connection serves the next request
    assert body == {"id": "x", "name": "Ünïcode"}  # gzip decoded by httpx, as before
    first = server.requests[0]
    assert first.target == seen.url.raw_path.decode("ascii") + "&%24top=1"  # httpx's bytes, not requoted
    assert first.headers["authorization"] == "Bearer token"
    assert first.headers["accept"] == "application/json"
    assert first.headers["user-agent"] == "chromeos-deprovision-bot/0.1"
    assert "cookie" not in first.headers
    assert len(server.requests) == 2
