"""Test harness: a Bot Connector capture server, Teams-shaped activities, and the real bot on a free port.

Tests speak HTTP to the bot exactly as Teams does (``POST /api/messages``) and read the bot's replies,
card updates and proactive messages from the capture server, which plays the Bot Connector service.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from bot.runtime import SERVICES, Services, build_app
from bot.settings import Settings, load_settings
from bot.store import Action

TENANT = "00000000-0000-0000-0000-0000000000001"
BOT_ID = "28:00000000-0000-0000-0000-00000000000011"
CARD = "application/vnd.microsoft.card.adaptive"


@dataclass(frozen=True)
class User:
    aad_id: str
    name: str

    @property
    def mri(self) -> str:
        return f"29:{self.aad_id}"


ALEX = User("00000000-0000-0000-0000-0000000000020", "Alex Wilber")  # Help Desk Operator, all devices
MEGAN = User("00000000-0000-0000-0000-0000000000021", "Megan Bowen")  # Read Only Operator
ADELE = User("00000000-0000-0000-0000-0000000000022", "Adele Vance")  # School Administrator, one school's tag
ISAIAH = User("00000000-0000-0000-0000-0000000000023", "Isaiah Langer")  # custom role via nested group
PATTI = User("00000000-0000-0000-0000-0000000000024", "Patti Fernandez")  # Entra Intune Administrator
LYNNE = User("00000000-0000-0000-0000-0000000000025", "Lynne Robbins")  # nothing
EVERYONE = (ALEX, MEGAN, ADELE, ISAIAH, PATTI, LYNNE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Captured:
    method: str
    conversation_id: str
    activity_id: str | None
    body: dict[str, Any]
    authorization: str | None = None  # the Authorization header the bot sent (production mode: its bearer token)

    @property
    def cards(self) -> list[dict[str, Any]]:
        return [a["content"] for a in self.body.get("attachments") or [] if a.get("contentType") == CARD]

    @property
    def text(self) -> str:
        return str(self.body.get("text") or "")


class Connector:
    """Plays the Bot Connector service: records what the bot sends, assigns message ids."""

    def __init__(self) -> None:
        self.calls: list[Captured] = []
        self.members: dict[str, list[User]] = {}
        self.url = ""
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.changed = asyncio.Event()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v3/conversations/{cid}/activities", self._send)
        app.router.add_post("/v3/conversations/{cid}/activities/{aid}", self._send)
        app.router.add_put("/v3/conversations/{cid}/activities/{aid}", self._update)
        app.router.add_get("/v3/conversations/{cid}/members", self._members)
        app.router.add_post("/v3/conversations", self._create)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/"

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def _record(self, method: str, request: web.Request, body: dict[str, Any], activity_id: str) -> None:
        authorization = request.headers.get("Authorization")
        self.calls.append(Captured(method, request.match_info["cid"], activity_id, body, authorization))
        self.changed.set()

    async def _send(self, request: web.Request) -> web.Response:
        body = await request.json()
        activity_id = f"msg-{next(self._ids)}"
        self._record("send", request, body, activity_id)
        return web.json_response({"id": activity_id})

    async def _update(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record("update", request, body, request.match_info["aid"])
        return web.json_response({"id": request.match_info["aid"]})

    async def _members(self, request: web.Request) -> web.Response:
        users = self.members.get(request.match_info["cid"], list(EVERYONE))
        return web.json_response([{"id": u.mri, "name": u.name, "aadObjectId": u.aad_id} for u in users])

    async def _create(self, request: web.Request) -> web.Response:
        return web.json_response({"id": f"conv-{next(self._ids)}", "activityId": f"msg-{next(self._ids)}"})

    # -- assertions helpers ---------------------------------------------------------------------------

    def sent(self, conversation_id: str | None = None) -> list[Captured]:
        return [
            c
            for c in self.calls
            if c.method == "send"
            and c.body.get("type") == "message"
            and (conversation_id is None or c.conversation_id == conversation_id)
        ]

    def updates(self, activity_id: str | None = None) -> list[Captured]:
        return [c for c in self.calls if c.method == "update" and (activity_id is None or c.activity_id == activity_id)]

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> Any:
        """Wait until ``predicate(self)`` is truthy; return its value."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = predicate(self)
            if value:
                return value
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError("timed out waiting for the connector")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=min(remaining, 0.2))


