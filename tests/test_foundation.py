"""The server's foundation: start-up validation, health endpoints, welcome, help, and log hygiene."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from bot.settings import SettingsError, load_settings
from simulator import Simulator
from tests.conftest import BotFactory
from tests.harness import ALEX, BotUnderTest, Connector, activity, card_text, env_for, free_port
from tests.store.processes import BotProcess

ROOT = Path(__file__).resolve().parent.parent
BASE_ENV = {"ENV_FILE": "/nonexistent/.env", "PATH": os.environ.get("PATH", "")}


def run_app(env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "app.py", *args],
        cwd=ROOT,
        env={**BASE_ENV, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_missing_settings_stop_the_process_with_one_line_each() -> None:
    result = run_app({})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    for name in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"):
        assert any(line.strip().startswith(name + ":") for line in lines), result.stderr


def test_malformed_settings_name_the_variable_and_what_is_expected() -> None:
    env = {
        "AZURE_TENANT_ID": "not a tenant!",
        "AZURE_CLIENT_ID": "abc",
        "AZURE_CLIENT_SECRET": "s3cret-value",
        "PORT": "99999",
        "GRAPH_BASE_URL": "http://graph.example.com/v1",
        "APPROVAL_MODE": "sometimes",
        "ENTRA_ADMIN_ROLES_ALLOWED": "maybe",
        "ACTION_TTL": "soon",
        "DATABASE_URL": "mysql://db/x",
    }
    result = run_app(env)
    assert result.returncode == 2
    err = result.stderr
    for expected in (
        "AZURE_TENANT_ID: expected a tenant GUID",
        "PORT: expected a TCP port",
        "GRAPH_BASE_URL: expected https://",
        "APPROVAL_MODE: expected one of none, peer",
        "ENTRA_ADMIN_ROLES_ALLOWED: expected one of true/false",
        "ACTION_TTL: expected a duration",
        "DATABASE_URL: expected sqlite",
    ):
        assert expected in err, err
    assert "s3cret-value" not in err


def test_production_refuses_anonymous_bot_framework_mode() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(
            {
                **BASE_ENV,
                "APP_ENV": "production",
                "AZURE_TENANT_ID": "00000000-0000-0000-0000-000000000001",
                "AZURE_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
                "AZURE_CLIENT_SECRET": "x" * 10,
            }
        )
    assert any("CLIENTID: required when APP_ENV=production" in p for p in info.value.problems)


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / "bot.env"
    env_file.write_text(
        "# comment\nAZURE_TENANT_ID=00000000-0000-0000-0000-000000000001\n"
        "AZURE_CLIENT_ID='11111111-2222-3333-4444-555555555555'\nAZURE_CLIENT_SECRET=\"from-file\"\nPORT=4000\nALLOW_ANONYMOUS=true\n"
    )
    settings = load_settings({"ENV_FILE": str(env_file), "PORT": "4001"})
    assert settings.client_secret == "from-file" and settings.port == 4001
    assert settings.anonymous and settings.database_url.startswith("sqlite+aiosqlite://")


GRAPH_ONLY = {
    **BASE_ENV,
    "AZURE_TENANT_ID": "00000000-0000-0000-0000-000000000001",
    "AZURE_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
    "AZURE_CLIENT_SECRET": "x" * 10,
}


def test_anonymous_mode_only_when_asked_for() -> None:
    """No bot app id and no ALLOW_ANONYMOUS: a settings error (exit 2), not a silently unauthenticated bot."""
    result = run_app(GRAPH_ONLY)
    assert result.returncode == 2
    assert "CLIENTID: required" in result.stderr and "ALLOW_ANONYMOUS=true" in result.stderr
    with pytest.raises(SettingsError) as info:
        load_settings({**GRAPH_ONLY, "ALLOW_ANONYMOUS": "true", "APP_ENV": "production"})
    assert any(p.startswith("ALLOW_ANONYMOUS: ") and "production" in p for p in info.value.problems)


def test_anonymous_mode_binds_loopback_whatever_host_says() -> None:
    settings = load_settings({**GRAPH_ONLY, "ALLOW_ANONYMOUS": "true", "HOST": "0.0.0.0"})
    assert settings.anonymous and settings.host == "127.0.0.1"
    assert "127.0.0.1" in settings.allowed_service_url_hosts  # the Playground / local connectors
    production = load_settings(
        {
            **GRAPH_ONLY,
            "HOST": "0.0.0.0",
            "CONNECTIONS__SERVICE_CONNECTION__SETTINGS__CLIENTID": "22222222-2222-3333-4444-555555555555",
            "CONNECTIONS__SERVICE_CONNECTION__SETTINGS__CLIENTSECRET": "y" * 10,
        }
    )
    assert not production.anonymous and production.host == "0.0.0.0"
    assert "127.0.0.1" not in production.allowed_service_url_hosts
    assert "smba.trafficmanager.net" in production.allowed_service_url_hosts
    assert production.botframework_issuers == ("https://api.botframework.com",)


def test_auth_settings_are_validated() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(
            {
                **GRAPH_ONLY,
                "ALLOW_ANONYMOUS": "true",
                "BOTFRAMEWORK_ISSUERS": " , ",
                "BOTFRAMEWORK_OPENID_METADATA": "http://login.example.com/meta",
                "ALLOWED_SERVICE_URL_HOSTS": "https://smba.trafficmanager.net/teams",
            }
        )
    problems = " | ".join(info.value.problems)
    for name in ("BOTFRAMEWORK_ISSUERS: ", "BOTFRAMEWORK_OPENID_METADATA: ", "ALLOWED_SERVICE_URL_HOSTS: "):
        assert name in problems, problems


async def test_health_and_readiness(bot: BotUnderTest, sim: Simulator) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{bot.url}/healthz") as response:
            assert response.status == 200 and (await response.json())["status"] == "ok"
        async with session.get(f"{bot.url}/readyz") as response:
            body = await response.json()
            assert response.status == 200, body
            assert body["checks"] == {"database": "ok", "graph_token": "ok"}


async def test_readiness_fails_when_graph_credentials_are_wrong(make_bot: BotFactory) -> None:
    bot = await make_bot(AZURE_CLIENT_SECRET="wrong-secret-value")
    async with aiohttp.ClientSession() as session, session.get(f"{bot.url}/readyz") as response:
        body = await response.json()
    assert response.status == 503 and body["checks"]["graph_token"].startswith("failed")


async def test_unknown_text_and_help_answer_with_usage(bot: BotUnderTest) -> None:
    replies = await bot.say(ALEX, "what can you do")
    # One answer: the text with the help in it (the placeholder escaped so that it shows as "<device>", not a tag).
    assert len(replies) == 1 and not replies[0].cards
    assert "didn't understand" in replies[0].text and "deprovision \\<device\\>" in replies[0].text
    replies = await bot.say(ALEX, "HELP")
    assert "status \\<device\\>" in card_text(replies[-1].cards[0])


async def test_welcome_on_install(bot: BotUnderTest, connector: Connector) -> None:
    body = activity(
        "conversationUpdate",
        ALEX,
        service_url=connector.url,
        membersAdded=[{"id": "28:00000000-0000-0000-0000-00000000000011", "name": "Device Deprovision"}],
    )
    status, _ = await bot.post(body)
    assert status in (200, 202)
    body = activity("installationUpdate", ALEX, service_url=connector.url, action="add")
    status, _ = await bot.post(body)
    assert status in (200, 202)
    welcomes = [s for s in connector.sent() if "Type `help`" in s.text]
    assert len(welcomes) == 1  # Teams sends both events on install: welcome once per conversation


async def test_bad_bodies_get_400_not_500(bot: BotUnderTest) -> None:
    assert (await bot.post({"type": "message", "conversation": "nope"}))[0] == 400
    assert bot.session is not None
    async with bot.session.post(
        f"{bot.url}/api/messages", data=b"not json", headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 400


async def test_secrets_and_tokens_never_reach_the_log(sim: Simulator, connector: Connector, tmp_path: Path) -> None:
    """Run the real process at DEBUG through a full flow and a token failure; scan everything it logged."""
    port = free_port()
    secret = sim.client_secret
    env = {
        **env_for(sim, f"sqlite:///{tmp_path}/bot.db", PORT=str(port), LOG_LEVEL="DEBUG", LOG_FORMAT="json"),
    }
    log_path = tmp_path / "bot.log"
    app = BotProcess("bot", env, log_path, connector, port=port)
    try:
        await app.start()
        async with aiohttp.ClientSession() as session:
            url = f"{app.url}/api/messages"
            message = activity("message", ALEX, service_url=connector.url, text="deprovision 5CD0832TGL")
            async with session.post(url, json=message, headers={"Authorization": f"Bearer {secret}"}) as r:
                assert r.status in (401, 403)  # a bearer in anonymous mode is still checked; never logged
            async with session.post(url, json=message) as r:
                assert r.status in (200, 202)
            sent = await connector.wait_for(lambda c: [s for s in c.sent() if s.cards])
            action_id = sent[-1].cards[0]["actions"][0]["data"]["actionId"]
            click = activity(
                "invoke",
                ALEX,
                service_url=connector.url,
                name="adaptiveCard/action",
                value={
                    "action": {
                        "type": "Action.Execute",
                        "verb": "deprovision.confirm",
                        "data": {"actionId": action_id, "reason": "retiring_device"},
                    }
                },
            )
            async with session.post(url, json=click) as r:
                assert r.status == 200
            assert sim.deprovision_posts()
        assert await app.terminate() == 0  # graceful shutdown on SIGTERM
    finally:
        await app.stop()
    logged = log_path.read_text()
    assert "graph call" in logged and "request" in logged  # it did log the traffic
    assert "ANONYMOUS" in logged
    assert secret not in logged
    issued = list(sim.entra.tokens)
    assert issued
    for token in issued:
        assert token not in logged


async def test_production_auth_mode_process_never_logs_tokens(
    sim: Simulator, connector: Connector, tmp_path: Path
) -> None:
    """The real process in production auth mode: a forged token is refused with its reason logged, a valid one gets
    a reply carrying the bot's connector token, and neither token (nor any secret) reaches the log."""
    from tests.harness import production_env

    port = free_port()
    env = {
        **env_for(sim, f"sqlite:///{tmp_path}/bot.db", PORT=str(port), LOG_LEVEL="DEBUG", LOG_FORMAT="json"),
        **production_env(sim),
        "HOST": "127.0.0.1",
    }
    log_path = tmp_path / "bot.log"
    url = f"http://127.0.0.1:{port}/api/messages"
    message = activity("message", ALEX, service_url=connector.url, text="help")
    channel_token = sim.channel_token(sim.client_id, connector.url)
    forged = sim.channel_token(sim.client_id, connector.url, issuer="https://evil.example.com")
    app = BotProcess("bot", env, log_path, connector, port=port)
    try:
        await app.start()
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json=message, headers={"Authorization": f"Bearer {forged}"}) as r:
                assert r.status == 401
            async with session.post(url, json=message) as r:
                assert r.status == 401
            async with session.post(url, json=message, headers={"Authorization": f"Bearer {channel_token}"}) as r:
                assert r.status in (200, 202)
            sent = await connector.wait_for(lambda c: c.sent())
        assert await app.terminate() == 0
    finally:
        await app.stop()
    logged = log_path.read_text()
    assert "ANONYMOUS Bot Framework mode" not in logged
    assert "issuer https://evil.example.com not allowed" in logged and "no Authorization header" in logged
    connector_token = (sent[-1].authorization or "").removeprefix("Bearer ")
    assert sim.entra.tokens[connector_token].audience == "botframework"
    for value in (channel_token, forged, connector_token, sim.client_secret):
        assert value not in logged
