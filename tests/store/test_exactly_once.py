"""Two bot processes sharing one PostgreSQL receive the same Confirm click at once: Graph is called once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bot.audit import AuditLog, load_audit_key
from bot.store import SUBMITTED, Store
from simulator import Simulator
from tests.harness import ALEX, CARD, Connector, env_for
from tests.store.processes import bot_processes, confirm_click, new_process

#: ChromeOS devices in simulator/seeds/demo.yaml (Northside High carts) that Alex, Help Desk Operator on all
#: devices, may deprovision.
SERIALS = (
    "5CD0832TGL",
    "5CD6259KKH",
    "5CD1954KJN",
    "5CD7850KXP",
    "5CD2597QCE",
    "5CD3206NXN",
    "5CD3991UEA",
    "5CD3127EWS",
    "5CD9873PDN",
    "5CD4564FLY",
)


async def test_same_click_on_two_instances_calls_graph_once(
    sim: Simulator, connector: Connector, pg_url: str, tmp_path: Path
) -> None:
    env = env_for(sim, pg_url, LOG_FORMAT="json")
    async with bot_processes() as started:
        a = new_process(started, "instance-a", env, tmp_path, connector)
        b = new_process(started, "instance-b", env, tmp_path, connector)
        await asyncio.gather(a.start(), b.start())

        requests = [await a.request(ALEX, serial) for serial in SERIALS]
        assert len({action_id for action_id, _ in requests}) == len(SERIALS)

        clicks_per_action: list[int] = []
        for i, (action_id, card_activity_id) in enumerate(requests):
            body = confirm_click(ALEX, connector, action_id, card_activity_id)
            # Both instances at once; every third action each instance gets the click twice (Teams retrying).
            targets = [a, b, b, a] if i % 3 == 0 else ([b, a] if i % 2 else [a, b])
            answers = await asyncio.gather(*(target.post(body) for target in targets))
            clicks_per_action.append(len(targets))
            for status, answer in answers:
                assert status == 200, (status, answer, a.log_tail(), b.log_tail())
                assert isinstance(answer, dict) and answer.get("type") == CARD, answer
                assert answer["value"]["type"] == "AdaptiveCard"

        store = await Store.open(pg_url)
        try:
            actions = [await store.get(action_id) for action_id, _ in requests]
            # the winner's Graph call may still be finishing after the invoke budget
            for _ in range(100):
                if all(x is not None and x.state == SUBMITTED for x in actions):
                    break
                await asyncio.sleep(0.1)
                actions = [await store.get(action_id) for action_id, _ in requests]
            logs = a.log_tail() + "\n" + b.log_tail()
            for action in actions:
                assert action is not None
                assert action.state == SUBMITTED, (action.device_serial, action.state, action.error_message, logs)
                assert action.version == 3, action  # requested → submitting → submitted, nothing else
                posts = sim.deprovision_posts(action.device_id)
                assert len(posts) == 1, (action.device_serial, len(posts))
                assert posts[0].body == {"deprovisionReason": "retiring_device"}, posts[0].body
            assert len(sim.deprovision_posts()) == len(SERIALS)
            assert await store.count(SUBMITTED) == len(SERIALS)
            assert sum(clicks_per_action) > 2 * len(SERIALS)

            audit = AuditLog(store, load_audit_key(None, pg_url))
            assert await audit.verify() == (True, [])
            for action in actions:
                assert action is not None
                events = [row["event"] for row in await audit.for_action(action.id)]
                assert events == ["requested", "confirmed", "submitted", "succeeded"], events
        finally:
            await store.close()

        # both instances logged JSON, and both really served clicks
        for process in (a, b):
            lines = [json.loads(line) for line in process.log_path.read_text().splitlines() if line.startswith("{")]
            invokes = [line for line in lines if line.get("msg") == "request" and line.get("type") == "invoke"]
            assert invokes, process.log_tail()