_PERSONAL = "a:1personal-chat"
GROUP = "19:groupchat-deprovision@thread.v2"
CHANNEL = "19:helpdesk-channel@thread.tacv2;messageid=1700000000000"


def activity(
    kind: str,
    user: User,
    *,
    service_url: str,
    conversation_type: str = "personal",
    conversation_id: str | None = None,
    tenant: str = TENANT,
    **fields: Any,
) -> dict[str, Any]:
    conv_id = conversation_id or {"personal": f"{_PERSONAL}-{user.aad_id[-3:]}", "groupChat": GROUP}.get(
        conversation_type, CHANNEL
    )
    body: dict[str, Any] = {
        "type": kind,
        "id": str(uuid.uuid4()),
        "timestamp": datetime.now(UTC).isoformat(),
        "channelId": "msteams",
        "serviceUrl": service_url,
        "from": {"id": user.mri, "name": user.name, "aadObjectId": user.aad_id},
        "recipient": {"id": BOT_ID, "name": "Device Deprovision"},
        "conversation": {
            "id": conv_id,
            "conversationType": conversation_type,
            "tenantId": tenant,
            "isGroup": conversation_type != "personal",
        },
        "channelData": {"tenant": {"id": tenant}},
        "locale": "en-US",
    }
    if conversation_type == "channel":
        body["channelData"].update({"team": {"id": "19:team@thread.tacv2"}, "channel": {"id": CHANNEL.split(";")[0]}})
    body.update(fields)
    return body


@dataclass
class BotUnderTest:
    """The real aiohttp app on a port, plus helpers that speak Teams to it."""

    settings: Settings
    connector: Connector
    url: str = ""
    runner: web.AppRunner | None = None
    session: aiohttp.ClientSession | None = None
    services: Services | None = field(default=None, repr=False)
    #: Production auth mode: mints the channel token for each activity posted without explicit headers.
    token_for: Callable[[Mapping[str, Any]], str] | None = field(default=None, repr=False)

    async def start(self) -> None:
        app = build_app(self.settings, start_sweeper=False)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        self.services = app[SERVICES].get()
        self.session = aiohttp.ClientSession()

    @property
    def running(self) -> Services:
        """The started app's services (store, audit, workflow …)."""
        assert self.services is not None, "the bot is not started"
        return self.services

    async def action(self, action_id: str) -> Action:
        """The stored action, which must exist."""
        action = await self.running.store.get(action_id)
        assert action is not None, f"no action {action_id}"
        return action

    async def stop(self) -> None:
        if self.session:
            await self.session.close()
        if self.runner:
            await self.runner.cleanup()

    async def post(self, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        assert self.session is not None
        if headers is None and self.token_for is not None:
            headers = {"Authorization": f"Bearer {self.token_for(body)}"}
        async with self.session.post(f"{self.url}/api/messages", json=body, headers=headers) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text) if text else None
            except ValueError:
                return response.status, text

    async def say(
        self, user: User, text: str, *, conversation_type: str = "personal", mention: bool = True, **kw: Any
    ) -> list[Captured]:
        """Send a message; return the messages the bot sent in reply."""
        before = len(self.connector.calls)
        if conversation_type != "personal" and mention:
            text = f"<at>Device Deprovision</at> {text}"
            kw.setdefault(
                "entities",
                [
                    {
                        "type": "mention",
                        "mentioned": {"id": BOT_ID, "name": "Device Deprovision"},
                        "text": "<at>Device Deprovision</at>",
                    }
                ],
            )
        body = activity(
            "message", user, service_url=self.connector.url, conversation_type=conversation_type, text=text, **kw
        )
        status, _ = await self.post(body)
        assert status in (200, 202), status
        return [c for c in self.connector.calls[before:] if c.method == "send" and c.body.get("type") == "message"]

    async def click(
        self,
        user: User,
        verb: str,
        data: Mapping[str, Any],
        *,
        reply_to: str | None = None,
        conversation_type: str = "personal",
        conversation_id: str | None = None,
        trigger: str = "manual",
        tenant: str = TENANT,
    ) -> dict[str, Any]:
        """An ``adaptiveCard/action`` invoke; returns the invoke response body ``{statusCode, type, value}``."""
        body = activity(
            "invoke",
            user,
            service_url=self.connector.url,
            conversation_type=conversation_type,
            conversation_id=conversation_id,
            tenant=tenant,
            name="adaptiveCard/action",
            **({"replyToId": reply_to} if reply_to else {}),
            value={"action": {"type": "Action.Execute", "verb": verb, "data": dict(data)}, "trigger": trigger},
        )
        status, response = await self.post(body)
        assert status == 200, (status, response)
        assert isinstance(response, dict), response
        return response


