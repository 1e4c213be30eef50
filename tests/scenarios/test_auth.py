"""Inbound authentication over HTTP, in production auth mode: the simulated Bot Framework signs channel tokens,
the simulated Entra issues the bot's own connector token, and every forged variant is refused with 401,
no reply and no Graph call."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

from bot import auth
from simulator import Simulator
from tests.conftest import BotFactory
from tests.harness import ALEX, TENANT, Connector, activity, free_port

SERIAL = "5CD0832TGL"
OTHER_BOT = "99999999-9999-9999-9999-999999999999"


def message(connector: Any, text: str = f"deprovision {SERIAL}", **kw: Any) -> dict[str, Any]:
    return activity("message", ALEX, service_url=connector.url, text=text, **kw)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_valid_token_runs_the_flow_and_replies_with_the_bots_own_token(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    bot = await make_bot(production=True)
    status, _ = await bot.post(message(connector))
    assert status in (200, 202)
    sent = await connector.wait_for(lambda c: [s for s in c.sent() if s.cards])
    assert sent[-1].cards[0]["version"] == "1.5"
    assert any(c.path.startswith("/beta/deviceManagement/managedDevices") for c in sim.calls)
    # The reply carried a bearer token that the simulated Entra issued to the bot for the Bot Framework.
    authorization = sent[-1].authorization or ""
    assert authorization.startswith("Bearer ")
    issued = sim.entra.tokens.get(authorization.removeprefix("Bearer "))
    assert issued is not None and issued.audience == "botframework"
    assert issued.client_id == sim.client_id
    assert any(t.scope == "https://api.botframework.com/.default" and t.status == 200 for t in sim.token_requests)


async def test_card_click_with_valid_token_deprovisions(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    bot = await make_bot(production=True)
    await bot.post(message(connector))
    sent = await connector.wait_for(lambda c: [s for s in c.sent() if s.cards])
    action_id = sent[-1].cards[0]["actions"][0]["data"]["actionId"]
    response = await bot.click(
        ALEX, "deprovision.confirm", {"actionId": action_id, "reason": "retiring_device"}, reply_to=sent[-1].activity_id
    )
    assert response["type"] == "application/vnd.microsoft.card.adaptive"
    assert sim.deprovision_posts()


def _forged(sim: Any, connector: Any, variant: str) -> dict[str, str]:
    """The Authorization header for one forged or broken token variant."""
    aud, url = sim.client_id, connector.url
    token: str
    if variant == "forged issuer":
        token = sim.channel_token(aud, url, issuer="https://evil.example.com")
    elif variant == "Entra issuer":  # a token Entra signs for any calling app is not a channel token
        token = sim.channel_token(
            aud, url, issuer=f"https://login.microsoftonline.com/{sim.tenant_id}/v2.0", extra={"tid": sim.tenant_id}
        )
    elif variant == "other app's token":
        token = sim.channel_token(
            aud, url, issuer=f"https://sts.windows.net/{sim.tenant_id}/", extra={"appid": OTHER_BOT, "ver": "1.0"}
        )
    elif variant == "wrong audience":
        token = sim.channel_token(OTHER_BOT, url)
    elif variant == "wrong serviceurl":
        token = sim.channel_token(aud, "https://smba.trafficmanager.net/emea/")
    elif variant == "missing serviceurl":
        token = sim.channel_token(aud, None)
    elif variant == "no exp":
        token = sim.channel_token(aud, url, exp=False)
    elif variant == "expired":
        token = sim.channel_token(aud, url, ttl=-120)  # beyond the 60 s leeway
    elif variant == "unpublished key":
        token = sim.channel_token(aud, url, kid=sim.botframework.add_key(published=False))
    elif variant == "key not endorsed for msteams":
        token = sim.channel_token(aud, url, kid=sim.botframework.add_key(("webchat",)))
    elif variant == "unsigned (alg=none)":
        claims = {"iss": "https://api.botframework.com", "aud": aud, "serviceurl": url, "exp": 4102444800}
        token = f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': 'x'})}.{b64(claims)}."
    elif variant == "HS256 with a guessable secret":
        import jwt

        claims = {"iss": "https://api.botframework.com", "aud": aud, "serviceurl": url, "exp": 4102444800}
        token = jwt.encode(claims, "a-secret-anyone-could-guess-0123456789", algorithm="HS256", headers={"kid": "x"})
    elif variant == "no kid":
        real = sim.channel_token(aud, url)
        token = f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{real.split('.', 1)[1]}"
    elif variant == "tampered payload":
        real = sim.channel_token(aud, url)
        header, _payload, signature = real.split(".")
        claims = {"iss": "https://api.botframework.com", "aud": aud, "serviceurl": url, "exp": 4102444800}
        token = f"{header}.{b64(claims)}.{signature}"
    elif variant == "malformed header":
        token = "not-base64!.e30.sig"
    elif variant == "not a JWT":
        token = "abc"
    elif variant == "no Authorization header":
        return {}
    elif variant == "not Bearer":
        return {"Authorization": f"Basic {sim.channel_token(aud, url)}"}
    elif variant == "huge token":
        token = "a" * 3000 + "." + "b" * 3000 + ".c"
    else:
        raise AssertionError(variant)
    return {"Authorization": f"Bearer {token}"}


FORGED = [
    "forged issuer",
    "Entra issuer",
    "other app's token",
    "wrong audience",
    "wrong serviceurl",
    "missing serviceurl",
    "no exp",
    "expired",
    "unpublished key",
    "key not endorsed for msteams",
    "unsigned (alg=none)",
    "HS256 with a guessable secret",
    "no kid",
    "tampered payload",
    "malformed header",
    "not a JWT",
    "no Authorization header",
    "not Bearer",
    "huge token",
]


@pytest.mark.parametrize("variant", FORGED)
async def test_forged_tokens_get_401_no_reply_no_graph_call(
    make_bot: BotFactory, sim: Simulator, connector: Connector, caplog: pytest.LogCaptureFixture, variant: str
) -> None:
    bot = await make_bot(production=True)
    headers = _forged(sim, connector, variant)
    caplog.set_level(logging.WARNING, logger="bot.http")
    for kind in ("message", "invoke"):
        body = message(connector)
        if kind == "invoke":
            body = activity(
                "invoke",
                ALEX,
                service_url=connector.url,
                name="adaptiveCard/action",
                value={"action": {"type": "Action.Execute", "verb": "deprovision.confirm", "data": {"actionId": "x"}}},
            )
        status, answer = await bot.post(body, headers=headers)
        assert status == 401, (variant, status, answer)
        assert answer == {"error": "unauthorized"}  # no detail for the caller
    refusals = [r for r in caplog.records if r.getMessage() == "inbound token refused"]
    assert len(refusals) == 2 and all(getattr(r, "reason", "") for r in refusals)
    assert sim.calls == [] and not sim.deprovision_posts()
    assert connector.calls == []


async def test_service_url_binding_ignores_case_and_trailing_slash(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    bot = await make_bot(production=True)
    claimed = connector.url.rstrip("/").upper().replace("HTTP://", "http://")
    headers = {"Authorization": f"Bearer {sim.channel_token(sim.client_id, claimed)}"}
    status, _ = await bot.post(message(connector, text="help"), headers=headers)
    assert status in (200, 202)
    await connector.wait_for(lambda c: c.sent())


async def test_jwks_unreachable_is_401_not_500(make_bot: BotFactory, sim: Simulator, connector: Connector) -> None:
    bot = await make_bot(production=True, BOTFRAMEWORK_OPENID_METADATA=f"https://127.0.0.1:{free_port()}/meta")
    status, answer = await bot.post(message(connector))
    assert status == 401 and answer == {"error": "unauthorized"}
    assert sim.calls == [] and connector.calls == []


async def test_jwks_failing_is_401_and_keys_are_cached(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    sim.botframework.jwks_status = 503
    bot = await make_bot(production=True)
    assert (await bot.post(message(connector, text="help")))[0] == 401
    sim.botframework.jwks_status = 200
    bot2 = await make_bot(production=True)
    for _ in range(3):
        assert (await bot2.post(message(connector, text="help")))[0] in (200, 202)
    assert bot2.running.inbound.fetches == 1  # one fetch serves many requests


async def test_unknown_kid_refreshes_keys_once_then_accepts_a_rotated_key(
    make_bot: BotFactory, sim: Simulator, connector: Connector, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = await make_bot(production=True)
    assert (await bot.post(message(connector, text="help")))[0] in (200, 202)
    rotated = sim.botframework.add_key()
    token = sim.channel_token(sim.client_id, connector.url, kid=rotated)
    monkeypatch.setattr(auth, "KEY_REFRESH_INTERVAL", 0.0)
    status, _ = await bot.post(message(connector, text="help"), headers={"Authorization": f"Bearer {token}"})
    assert status in (200, 202)
    assert bot.running.inbound.fetches == 2
    # Junk key ids do not trigger a fetch each (rate-limited refresh).
    monkeypatch.setattr(auth, "KEY_REFRESH_INTERVAL", 3600.0)
    for _ in range(3):
        junk = sim.channel_token(sim.client_id, connector.url, kid=sim.botframework.add_key(published=False))
        status, _ = await bot.post(message(connector, text="help"), headers={"Authorization": f"Bearer {junk}"})
        assert status == 401
    assert bot.running.inbound.fetches == 2


async def test_service_url_not_on_the_allow_list_is_refused(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    bot = await make_bot(production=True, ALLOWED_SERVICE_URL_HOSTS="smba.trafficmanager.net")
    status, _ = await bot.post(message(connector))
    assert status == 403
    assert sim.calls == [] and connector.calls == []


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("channelData.tenant.id", "11111111-1111-1111-1111-111111111111"),
        ("conversation.tenantId", "11111111-1111-1111-1111-111111111111"),
        ("token tid", "11111111-1111-1111-1111-111111111111"),
        ("all absent", None),
    ],
)
async def test_every_tenant_field_present_must_match(
    make_bot: BotFactory, sim: Simulator, connector: Connector, where: str, value: str | None
) -> None:
    bot = await make_bot(production=True)
    body = message(connector)
    headers = None
    if where == "channelData.tenant.id":
        body["channelData"]["tenant"]["id"] = value
    elif where == "conversation.tenantId":
        body["conversation"]["tenantId"] = value
    elif where == "token tid":
        token = sim.channel_token(sim.client_id, connector.url, extra={"tid": value})
        headers = {"Authorization": f"Bearer {token}"}
    else:
        del body["channelData"]["tenant"]
        del body["conversation"]["tenantId"]
    status, _ = await bot.post(body, headers=headers)
    assert status == 403
    assert sim.calls == [] and connector.calls == []


async def test_matching_token_tid_and_tenant_in_one_field_only_are_accepted(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    bot = await make_bot(production=True)
    body = message(connector, text="help")
    del body["conversation"]["tenantId"]
    token = sim.channel_token(sim.client_id, connector.url, extra={"tid": TENANT.upper()})
    status, _ = await bot.post(body, headers={"Authorization": f"Bearer {token}"})
    assert status in (200, 202)


async def test_proactive_approval_flow_in_production_mode(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    """Proactive sends (approval channel card, card updates) use continue_conversation with the bot's credentials."""
    bot = await make_bot(production=True, APPROVAL_MODE="peer", APPROVAL_CHANNEL_ID="19:approvals@thread.tacv2")
    await bot.post(message(connector))
    sent = await connector.wait_for(lambda c: [s for s in c.sent() if s.cards])
    action_id = sent[-1].cards[0]["actions"][0]["data"]["actionId"]
    await bot.click(
        ALEX, "deprovision.confirm", {"actionId": action_id, "reason": "retiring_device"}, reply_to=sent[-1].activity_id
    )
    posted = await connector.wait_for(lambda c: c.sent("19:approvals@thread.tacv2"))
    token = (posted[-1].authorization or "").removeprefix("Bearer ")
    assert sim.entra.tokens[token].audience == "botframework"


