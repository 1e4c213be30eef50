"""Crafted bodies and headers get a clear 4xx — never a 500, never a traceback in the log."""

from __future__ import annotations

import json
import logging

import pytest

from simulator import Simulator
from tests.conftest import BotFactory
from tests.harness import ALEX, BotUnderTest, Connector, activity


def nested(depth: int) -> dict[str, object]:
    node: dict[str, object] = {"leaf": 1}
    for _ in range(depth):
        node = {"x": [node]}
    return node


async def raw_post(bot: BotUnderTest, data: bytes, headers: dict[str, str] | None = None) -> int:
    assert bot.session is not None
    async with bot.session.post(
        f"{bot.url}/api/messages", data=data, headers={"Content-Type": "application/json", **(headers or {})}
    ) as response:
        await response.read()
        return response.status


@pytest.fixture(params=["anonymous", "production"])
async def any_bot(request: pytest.FixtureRequest, make_bot: BotFactory) -> BotUnderTest:
    return await make_bot(production=request.param == "production")


async def test_deeply_nested_json_is_400(
    any_bot: BotUnderTest, connector: Connector, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = activity("message", ALEX, service_url=connector.url, text="help", channelData=nested(60))
    body["channelData"]["tenant"] = {"id": body["conversation"]["tenantId"]}
    assert (await any_bot.post(body))[0] == 400
    # Deeper than the JSON parser's own recursion limit: still a 400.
    deep = b'{"type":"message","value":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert await raw_post(any_bot, deep) == 400
    assert sim.calls == [] and connector.calls == []
    assert not [r for r in caplog.records if r.exc_info], "no traceback may be logged"


async def test_moderate_nesting_inside_card_data_is_accepted(make_bot: BotFactory, connector: Connector) -> None:
    bot = await make_bot()
    body = activity("message", ALEX, service_url=connector.url, text="help", value=nested(10))
    assert (await bot.post(body))[0] in (200, 202)


async def test_huge_strings_and_bodies_get_4xx(
    any_bot: BotUnderTest, connector: Connector, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    huge = activity("message", ALEX, service_url=connector.url, text="deprovision " + "A" * 300_000)
    status, _ = await any_bot.post(huge)
    assert status == 413
    long_name = activity("message", ALEX, service_url=connector.url, text="deprovision " + "A" * 100_000)
    status, _ = await any_bot.post(long_name)
    assert status in (200, 202)
    assert sim.calls == []  # refused by the command parser before any Graph lookup
    assert not sim.deprovision_posts()
    assert not [r for r in caplog.records if r.exc_info], "no traceback may be logged"


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"activity"',
        b"null",
        b"\xff\xfe",
        b'{"type": "message", "conversation": "nope"}',
        b'{"type": "message", "serviceUrl": {"a": 1}, "channelId": ["msteams"]}',
        b'{"type": 5, "conversation": {"id": 7}, "from": []}',
    ],
)
async def test_malformed_bodies_are_4xx(
    any_bot: BotUnderTest, body: bytes, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    status = await raw_post(any_bot, body)
    assert 400 <= status < 500, status
    assert sim.calls == []
    assert not [r for r in caplog.records if r.exc_info], "no traceback may be logged"


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer e30.e30.",  # {} header: no alg, no kid
        "Bearer eyJhbGciOiJub25lIn0.e30.",  # alg=none
        "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6WzFdfQ.e30.c2ln",  # kid is a list
        "Bearer W10.W10.W10",  # header is a JSON array
        "Bearer " + "." * 2,
        "Bearer a b",
        "bearer",
    ],
)
async def test_malformed_jwt_headers_are_401(
    make_bot: BotFactory, connector: Connector, sim: Simulator, authorization: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bot = await make_bot(production=True)
    body = activity("message", ALEX, service_url=connector.url, text="help")
    status, _ = await bot.post(body, headers={"Authorization": authorization})
    assert status == 401
    assert sim.calls == [] and connector.calls == []
    assert not [r for r in caplog.records if r.exc_info], "no traceback may be logged"


async def test_bearer_token_sent_to_an_anonymous_bot_is_refused(
    make_bot: BotFactory, connector: Connector, sim: Simulator
) -> None:
    bot = await make_bot()
    body = activity("message", ALEX, service_url=connector.url, text="help")
    token = sim.channel_token(sim.client_id, connector.url)
    status, _ = await bot.post(body, headers={"Authorization": f"Bearer {token}"})
    assert status == 401
    assert json.dumps(body)  # the same body without the header works
    assert (await bot.post(body))[0] in (200, 202)
