"""The deprovision card in each state, for each viewer. Pure: everything comes in as arguments.

Viewers: ``requester`` (may confirm/cancel/retry), ``approver`` (may approve/reject), ``other`` (read-only).
In group chats and channels the shared *base* card is rendered for ``other`` and carries a ``refresh`` naming
the people who get their own view (requester, and approvers in peer mode) by Teams user id (MRI).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot import messages as m
from cards import verbs
from cards.elements import (
    Color,
    Container,
    Element,
    ExecuteAction,
    Refresh,
    card,
    choice_set,
    container,
    execute,
    facts,
    text,
    text_input,
)

MAX_REFRESH_USERS = 60


@dataclass(frozen=True)
class ActionView:
    """What a card needs to know about one pending action (built by the workflow from the store)."""

    action_id: str
    state: str
    requester_name: str
    requester_mri: str
    device: dict[str, Any]
    reason: str | None = None
    preset_reason: str | None = None
    expires_at: float = 0.0
    updated_at: float = 0.0
    settled_at: float | None = None  # when Intune's record confirmed or failed it
    error_code: str | None = None
    intune_state: str | None = None  # pending | done | failed | not_confirmed (what Intune's record said last)
    approval_channel: bool = False  # approval requests are also posted to APPROVAL_CHANNEL_ID
    approver_name: str | None = None
    comment: str | None = None
    graph_request_id: str | None = None
    error_message: str | None = None
    retryable: bool = False
    is_group: bool = False
    approval_mode: bool = False
    approver_mris: tuple[str, ...] = ()
    tag_names: dict[str, str] = field(default_factory=dict)
    reasons: Sequence[str] = tuple(m.REASONS)
    note: str | None = None  # a one-off line for this viewer (e.g. "choose a reason", "only X can confirm")


def when(ts: float) -> str:
    """A time on a card: the viewer's own time zone and format (``m.local_when``); ``m.utc_when`` for plain text."""
    return m.local_when(ts)


