"""The bulk request card (``deprovision`` + a list): summary and confirmation, approval, progress, final list.

Pure: everything comes in as a :class:`BulkView`. The card carries only the batch id; the devices come from the
server's state. Phone first: counts per class at the top, then at most :data:`VISIBLE` device lines; the rest sits in
a hidden container that the card-level "Show all" button (``Action.ToggleVisibility``, no round trip) reveals.
Whatever the list, the card stays under :data:`MAX_BYTES` (Teams refuses cards over about 28 KB): lines are clipped,
and if a list is still too long its tail is summarised as "… and N more".
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bot import messages as m
from cards import verbs
from cards.deprovision import MAX_REFRESH_USERS, when
from cards.elements import (
    CardAction,
    Element,
    Refresh,
    card,
    choice_set,
    container,
    execute,
    facts,
    text,
    text_input,
    toggle,
)

#: Device lines shown before "Show all".
VISIBLE = 8
#: Stay well below Teams' ~28 KB card limit (the activity around the card needs room too).
MAX_BYTES = 24 * 1024
MORE_ID = "bulk-more"
SENT = ("submitted", "confirmed")
REMAINING = ("queued", "submitting")


@dataclass(frozen=True)
class BulkView:
    batch_id: str
    state: str  # requested | awaiting_approval | running | finished | cancelled | expired
    requester_name: str
    requester_mri: str
    items: Sequence[dict[str, Any]]  # the classified entries (bot/flow/bulk.py)
    reason: str | None = None
    preset_reason: str | None = None
    expires_at: float = 0.0
    updated_at: float = 0.0
    is_group: bool = False
    approval_mode: bool = False
    approver_name: str | None = None
    comment: str | None = None
    reasons: Sequence[str] = tuple(m.REASONS)
    #: Per device once the request runs: (name, serial, action state).
    results: Sequence[tuple[str, str, str]] = field(default_factory=tuple)
    note: str | None = None
    #: Peer mode: the eligible approvers among the conversation's members (they get their view by refresh).
    approver_mris: Sequence[str] = ()
    approval_channel: bool = False
    #: The approver's view: the digest of the devices their approval covers (items of class *ready*).
    covers: str = ""

    @property
    def ready(self) -> list[dict[str, Any]]:
        return [i for i in self.items if i.get("class") == "ready"]


def class_counts(items: Sequence[dict[str, Any]]) -> dict[str, int]:
    found = Counter(str(i.get("class")) for i in items)
    return {k: found[k] for k in m.BULK_CLASSES if found[k]}


def result_counts(results: Sequence[tuple[str, str, str]]) -> dict[str, int]:
    states = Counter(state for _, _, state in results)
    return {
        "sent": sum(states[s] for s in SENT),
        "failed": states["failed"],
        "unknown": states["unknown"],
        "remaining": sum(states[s] for s in REMAINING),
        "not_sent": states["cancelled"] + states["expired"],
    }


def _item_lines(view: BulkView) -> list[Element]:
    """Ready devices (name · serial · OU), then every other class with its entries and why."""
    lines: list[Element] = []
    for item in view.ready:
        device = item.get("device") or {}
        line = m.bulk_ready_line(
            str(device.get("name") or ""), str(device.get("serial") or ""), str(device.get("enrollment_profile") or "")
        )
        lines.append(text(line, spacing="none"))
    for klass in m.BULK_CLASSES:
        if klass == "ready":
            continue
        members = [i for i in view.items if i.get("class") == klass]
        if not members:
            continue
        lines.append(text(m.bulk_section(klass, len(members)), weight="bolder", spacing="small"))
        for item in members:
            detail = m.bulk_detail(
                klass, str(item.get("detail") or ""), str(item.get("requester") or ""), str(item.get("state") or "")
            )
            lines.append(text(m.bulk_other_line(klass, str(item.get("entry") or ""), detail), spacing="none"))
    return lines


def _result_lines(view: BulkView) -> list[Element]:
    lines: list[Element] = [text(m.BULK_RESULTS_TITLE, weight="bolder", spacing="small")]
    lines += [text(m.bulk_result_line(n, s, state), spacing="none") for n, s, state in view.results]
    return lines


def _collapse(lines: list[Element], keep: int) -> tuple[list[Element], list[Element]]:
    """(shown, hidden): the first ``keep`` lines, and the rest for the "Show all" container."""
    return lines[:keep], lines[keep:]


def _refresh(view: BulkView, *, always: bool = False) -> Refresh | None:
    """Personal views in a shared conversation: the requester's, and the approvers' while it waits for them."""
    if not view.is_group or (not always and view.state not in ("requested", "awaiting_approval", "running")):
        return None
    users = [view.requester_mri] if view.requester_mri else []
    if view.state == "awaiting_approval":
        users += [u for u in view.approver_mris if u and u != view.requester_mri]
    return {
        "action": execute("Refresh", verbs.REFRESH, {"batchId": view.batch_id}),
        "userIds": users[:MAX_REFRESH_USERS],
    }


def _head(view: BulkView, viewer: str) -> tuple[list[Element], list[CardAction], list[Element]]:
    """(body, actions, device lines) of the card for ``view.state``."""
    data = {"batchId": view.batch_id}
    counts = class_counts(view.items)
    ready = counts.get("ready", 0)
    if view.state in ("requested", "awaiting_approval", "expired") or not view.results:
        title = {
            "awaiting_approval": m.BULK_TITLE_WAITING,
            "expired": m.BULK_TITLE_EXPIRED,
            "cancelled": m.BULK_TITLE_REJECTED if view.comment else m.BULK_TITLE_CANCELLED,
        }.get(view.state, m.bulk_title(ready) if ready else m.BULK_TITLE_NOTHING)
        if viewer != "requester" and not ready:
            title = _state_title(view)  # nothing they may read: the request as anyone sees it
        body: list[Element] = [
            text(title, weight="bolder", size="medium", color="accent" if view.state == "awaiting_approval" else None),
            text(m.card_requested_by(view.requester_name), subtle=True, spacing="none"),
            text(_intro(view, viewer, ready)),
            facts(m.bulk_counts_line(counts)),
        ]
        return body, _open_actions(view, viewer, data, ready, body), _item_lines(view)
    tally = result_counts(view.results)
    total = len(view.results)
    title = {
        "running": m.bulk_running_title(total),
        "cancelled": m.BULK_TITLE_CANCELLED,
    }.get(view.state, m.bulk_finished_title(total))
    pairs = [
        (m.FACT_DONE, str(tally["sent"])),
        (m.FACT_FAILED, str(tally["failed"])),
        (m.FACT_UNKNOWN, str(tally["unknown"])),
        (m.FACT_REMAINING if view.state == "running" else m.FACT_NOT_SENT, str(tally["remaining"] + tally["not_sent"])),
        (m.FACT_REASON, m.reason_label(view.reason)),
        *([(m.FACT_APPROVED_BY, view.approver_name)] if view.approval_mode and view.approver_name else []),
    ]
    body = [
        text(title, weight="bolder", size="medium", color="accent" if view.state == "running" else None),
        text(m.card_requested_by(view.requester_name), subtle=True, spacing="none"),
        facts(pairs),
    ]
    actions: list[CardAction] = []
    if view.state == "running":
        body.append(text(m.bulk_running(view.approver_name or view.requester_name)))
        if viewer == "requester":
            actions.append(execute(m.CARD_BUTTON_CANCEL, verbs.BULK_CANCEL, data, inputs="none"))
    elif view.state == "cancelled":
        body.append(text(m.bulk_cancelled(view.approver_name or view.requester_name, tally["not_sent"])))
    else:
        body.append(text(m.bulk_finished(tally["sent"], tally["failed"], tally["unknown"], tally["not_sent"])))
    others = [i for i in view.items if i.get("class") != "ready"]
    lines = _result_lines(view) + (_item_lines(dataclasses.replace(view, items=others)) if others else [])
    return body, actions, lines


def _open_actions(
    view: BulkView, viewer: str, data: dict[str, Any], ready: int, body: list[Element]
) -> list[CardAction]:
    """The buttons (and their inputs) of a request not yet running."""
    if view.state == "requested" and ready:
        if viewer != "requester":
            body.append(text(m.bulk_waiting_for(view.requester_name), subtle=True))
            return []
        choices = [(key, m.reason_label(key)) for key in view.reasons]
        body.append(choice_set(verbs.REASON_INPUT, m.CARD_REASON_LABEL, choices, view.preset_reason))
        body.append(text(m.card_expires(when(view.expires_at)), subtle=True, spacing="small"))
        button = m.bulk_button(ready, approval=view.approval_mode)
        confirm = execute(button, verbs.BULK_CONFIRM, data, style=None if view.approval_mode else "destructive")
        return [confirm, execute(m.CARD_BUTTON_CANCEL, verbs.BULK_CANCEL, data, inputs="none")]
    if view.state == "awaiting_approval":
        body.append(text(m.FACT_REASON + ": " + m.reason_label(view.reason)))
        body.append(text(m.bulk_awaiting(view.requester_name)))
        body.append(text(m.card_approval_expires(when(view.expires_at)), subtle=True))
        if viewer == "requester":
            body.append(text(m.bulk_how_to_get_approval(view.is_group, view.approval_channel)))
            return [execute(m.CARD_BUTTON_WITHDRAW, verbs.BULK_CANCEL, data, inputs="none")]
        if viewer == "approver" and ready:
            body.append(text_input(verbs.COMMENT_INPUT, m.CARD_REJECT_COMMENT_LABEL))
            approve = m.bulk_approve_button(ready, len(view.items))
            return [
                execute(
                    approve, verbs.BULK_APPROVE, {**data, "covers": view.covers}, inputs="none", style="destructive"
                ),
                execute(m.CARD_BUTTON_REJECT, verbs.BULK_REJECT, data),
            ]
    if view.state == "cancelled" and view.comment:
        body.append(text(m.bulk_rejected(view.approver_name or m.NONE, view.comment)))
    elif view.state == "cancelled":
        body.append(text(m.card_cancelled(view.approver_name or view.requester_name)))
    elif view.state == "expired":
        body.append(text(m.card_expired()))
    return []


def _intro(view: BulkView, viewer: str, ready: int) -> str:
    if viewer == "requester":
        return m.bulk_intro(ready, len(view.items))
    return m.bulk_intro_other(len(view.items), ready if viewer == "approver" else None)


def _state_title(view: BulkView) -> str:
    """The title that names no device and no count."""
    return {
        "awaiting_approval": m.BULK_TITLE_WAITING,
        "running": m.BULK_TITLE_RUNNING,
        "finished": m.BULK_TITLE_FINISHED,
        "cancelled": m.BULK_TITLE_REJECTED if view.comment else m.BULK_TITLE_CANCELLED,
        "expired": m.BULK_TITLE_EXPIRED,
    }.get(view.state, m.BULK_TITLE_REQUEST)


def shared_card(view: BulkView) -> dict[str, Any]:
    """The message every member of a group chat or channel sees (``view.items`` unused): who asked and where the
    request stands — no device, no count (graph-intune.md §16). Each person's own view replaces it through
    ``refresh.userIds`` or the "Show my view" button."""
    rejected = view.state == "cancelled" and bool(view.comment)
    title = _state_title(view)
    by = view.approver_name or view.requester_name
    line = {
        "requested": m.bulk_waiting_for(view.requester_name),
        "awaiting_approval": m.bulk_awaiting(view.requester_name),
        "running": m.bulk_running(by),
        "finished": m.bulk_finished_shared(by),
        "cancelled": m.bulk_rejected(by, view.comment or "") if rejected else m.card_cancelled(by),
        "expired": m.card_expired(),
    }.get(view.state, m.bulk_waiting_for(view.requester_name))
    body: list[Element] = [
        text(title, weight="bolder", size="medium", color="accent" if view.state == "awaiting_approval" else None),
        text(m.card_requested_by(view.requester_name), subtle=True, spacing="none"),
        text(line),
        text(m.bulk_shared_note(), subtle=True),
    ]
    mine = execute(m.BULK_BUTTON_MY_VIEW, verbs.REFRESH, {"batchId": view.batch_id}, inputs="none")
    return card(body, [mine], refresh=_refresh(view, always=True), fallback_text=f"{m.PRODUCT}: {title}")


def bulk_card(view: BulkView, viewer: str) -> dict[str, Any]:
    """The card for ``view`` as ``viewer`` (requester | approver | other) sees it, always under :data:`MAX_BYTES`."""
    body, actions, lines = _head(view, viewer)
    if view.state in ("requested", "awaiting_approval") and view.ready:
        what = [text(m.CARD_WHAT_TITLE, weight="bolder")] + [text("• " + w, spacing="none") for w in m.WHAT_IT_DOES]
        body.insert(4, container(what, style="warning"))
    if view.note:
        body.append(text(view.note, color="attention", weight="bolder"))
    fallback = f"{m.PRODUCT}: {len(view.items)} devices — {view.state}"
    keep = len(lines)
    while True:
        shown, hidden = _collapse(lines[:keep], VISIBLE)
        omitted = len(lines) - keep
        if omitted:
            hidden = [*hidden, text(f"… and {omitted} more", subtle=True)]
        # The device lines go right after the counts (before the inputs), so a phone shows them first.
        parts: list[Element] = [*body[:4], *shown]
        extra: list[CardAction] = []
        if hidden:
            parts.append(container(hidden, id=MORE_ID, hidden=True))
            devices = len(view.items) + (len(view.results) - len(view.ready) if view.results else 0)
            extra.append(toggle(f"{m.BULK_SHOW_ALL} ({devices})", MORE_ID))
        built = card([*parts, *body[4:]], [*actions, *extra], refresh=_refresh(view), fallback_text=fallback)
        if len(json.dumps(built).encode()) <= MAX_BYTES or keep <= VISIBLE:
            return built
        keep = max(VISIBLE, keep - max(5, keep // 5))