CONN = "CONNECTIONS__SERVICE_CONNECTION__SETTINGS__"


def env_for(sim: Any, database_url: str, **overrides: str) -> dict[str, str]:
    """The bot's environment against ``sim``: anonymous local mode unless ``overrides`` name a bot app id."""
    env = {
        **sim.env(),
        "ENV_FILE": "/nonexistent/.env",
        "DATABASE_URL": database_url,
        "LOG_FORMAT": "text",
        "INVOKE_BUDGET": "2",
        "GRAPH_TIMEOUT": "5",
        "GRAPH_MAX_RETRY_WAIT": "3",
        "GRAPH_RETRY_AFTER_CAP": "1",
    }
    if CONN + "CLIENTID" not in overrides:
        env["ALLOW_ANONYMOUS"] = "true"
    env.update(overrides)
    return env


def production_env(sim: Any) -> dict[str, str]:
    """Production auth mode against ``sim``: the simulated tenant's app is also the Azure Bot, its channel tokens
    come from the simulated Bot Framework, and the capture connector on loopback is allowed explicitly."""
    return {
        CONN + "CLIENTID": sim.client_id,
        CONN + "CLIENTSECRET": sim.client_secret,
        CONN + "TENANTID": sim.tenant_id,
        "ALLOWED_SERVICE_URL_HOSTS": "127.0.0.1,smba.trafficmanager.net",
    }


def settings_for(sim: Any, database_url: str, **overrides: str) -> Settings:
    return load_settings(env_for(sim, database_url, **overrides))


def card_of(response: dict[str, Any]) -> dict[str, Any]:
    assert response.get("type") == CARD, response
    value = response["value"]
    assert isinstance(value, dict)
    return value


def card_text(card: dict[str, Any]) -> str:
    """Every piece of visible text in a card, flattened (for assertions)."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("text", "title", "value", "label"):
                if isinstance(node.get(key), str):
                    out.append(node[key])
            for value in node.values():
                if isinstance(value, (dict, list)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(card.get("body", []))
    walk(card.get("actions", []))
    return "\n".join(out)


def verbs_in(card: dict[str, Any]) -> list[str]:
    return [a.get("verb", "") for a in card.get("actions", []) if a.get("type") == "Action.Execute"]


def action_id_of(card: dict[str, Any]) -> str:
    for action in card.get("actions", []):
        if "actionId" in (action.get("data") or {}):
            return str(action["data"]["actionId"])
    refresh = card.get("refresh") or {}
    return str(refresh.get("action", {}).get("data", {}).get("actionId", ""))
