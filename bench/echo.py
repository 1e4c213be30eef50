"""The floor: a minimal echo bot on the same Agents SDK 1.9 stack as the bot (teams-platform.md §11 set-up pattern).

``AgentApplication`` + ``CloudAdapter`` + ``jwt_authorization_middleware``, anonymous, ``MemoryStorage``; replies go to
the same capture connector. To give the floor the same *shape* of connector traffic as the bot's turns:

* a ``message`` → one reply (``send_activity`` → POST to the connector), like the bot's card reply;
* an ``adaptiveCard/action`` invoke → one ``update_activity`` (PUT to the connector, as the bot's card update) and a
  small card in the invoke response.

``start_typing_timer=False`` as in the bot. ``python -m bench.echo --port N [--pooled]``.

Without ``--pooled`` this is **the floor** the targets use: the stock SDK, including its stock connector-client
factory (a new ``TeamsConnectorClient`` and ``UserTokenClient``, each with its own ``aiohttp.ClientSession``, per
turn). ``--pooled`` gives the same echo bot the bot's own :class:`bot.connector_pool.PooledClientFactory` — a secondary
row only, showing how much of the stock floor is that per-turn client construction.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import warnings
from typing import Any

from aiohttp import web
from microsoft_agents.activity import (
    Activity,
    ActivityTypes,
    AdaptiveCardInvokeResponse,
    Attachment,
    load_configuration_from_env,
)
from microsoft_agents.authentication.msal import MsalConnectionManager
from microsoft_agents.hosting.aiohttp import CloudAdapter, jwt_authorization_middleware, start_agent_process
from microsoft_agents.hosting.core import AgentApplication, Authorization, MemoryStorage, TurnContext, TurnState

CARD = "application/vnd.microsoft.card.adaptive"


def build(pooled: bool) -> web.Application:
    env = {
        "CONNECTIONS__SERVICE_CONNECTION__SETTINGS__ANONYMOUS_ALLOWED": "true",
    }
    config: dict[str, Any] = load_configuration_from_env(env)
    storage = MemoryStorage()
    connection_manager = MsalConnectionManager(**config)
    factory: Any = None
    if pooled:
        from bot.connector_pool import PooledClientFactory

        factory = PooledClientFactory(connection_manager)
        adapter = CloudAdapter(channel_service_client_factory=factory)
    else:
        adapter = CloudAdapter(connection_manager=connection_manager)
    authorization = Authorization(storage, connection_manager, **config)
    agent = AgentApplication[TurnState](
        storage=storage, authorization=authorization, start_typing_timer=False, **config
    )
    _register_echo(agent)

    async def messages(request: web.Request) -> web.StreamResponse:
        response = await start_agent_process(request, agent, adapter)
        return response if response is not None else web.Response(status=202)

    app = web.Application(middlewares=[jwt_authorization_middleware])
    app.router.add_post("/api/messages", messages)
    app.router.add_get("/healthz", _healthz)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app["agent_configuration"] = connection_manager.get_default_connection_configuration()

    if factory is not None:

        async def close_factory(_app: web.Application) -> None:
            await factory.aclose()

        app.on_cleanup.append(close_factory)
    return app


def _register_echo(agent: AgentApplication[TurnState]) -> None:
    """The echo routes: a message gets one reply; a card action one card update and a small card in the answer."""

    @agent.activity("message")
    async def on_message(context: TurnContext, _state: TurnState) -> None:
        await context.send_activity(f"echo: {context.activity.text}")

    @agent.adaptive_card.action_execute(re.compile(r"^.+$"))
    async def on_action(context: TurnContext, _state: TurnState, data: Any) -> AdaptiveCardInvokeResponse:
        card = {
            "type": "AdaptiveCard",
            "version": "1.5",
            "body": [
                {"type": "TextBlock", "text": f"echo: {data.get('actionId', '') if isinstance(data, dict) else ''}"}
            ],
        }
        if context.activity.reply_to_id:
            await context.update_activity(
                Activity(
                    type=ActivityTypes.message,
                    id=context.activity.reply_to_id,
                    attachments=[Attachment(content_type=CARD, content=card)],
                )
            )
        return AdaptiveCardInvokeResponse(status_code=200, type=CARD, value=card)

    @agent.error
    async def on_error(context: TurnContext, error: Exception) -> None:
        logging.getLogger("bench.echo").error("turn failed: %s", error)


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "pid": os.getpid()})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.echo")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pooled", action="store_true", help="use bot.connector_pool.PooledClientFactory")
    args = parser.parse_args()
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING"))
    web.run_app(build(args.pooled), host="127.0.0.1", port=args.port, print=lambda _msg: None, access_log=None)


if __name__ == "__main__":
    main()
