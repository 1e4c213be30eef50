"""Informational cards: help, "which device?", status, history, pending approvals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot import messages as m
from cards import verbs
from cards.deprovision import device_facts, iso_when, when
from cards.elements import Element, ExecuteAction, card, container, execute, facts, text


def help_card() -> dict[str, Any]:
    rows = [(f"{cmd}", what) for cmd, what in m.HELP_LINES]
    return card(
        [text(m.PRODUCT, weight="bolder", size="medium"), text(m.HELP_TITLE, subtle=True), facts(rows)],
        fallback_text=m.HELP_FALLBACK,
    )


def selection_card(query: str, total: int, selection_id: str, candidates: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One button per candidate; the button carries only the selection id and an index."""
    body: list[Element] = [
        text(m.CARD_SELECT_TITLE, weight="bolder", size="medium"),
        text(m.ambiguous(query, total)),
    ]
    actions: list[ExecuteAction] = []
    for index, device in enumerate(candidates):
        user = device.get("user_display_name") or device.get("user_principal_name") or m.NO_PRIMARY_USER
        body.append(
            container(
                [
                    text(
                        m.selection_line(index + 1, str(device.get("name") or m.NONE), str(device.get("serial") or "")),
                        weight="bolder",
                    ),
                    text(
                        m.selection_detail(str(user), iso_when(str(device.get("last_sync") or ""))),
                        subtle=True,
                        spacing="none",
                    ),
                ]
            )
        )
        actions.append(
            execute(
                f"{index + 1}. {device.get('serial') or device.get('name')}",  # a button title: plain text
                verbs.SELECT,
                {"selectionId": selection_id, "index": index},
                inputs="none",
            )
        )
    body.append(text(m.card_select_hint(), subtle=True))
    return card(body, actions, fallback_text=m.ambiguous(query, total))


def status_card(
    device: dict[str, Any],
    tag_names: dict[str, str],
    *,
    operating_system: str,
    management_state: str,
    chrome_state: str,
    last_action: str,
    intune_record: str = "",
) -> dict[str, Any]:
    """``intune_record``: Intune's own record of the latest deprovision (state, initiated by, time)."""
    rows = [
        *device_facts(device, tag_names),
        (m.FACT_OS, operating_system or m.NONE),
        (m.FACT_STATE, management_state or m.NONE),
        (m.FACT_CHROME_STATE, chrome_state or m.NONE),
        (m.FACT_INTUNE_RECORD, intune_record or m.NONE),
        (m.FACT_LAST_ACTION, last_action or m.NONE),
    ]
    title = m.status_title(str(device.get("name") or ""))
    return card([text(title, weight="bolder", size="medium"), facts(rows)], fallback_text=title)


def history_card(title: str, rows: Sequence[tuple[str | float, str]]) -> dict[str, Any]:
    """``rows``: (when — a Unix time, shown in the viewer's time zone, or a ready label —, what happened)."""
    pairs = [(when(at) if isinstance(at, (int, float)) else at, what) for at, what in rows]
    return card([text(title, weight="bolder", size="medium"), facts(pairs)], fallback_text=title)


def pending_card(
    title: str,
    items: Sequence[tuple[str, str, str, float]],
    bulk: Sequence[tuple[str, str, str, float]] = (),
) -> dict[str, Any]:
    """``items``: (action id, device name, one-line summary (``Markup`` from ``m.pending_row``; a plain ``str`` is
    escaped), expires at); ``bulk``: the same for bulk requests (batch id, button label, summary, expires at)."""
    body: list[Element] = [text(title, weight="bolder", size="medium")]
    actions: list[ExecuteAction] = []
    rows = [(i, n, s, e, "actionId") for i, n, s, e in items] + [(i, n, s, e, "batchId") for i, n, s, e in bulk]
    for item_id, device_name, summary, expires_at, key in rows[:10]:
        body.append(text(m.pending_line(summary, when(expires_at))))
        label = device_name if len(device_name) <= 40 else device_name[:39] + "…"
        actions.append(execute(f"Open {label}", verbs.REFRESH, {key: item_id}, inputs="none"))
    return card(body, actions, fallback_text=title)
