"""A Bot Connector capture server in its own process (the bench's stand-in for Teams' connector service).

Same routes as ``tests.harness.Connector`` (send, reply, update, members, create conversation), kept cheap: bodies are
stored raw and parsed only when the orchestrator asks. Control routes:

* ``GET /_stats`` → ``{"sends", "updates", "other"}``
* ``GET /_actions`` → the action ids of the confirmation cards sent since the last reset, with the message id (and
  under ``batches`` the batch ids of bulk summary cards)
* ``POST /_reset`` → forget everything

``python -m bench.connector --port N`` prints ``{"url": ...}`` on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
from typing import Any

from aiohttp import web

CARD = "application/vnd.microsoft.card.adaptive"


def action_id_of(card: dict[str, Any]) -> str:
    for action in card.get("actions", []) or []:
        data = action.get("data") or {}
        if isinstance(data, dict) and "actionId" in data:
            return str(data["actionId"])
    refresh = card.get("refresh") or {}
    return str(((refresh.get("action") or {}).get("data") or {}).get("actionId", ""))


def batch_id_of(card: dict[str, Any]) -> str:
    """The batch id a bulk summary card's buttons carry (``bench.bulk``)."""
    for action in card.get("actions", []) or []:
        data = action.get("data") or {}
        if isinstance(data, dict) and "batchId" in data:
            return str(data["batchId"])
    return ""


class CaptureConnector:
    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.sends: list[tuple[str, str, bytes]] = []  # (conversation id, assigned message id, raw body)
        self.updates = 0
        self.other = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/v3/conversations/{cid}/activities", self.send)
        app.router.add_post("/v3/conversations/{cid}/activities/{aid}", self.send)
        app.router.add_put("/v3/conversations/{cid}/activities/{aid}", self.update)
        app.router.add_get("/v3/conversations/{cid}/members", self.members)
        app.router.add_post("/v3/conversations", self.create)
        app.router.add_get("/_stats", self.stats)
        app.router.add_get("/_actions", self.actions)
        app.router.add_post("/_reset", self.reset)
        return app

    async def send(self, request: web.Request) -> web.Response:
        body = await request.read()
        activity_id = f"msg-{next(self.ids)}"
        self.sends.append((request.match_info["cid"], activity_id, body))
        return web.json_response({"id": activity_id})

    async def update(self, request: web.Request) -> web.Response:
        await request.read()
        self.updates += 1
        return web.json_response({"id": request.match_info["aid"]})

    async def members(self, request: web.Request) -> web.Response:
        self.other += 1
        return web.json_response([])

    async def create(self, request: web.Request) -> web.Response:
        await request.read()
        self.other += 1
        return web.json_response({"id": f"conv-{next(self.ids)}", "activityId": f"msg-{next(self.ids)}"})

    async def stats(self, _request: web.Request) -> web.Response:
        return web.json_response({"sends": len(self.sends), "updates": self.updates, "other": self.other})

    async def actions(self, _request: web.Request) -> web.Response:
        found: list[dict[str, str]] = []
        batches: list[dict[str, str]] = []
        texts: dict[str, int] = {}
        for conversation_id, activity_id, raw in self.sends:
            body = json.loads(raw)
            cards = [a.get("content") or {} for a in body.get("attachments") or [] if a.get("contentType") == CARD]
            action_id = next((action_id_of(c) for c in cards if action_id_of(c)), "")
            batch_id = next((batch_id_of(c) for c in cards if batch_id_of(c)), "")
            if action_id:
                found.append({"action_id": action_id, "activity_id": activity_id, "conversation_id": conversation_id})
            elif batch_id:
                batches.append({"batch_id": batch_id, "activity_id": activity_id, "conversation_id": conversation_id})
            else:
                text = str(body.get("text") or "")[:80]
                texts[text] = texts.get(text, 0) + 1
        return web.json_response({"actions": found, "batches": batches, "other_texts": texts})

    async def reset(self, _request: web.Request) -> web.Response:
        self.sends.clear()
        self.updates = 0
        self.other = 0
        return web.json_response({"ok": True})


async def serve(port: int) -> None:
    connector = CaptureConnector()
    runner = web.AppRunner(connector.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(json.dumps({"url": f"http://127.0.0.1:{port}/"}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.connector")
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