def iso_when(value: str) -> str:
    """A Graph timestamp (ISO 8601) on a card; anything unparsable is shown as the (escaped) text it is."""
    if not value:
        return m.NONE
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value[:40]
    return when((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp())


def device_facts(device: dict[str, Any], tag_names: dict[str, str]) -> list[tuple[str, str]]:
    tags = [str(t) for t in device.get("scope_tag_ids") or []] or ["0"]
    user = device.get("user_display_name") or device.get("user_principal_name") or m.NO_PRIMARY_USER
    if device.get("user_display_name") and device.get("user_principal_name"):
        user = f"{device['user_display_name']} ({device['user_principal_name']})"
    return [
        (m.FACT_DEVICE, str(device.get("name") or m.NONE)),
        (m.FACT_SERIAL, str(device.get("serial") or m.NONE)),
        (m.FACT_USER, str(user)),
        (m.FACT_OU, str(device.get("enrollment_profile") or m.NONE)),
        (m.FACT_LAST_SYNC, iso_when(str(device.get("last_sync") or ""))),
        (m.FACT_TAGS, ", ".join(tag_names.get(t, t) for t in tags)),
    ]


def _refresh(view: ActionView) -> Refresh | None:
    if not view.is_group or view.state not in ("requested", "awaiting_approval", "failed"):
        return None
    users = [view.requester_mri] if view.requester_mri else []
    if view.state == "awaiting_approval":
        users += [u for u in view.approver_mris if u and u != view.requester_mri]
    return {
        "action": execute("Refresh", verbs.REFRESH, {"actionId": view.action_id}),
        "userIds": users[:MAX_REFRESH_USERS],
    }


def _what_it_does(view: ActionView) -> Container:
    lines: list[Element] = [text(m.CARD_WHAT_TITLE, weight="bolder")]
    lines += [text("• " + line, spacing="none") for line in m.WHAT_IT_DOES]
    return container(lines, style="warning")


def action_card(view: ActionView, viewer: str) -> dict[str, Any]:
    """The card for ``view`` as ``viewer`` (requester | approver | other) sees it."""
    builder = {
        "requested": _requested,
        "awaiting_approval": _awaiting,
        "submitting": _working,
        "submitted": _done,
        "confirmed": _done,
        "failed": _failed,
        "unknown": _unknown,
        "cancelled": _closed,
        "expired": _closed,
    }[view.state]
    body, actions = builder(view, viewer)
    if view.note:
        body.append(text(view.note, color="attention", weight="bolder"))
    name = view.device.get("name", "")
    return card(
        body,
        actions,
        refresh=_refresh(view),
        fallback_text=f"{m.PRODUCT}: {name} — {m.state_label(view.state)} ({m.utc_when(view.updated_at)})",
    )


def _header(
    title: str, view: ActionView, *, color: Color | None = None, extra: list[tuple[str, str]] | None = None
) -> list[Element]:
    """Title, requester and ONE fact list (device facts + state facts line up on a phone)."""
    return [
        text(title, weight="bolder", size="medium", color=color),
        text(m.card_requested_by(view.requester_name), subtle=True, spacing="none"),
        facts(device_facts(view.device, view.tag_names) + (extra or [])),
    ]


def _requested(view: ActionView, viewer: str) -> tuple[list[Element], list[ExecuteAction]]:
    body = _header(m.CARD_TITLE_CONFIRM, view)
    body.append(_what_it_does(view))
    if viewer != "requester":
        body.append(text(m.card_waiting_for(view.requester_name), subtle=True))
        return body, []
    choices = [(key, m.reason_label(key)) for key in view.reasons]
    body.append(choice_set(verbs.REASON_INPUT, m.CARD_REASON_LABEL, choices, view.preset_reason))
    body.append(text(m.LICENCE_NOTE, subtle=True))
    body.append(text(m.card_expires(when(view.expires_at)), subtle=True, spacing="small"))
    data = {"actionId": view.action_id}
    if view.approval_mode:  # confirming only asks a second person: nothing is sent to Intune yet
        confirm = execute(m.CARD_BUTTON_REQUEST_APPROVAL, verbs.CONFIRM, data)
    else:
        confirm = execute(m.CARD_BUTTON_CONFIRM, verbs.CONFIRM, data, style="destructive")
    return body, [confirm, execute(m.CARD_BUTTON_CANCEL, verbs.CANCEL, data, inputs="none")]


def _awaiting(view: ActionView, viewer: str) -> tuple[list[Element], list[ExecuteAction]]:
    body = _header(m.CARD_TITLE_WAITING, view, color="accent", extra=[(m.FACT_REASON, m.reason_label(view.reason))])
    body.append(text(m.card_awaiting(view.requester_name)))
    body.append(text(m.card_approval_expires(when(view.expires_at)), subtle=True))
    if viewer == "requester":
        body.append(text(m.card_how_to_get_approval(view.is_group, view.approval_channel)))
        withdraw = execute(m.CARD_BUTTON_WITHDRAW, verbs.CANCEL, {"actionId": view.action_id}, inputs="none")
        return body, [withdraw]
    if viewer != "approver":
        return body, []
    body.append(text(m.card_approver_hint(), weight="bolder"))
    body.append(text_input(verbs.COMMENT_INPUT, m.CARD_REJECT_COMMENT_LABEL))
    data = {"actionId": view.action_id}
    return body, [
        execute(m.CARD_BUTTON_APPROVE, verbs.APPROVE, data, inputs="none", style="destructive"),
        execute(m.CARD_BUTTON_REJECT, verbs.REJECT, data),
    ]


def _working(view: ActionView, viewer: str) -> tuple[list[Element], list[ExecuteAction]]:
    body = _header(
        m.CARD_TITLE_WORKING,
        view,
        color="accent",
        extra=[(m.FACT_REASON, m.reason_label(view.reason)), *_approved_by(view)],
    )
    body.append(text(m.card_working(view.approver_name or view.requester_name)))
    return body, []


def _approved_by(view: ActionView) -> list[tuple[str, str]]:
    return [(m.FACT_APPROVED_BY, view.approver_name)] if view.approval_mode and view.approver_name else []


def _done(view: ActionView, viewer: str) -> tuple[list[Element], list[ExecuteAction]]:
    """Sent to Intune (204, waiting for Google) or confirmed by Intune's own record."""
    confirmed = view.state == "confirmed"
    extra = [
        (m.FACT_REASON, m.reason_label(view.reason)),
        (m.FACT_WHEN, when(view.updated_at)),
        *_approved_by(view),
        *([(m.FACT_CONFIRMED, when(view.settled_at))] if confirmed and view.settled_at else []),
        (m.FACT_REQUEST_ID, view.graph_request_id or m.NONE),
    ]
    if confirmed:
        title = m.CARD_TITLE_DONE
    elif view.intune_state == "not_confirmed":
        title = m.CARD_TITLE_NOT_CONFIRMED
    else:
        title = m.CARD_TITLE_SENT
    body = _header(title, view, extra=extra)
    sender = view.approver_name if view.approval_mode and view.approver_name else view.requester_name
    if view.approval_mode and view.approver_name:
        body.append(text(m.card_done_approved(view.requester_name, view.approver_name, when(view.updated_at))))
    if confirmed and view.settled_at:
        body.append(text(m.card_confirmed(when(view.settled_at))))
    elif view.intune_state == "not_confirmed":
        body.append(text(m.card_not_confirmed()))
    else:
        body.append(text(m.card_sent(sender or view.requester_name, when(view.updated_at))))
    body.append(text(m.FACTORY_RESET_REMINDER, weight="bolder"))
    return body, []


def _failed(view: ActionView, viewer: str) -> tuple[list[Element], list[ExecuteAction]]:
    extra = [(m.FACT_REASON, m.reason_label(view.reason)), (m.FACT_WHEN, when(view.updated_at))]
    title = m.CARD_TITLE_INTUNE_FAILED if view.error_code == "intune_failed" else m.CARD_TITLE_FAILED
    body = _header(title, view, color="attention", extra=extra)
    if view.retryable:
        body.append(text(m.card_failed_retry()))
        if viewer == "requester":
            retry = execute(
                m.CARD_BUTTON_RETRY, verbs.RETRY, {"actionId": view.action_id}, inputs="none", style="destructive"
            )
            return body, [retry]
        return body, []
    body.append(text(m.card_failed(view.error_message or m.NONE)))
    return body, []


def _unknown(view: ActionView, viewer: str) -> tuple[list[Element], list[ExecuteAction]]:
    extra = [(m.FACT_REASON, m.reason_label(view.reason)), (m.FACT_WHEN, when(view.updated_at))]
    if view.intune_state == "not_confirmed":
        body = _header(m.CARD_TITLE_NOT_CONFIRMED, view, color="attention", extra=extra)
        body.append(text(m.card_not_confirmed()))
        return body, []
    body = _header(m.CARD_TITLE_UNKNOWN, view, color="attention", extra=extra)
    body.append(text(m.card_unknown(str(view.device.get("serial") or view.device.get("name") or ""))))
    return body, []


def _closed(view: ActionView, viewer: str) -> tuple[list[Element], list[ExecuteAction]]:
    if view.state == "expired":
        body = _header(m.CARD_TITLE_EXPIRED, view)
        body.append(text(m.card_expired()))
    elif view.comment:
        body = _header(m.CARD_TITLE_REJECTED, view)
        body.append(text(m.card_rejected(view.approver_name or m.NONE, view.comment)))
    else:
        body = _header(m.CARD_TITLE_CANCELLED, view)
        body.append(text(m.card_cancelled(view.approver_name or view.requester_name)))
    return body, []


def message_card(title: str, lines: Sequence[str], *, color: Color | None = None) -> dict[str, Any]:
    """A plain informational card (used as an invoke answer for foreign/expired cards)."""
    return card([text(title, weight="bolder", color=color), *[text(line) for line in lines]], fallback_text=title)
