"""Teams-shaped activities for the load (a trimmed copy of ``tests.harness.activity``, so the bench does not import
the test package)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

TENANT = "00000000-0000-0000-0000-0000000000001"
BOT_ID = "28:00000000-0000-0000-0000-00000000000011"
ALEX_ID = "00000000-0000-0000-0000-0000000000020"  # Help Desk Operator, all devices
ALEX_NAME = "Alex Wilber"
CONFIRM = "deprovision.confirm"  # cards.verbs.CONFIRM
REASON = "retiring_device"


def activity(kind: str, *, service_url: str, conversation_id: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": kind,
        "id": str(uuid.uuid4()),
        "timestamp": datetime.now(UTC).isoformat(),
        "channelId": "msteams",
        "serviceUrl": service_url,
        "from": {"id": f"29:{ALEX_ID}", "name": ALEX_NAME, "aadObjectId": ALEX_ID},
        "recipient": {"id": BOT_ID, "name": "Device Deprovision"},
        "conversation": {
            "id": conversation_id,
            "conversationType": "personal",
            "tenantId": TENANT,
            "isGroup": False,
        },
        "channelData": {"tenant": {"id": TENANT}},
        "locale": "en-US",
    }
    body.update(fields)
    return body


def conversation_for(index: int) -> str:
    """One personal chat per device slot (many operators in parallel, all with Alex's rights)."""
    return f"a:1personal-bench-{index:05d}"


def message(service_url: str, index: int, text: str) -> dict[str, Any]:
    return activity("message", service_url=service_url, conversation_id=conversation_for(index), text=text)


def execute(service_url: str, conversation_id: str, verb: str, data: dict[str, Any], reply_to: str) -> dict[str, Any]:
    """The invoke Teams sends when a button with ``verb`` and ``data`` is pressed on the card ``reply_to``."""
    return activity(
        "invoke",
        service_url=service_url,
        conversation_id=conversation_id,
        name="adaptiveCard/action",
        replyToId=reply_to,
        value={"action": {"type": "Action.Execute", "verb": verb, "data": data}, "trigger": "manual"},
    )


def confirm(service_url: str, conversation_id: str, action_id: str, reply_to: str) -> dict[str, Any]:
    return execute(service_url, conversation_id, CONFIRM, {"actionId": action_id, "reason": REASON}, reply_to)