async def test_proactive_send_to_a_service_url_off_the_allow_list_is_refused(
    make_bot: BotFactory, connector: Connector, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await make_bot(production=True)
    assert bot.running.workflow.deps.notifier is not None
    reference = {
        "serviceUrl": "https://attacker.example.com/",
        "channelId": "msteams",
        "conversation": {"id": "a:1"},
        "bot": {"id": "28:bot"},
        "user": {"id": "29:user"},
    }
    caplog.set_level(logging.WARNING, logger="bot.teams")
    assert await bot.running.workflow.deps.notifier.send(reference, text="hello") is None
    assert not await bot.running.workflow.deps.notifier.update(reference, "msg-1", {"type": "AdaptiveCard"})
    assert any("serviceUrl not allowed" in r.getMessage() for r in caplog.records)
    assert connector.calls == []


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://smba.trafficmanager.net/emea/", True),
        ("https://SMBA.trafficmanager.net/amer", True),
        ("https://europe.webchat.botframework.com/", True),
        ("https://smba.infra.gov.teams.microsoft.us/teams", True),
        ("http://smba.trafficmanager.net/emea/", False),  # plain http only for loopback
        ("https://botframework.com.evil.example/", False),
        ("https://evilbotframework.com/", False),
        ("https://smba.trafficmanager.net@evil.example/", False),
        ("https://127.0.0.1:3978/", False),  # loopback only when listed (anonymous mode default, tests)
        ("javascript:alert(1)", False),
        ("", False),
        (None, False),
    ],
)
def test_service_url_allow_list_matching(url: str | None, allowed: bool) -> None:
    from bot.settings import DEFAULT_SERVICE_URL_HOSTS

    assert auth.service_url_allowed(url, DEFAULT_SERVICE_URL_HOSTS) is allowed
