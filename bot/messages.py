"""Every word a user sees, in one place (ready for localisation). Tests assert on these functions.

Constants (titles, labels, fact names) are plain text. Every function marked ``@_markup`` returns
:class:`~bot.markup.Markup`: Teams markdown in which each interpolated value went through :func:`md` (or
:func:`plain` inside a code span), so cards and chat messages use it as it is. Card builders pass raw values from
Graph and chat, never ``md()`` them: ``cards/elements.py`` escapes every plain ``str`` itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import ParamSpec

from bot.decision import Decision, DenyReason
from bot.markup import Markup as Markup  # re-exported: callers escape through this module
from bot.markup import md as md
from bot.markup import plain as plain

PRODUCT = "Device Deprovision"

_P = ParamSpec("_P")


def _markup(build: Callable[_P, str]) -> Callable[_P, Markup]:
    """Mark what ``build`` returns as trusted markdown (it escapes every value it interpolates)."""

    @functools.wraps(build)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Markup:
        return Markup(build(*args, **kwargs))

    return wrapper


#: The command placeholder, readable in a card and in a chat message (a bare ``<device>`` is taken for an HTML
#: tag and vanishes; inside a code span Teams shows ``&lt;device&gt;``).
DEPROVISION_COMMAND = "**deprovision \\<device\\>**"


def utc_when(ts: float) -> str:
    """A time for plain text (chat messages, a card's fallback text): UTC, spelled out."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC") if ts else NONE


def local_when(ts: float) -> Markup:
    """A time on a card, shown in the viewer's own time zone and format (Adaptive Cards ``DATE``/``TIME``)."""
    if not ts:
        return Markup(NONE)
    iso = datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Markup(f"{{{{DATE({iso}, SHORT)}}}} {{{{TIME({iso})}}}}")


#: Google's four deprovision reasons: key → (label, what it means for licences).
REASONS: dict[str, tuple[str, str]] = {
    "same_model_replacement": (
        "Same model replacement (RMA / warranty swap)",
        "An upgrade bought separately can be reused by the replacement device.",
    ),
    "different_model_replacement": (
        "Different model replacement",
        "Upgrades bundled with this device do not transfer to the new model.",
    ),
    "retiring_device": (
        "Retiring device (donated, recycled or out of use)",
        "The device's licence is not freed for reuse; bundled upgrades end with the device.",
    ),
    "upgrade_transfer": (
        "Upgrade transfer (ChromeOS Flex → Chromebook, within a year)",
        "The upgrade moves to the new Chromebook.",
    ),
}

WHAT_IT_DOES = (
    "The device stays in Intune and in the Google Admin console, where its status becomes Deprovisioned.",
    "Google device policies, device-level printers and kiosk settings are removed; policy sync stops.",
    "The device cannot enrol again until it is factory reset (powerwash).",
)
ROLES_THAT_WORK = (
    "Help Desk Operator, School Administrator, or a custom Intune role with "
    "Remote tasks / Retire and Managed devices / Read"
)
LICENCE_NOTE = (
    "Licences: after a same-model replacement, an upgrade bought separately can move to the new device; "
    "upgrades bundled with a device never transfer."
)
FACTORY_RESET_REMINDER = "Reminder: the device must be factory reset (powerwash) before it can enrol again."

HELP_TITLE = "What I can do"
HELP_LINES = (
    ("deprovision <device>", "name, serial number, Intune device id or Entra device id"),
    ("deprovision <device> reason: <reason>", "preselect a reason, e.g. “reason: retiring device”"),
    (
        "deprovision <device>, <device>, …",
        "several at once (up to 100): separate them with new lines, commas or semicolons, or paste a column "
        "(a header such as “serial” is skipped); one line with spaces is tried as one device name first",
    ),
    ("status <device>", "device facts, ChromeOS state and the last action I took on it"),
    ("history [<device>]", "the last 10 actions: for a device, or your own"),
    ("pending", "requests waiting for approval"),
    ("help", "this message"),
)


#: A card's fallback text is plain text (notifications, clients that cannot render the card).
HELP_FALLBACK = f"{PRODUCT} — commands: " + "; ".join(cmd for cmd, _ in HELP_LINES)


def reason_label(key: str | None) -> str:
    return REASONS[key][0] if key in REASONS else (key or "—")


@_markup
def help_text() -> str:
    lines = [f"**{PRODUCT}** — deprovision ChromeOS devices in Intune.", ""]
    lines += [f"- **{md(cmd)}** — {md(what)}" for cmd, what in HELP_LINES]
    return "\n".join(lines)


@_markup
def welcome() -> str:
    return (
        f"Hi! I'm **{PRODUCT}**. I deprovision ChromeOS devices in Microsoft Intune after a confirmation. "
        "Type `help` to see what I can do."
    )


@_markup
def unknown_command(text: str, suggestion: str | None = None) -> str:
    """One answer for text that is no command: a "did you mean" for a mistyped command word, else the help."""
    if suggestion:
        rest = text.partition(" ")[2].strip()
        example = plain(f"{suggestion} {rest}".strip()[:80])
        return f"I didn't understand “{md(text[:60])}”. Did you mean `{example}`? Type `help` to see what I can do."
    return f"I didn't understand “{md(text[:60])}”. " + help_text()


USAGE = {
    "deprovision": DEPROVISION_COMMAND + " — its name, serial number, Intune device id or Entra device id",
    "status": "**status \\<device\\>** — its name, serial number, Intune device id or Entra device id",
    "history": "**history** or **history \\<device\\>**",
    "pending": "**pending**",
}


@_markup
def usage(problem: str, command: str = "deprovision") -> str:
    return {
        "empty": f"Tell me which device: {USAGE.get(command, USAGE['deprovision'])}.",
        "too_long": f"That device is too long for `{command}`. Use a device name, serial number or id (up to 128 characters).",
        "control": f"That `{command}` contains characters I can't use in a device name. Type the name or serial plainly.",
        "message_too_long": f"That `{command}` message is too long (over 1,000 characters). Type a shorter command — `help` lists them.",
        "list_too_long": f"That `{command}` message is too long (over 30,000 characters). Nothing was done. Send the list in smaller parts.",
    }.get(problem, help_text())


@_markup
def unknown_reason(text: str) -> str:
    options = ", ".join(f"`{k.replace('_', ' ')}`" for k in REASONS)
    return f"“{md(text[:40])}” is not a deprovision reason. Use one of: {options}."


@_markup
def not_found(query: str) -> str:
    """The one answer for "no such device" and "a device you may not see" alike (least disclosure)."""
    return (
        f"No device you can manage matches **{md(query)}** (I checked Intune device id, Entra device id, serial "
        "number and device name, exactly). Check the spelling, or use the serial number."
    )


@_markup
def suggest_intro(query: str) -> str:
    """A near miss: the one not-found answer, then devices with a similar name or serial that you can manage."""
    return f"{not_found(query)} Did you mean one of these?"


@_markup
def ambiguous(query: str, count: int) -> str:
    more = f" (showing the first 10 of {count})" if count > 10 else ""
    return f"**{md(query)}** matches {count} devices{more}. Pick the right one — or use its serial number."


@_markup
def lookup_incomplete(query: str) -> str:
    return (
        f"Intune returned too many devices for **{md(query)}** to check them all safely. "
        "Use the serial number or the Intune device id."
    )


@_markup
def not_chromeos(name: str, os_name: str) -> str:
    return (
        f"**{md(name)}** runs {md(os_name) if os_name else 'an unknown operating system'}, not ChromeOS. "
        "I only deprovision ChromeOS devices; use the Intune admin center for other platforms."
    )


@_markup
def denied(decision: Decision, device_name: str) -> str:
    held = ", ".join(md(r) for r in decision.roles_held) if decision.roles_held else "no Intune role"
    reason = decision.reason
    if reason == DenyReason.NOT_ALLOWED:
        why = f"your role **{md(decision.role_name)}** explicitly does not allow Remote tasks / Retire or Managed devices / Read"
    elif reason == DenyReason.MISSING_READ:
        why = f"your role **{md(decision.role_name)}** has Remote tasks / Retire but lacks Managed devices / Read"
    elif reason == DenyReason.OUT_OF_SCOPE_GROUPS:
        why = (
            f"**{md(device_name)}** is outside the scope (groups) of your assignment **{md(decision.assignment_name)}**"
        )
    elif reason == DenyReason.OUT_OF_SCOPE_TAGS:
        why = f"**{md(device_name)}** has scope tags that your assignment **{md(decision.assignment_name)}** does not cover"
    else:
        why = f"none of your Intune roles ({held}) includes Remote tasks / Retire"
    fix = {
        DenyReason.OUT_OF_SCOPE_GROUPS: "Ask an Intune administrator to add the device's group to your assignment.",
        DenyReason.OUT_OF_SCOPE_TAGS: "Ask an Intune administrator to add the device's scope tag to your assignment.",
    }.get(
        reason or DenyReason.NO_ROLE,
        f"To deprovision you need {ROLES_THAT_WORK}. Ask an Intune administrator.",
    )
    return f"You can't deprovision **{md(device_name)}**: {why}. {fix}"


@_markup
def denied_read(command: str) -> str:
    return (
        f"Only people who can see devices in Intune (Managed devices / Read) can use `{plain(command)}`. "
        f"You need {ROLES_THAT_WORK}."
    )


@_markup
def rbac_unavailable() -> str:
    return "I couldn't verify your Intune permissions right now, so I did nothing. Please try again in a minute."


@_markup
def graph_unavailable() -> str:
    return "Microsoft Intune isn't answering right now. Nothing was changed. Please try again in a minute."


@_markup
def anonymous_user() -> str:
    return "I can only act for signed-in members of this organisation."


@_markup
def already_in_flight(device_name: str, requester: str, state: str) -> str:
    if state == "confirmed":
        return f"**{md(device_name)}** was already deprovisioned through me (requested by {md(requester)}). Type **status {md(device_name)}** for details."
    if state == "submitted":
        return f"**{md(device_name)}** was already sent to Intune for deprovisioning (requested by {md(requester)}); Intune has not confirmed it yet. Type **status {md(device_name)}** for details."
    if state == "unknown":
        return f"A deprovision request for **{md(device_name)}** by {md(requester)} may already have been carried out — I'm checking Intune's record, and the device stays locked until it settles."
    return f"A deprovision request for **{md(device_name)}** by {md(requester)} is already in progress."


@_markup
def busy() -> str:
    return "I'm handling a lot of requests right now. Nothing was changed. Please try again in a moment."


@_markup
def internal_error() -> str:
    return "Something went wrong on my side. Nothing was changed. Please try again."


# -- card texts --------------------------------------------------------------------------------------------

CARD_TITLE_CONFIRM = "Deprovision this ChromeOS device?"
CARD_TITLE_WAITING = "Waiting for approval"
CARD_TITLE_WORKING = "Deprovisioning…"
CARD_TITLE_SENT = "Sent to Intune — waiting for Google"
CARD_TITLE_DONE = "Deprovisioned — Intune confirmed"
CARD_TITLE_FAILED = "Deprovisioning failed"
CARD_TITLE_INTUNE_FAILED = "Intune reports it failed"
CARD_TITLE_UNKNOWN = "Outcome unknown — checking Intune"
CARD_TITLE_NOT_CONFIRMED = "Not confirmed by Intune"
FACT_CONFIRMED = "Intune confirmed"
FACT_INTUNE_RECORD = "Intune's record"
CARD_TITLE_CANCELLED = "Cancelled"
CARD_TITLE_EXPIRED = "Expired"
CARD_TITLE_SUPERSEDED = "Replaced by a newer request"
CARD_TITLE_REJECTED = "Rejected"
CARD_TITLE_UNAVAILABLE = "Not available"
CARD_WHAT_TITLE = "What deprovisioning does"
CARD_REASON_LABEL = "Reason (required)"
CARD_REASON_PLACEHOLDER = "Choose a reason"
CARD_BUTTON_CONFIRM = "Deprovision"
CARD_BUTTON_REQUEST_APPROVAL = "Request approval"
CARD_BUTTON_CANCEL = "Cancel"
CARD_BUTTON_WITHDRAW = "Withdraw"
CARD_BUTTON_RETRY = "Retry"
CARD_BUTTON_APPROVE = "Approve"
CARD_BUTTON_REJECT = "Reject"
CARD_REJECT_COMMENT_LABEL = "Comment (required to reject)"
CARD_SELECT_TITLE = "Which device did you mean?"
CARD_SUGGEST_TITLE = "Did you mean …?"
MAX_SUGGESTIONS = 5
FACT_DEVICE = "Device"
FACT_SERIAL = "Serial"
FACT_USER = "Primary user"
FACT_OU = "Google OU"
FACT_LAST_SYNC = "Last sync"
FACT_TAGS = "Scope tags"
FACT_OS = "OS"
FACT_STATE = "Intune state"
FACT_CHROME_STATE = "ChromeOS status"
FACT_REQUESTED_BY = "Requested by"
FACT_REASON = "Reason"
FACT_WHEN = "When"
FACT_REQUEST_ID = "Graph request id"
FACT_APPROVED_BY = "Approved by"
FACT_LAST_ACTION = "Last action by this bot"
NO_PRIMARY_USER = "none (shared device)"
NONE = "—"


@_markup
def card_requested_by(name: str) -> str:
    return f"Requested by {md(name)}"


@_markup
def card_waiting_for(name: str) -> str:
    return f"Waiting for {md(name)} to confirm. Only {md(name)} can deprovision from this card."


@_markup
def card_only_requester(name: str) -> str:
    return f"Only {md(name)} can confirm or cancel this request."


@_markup
def card_expires(when: str) -> str:
    return f"This request expires at {md(when)} if not confirmed."


@_markup
def card_choose_reason() -> str:
    return "Choose a reason before you deprovision."


@_markup
def card_approval_expires(when: str) -> str:
    return f"This request expires at {md(when)} if nobody approves it."


@_markup
def card_done_approved(requester: str, approver: str, when: str) -> str:
    return f"Requested by {md(requester)}, approved by {md(approver)}; sent to Intune at {md(when)}."


@_markup
def card_sent(name: str, when: str) -> str:
    return (
        f"{md(name)} sent this to Intune at {md(when)}; Intune accepted it. Google finishes the deprovisioning — "
        "I'll update this card when Intune reports it done."
    )


@_markup
def card_confirmed(when: str) -> str:
    return f"Intune confirmed the deprovisioning at {md(when)}."


@_markup
def card_not_confirmed() -> str:
    return (
        "Intune has not reported an outcome within the time I wait. Check the device in the Intune admin center; "
        "an operator can record the outcome with `app.py actions resolve`."
    )


@_markup
def card_working(name: str) -> str:
    return f"Sent to Intune by {md(name)}. I'll update this card when Intune answers."


@_markup
def card_failed(message: str) -> str:
    return f"Intune did not deprovision the device: {md(message)}"


@_markup
def card_failed_retry() -> str:
    return "Intune asked me to try later. Nothing was changed; you can retry."


@_markup
def card_unknown(device_name: str) -> str:
    return (
        "Intune may have deprovisioned it; I'm checking. The answer to my request was lost (a timeout, a dropped "
        "connection or a server error), so I will not send it again: I'm reading Intune's own record and will update "
        f"this card. The device stays locked until then. **status {md(device_name)}** shows what Intune reports."
    )


@_markup
def card_cancelled(name: str) -> str:
    return f"Cancelled by {md(name)}. Nothing was changed."


def card_superseded(device_name: str, serial: str, requester: str) -> list[Markup]:
    """The lines of a request's card once a newer request for the device replaced it (no buttons)."""
    device = f"**{md(device_name)}**" + (f" (serial {md(serial)})" if serial and serial != device_name else "")
    return [
        Markup(f"Deprovision {device} — requested by {md(requester)}."),
        Markup(
            "A newer request for this device replaced this one, or another request for it was confirmed. "
            "Nothing was sent to Intune from this card; use the newest card."
        ),
    ]


@_markup
def card_expired() -> str:
    return "This request expired before it was confirmed. Nothing was changed."


@_markup
def card_how_to_get_approval(is_group: bool, channel: bool) -> str:
    """Tells the requester who can approve and how they learn of it."""
    who = f"Anyone else with {ROLES_THAT_WORK} on this device can approve"
    if channel:
        return f"{who}: the request is posted in the approvals channel, or they can type **pending** to me."
    if is_group:
        return f"{who}: eligible members of this chat see Approve on this card, and anyone can type **pending** to me."
    return (
        f"{who}. No approvals channel is set and this is a 1:1 chat, so nobody is told automatically: ask them to "
        "type **pending** to me."
    )


@_markup
def card_awaiting(requester: str) -> str:
    return (
        f"{md(requester)} confirmed. A second person with the right Intune role must approve before anything is sent."
    )


@_markup
def card_approver_hint() -> str:
    return "You can approve or reject this request."


@_markup
def card_cannot_approve_own() -> str:
    return "You requested this — someone else must approve it."


@_markup
def card_rejected(name: str, comment: str) -> str:
    return f"Rejected by {md(name)}: “{md(comment)}”. Nothing was changed."


@_markup
def card_reject_needs_comment() -> str:
    return "Add a comment to reject."


@_markup
def card_not_eligible(why: str) -> str:
    return f"You can't approve this request: {md(why)}"


@_markup
def card_unknown_request() -> str:
    return f"This card is no longer valid (unknown or foreign request). Type {DEPROVISION_COMMAND} to start again."


@_markup
def card_not_available() -> str:
    return f"This request isn't available to you. Type {DEPROVISION_COMMAND} to start your own."


@_markup
def card_device_changed() -> str:
    return (
        "The device changed in Intune since this card was sent (it is gone or no longer ChromeOS). Nothing was changed."
    )


@_markup
def card_select_hint() -> str:
    return "Pick the device you mean. Nothing happens until you confirm on the next card."


@_markup
def card_selection_used() -> str:
    return f"This choice was already made or has expired. Type {DEPROVISION_COMMAND} again."


@_markup
def not_eligible_group() -> str:
    return "you are not a member of the approvers group."


@_markup
def not_eligible_role(decision: Decision, device_name: str) -> str:
    return denied(decision, device_name).split(": ", 1)[-1]


@_markup
def proactive_unknown(device_name: str) -> str:
    return (
        f"Outcome unknown: I couldn't confirm whether **{md(device_name)}** was deprovisioned (I was interrupted while Intune "
        f"was handling it). I won't resend it. Type **status {md(device_name)}** to check."
    )


@_markup
def proactive_done(device_name: str) -> str:
    return f"**{md(device_name)}** was deprovisioned."


@_markup
def proactive_approved(device_name: str, approver: str) -> str:
    return f"{md(approver)} approved deprovisioning **{md(device_name)}**."


@_markup
def proactive_rejected(device_name: str, approver: str, comment: str) -> str:
    return f"{md(approver)} rejected deprovisioning **{md(device_name)}**: “{md(comment)}”."


@_markup
def approval_mentions(requester: str, device_name: str, approvers: Sequence[str]) -> str:
    """The group-chat notice that @mentions the eligible approvers (``<at>`` names match the mention entities)."""
    names = ", ".join(f"<at>{mention(n)}</at>" for n in approvers)
    return f"{names}: {md(requester)} asks to deprovision **{md(device_name)}** — you can approve or reject it on the card above."


def mention(name: str) -> str:
    """A display name as Teams expects it inside ``<at>…</at>`` (no markup, one line)."""
    return " ".join(name.replace("<", "").replace(">", "").split())[:100] or "someone"


@_markup
def history_empty(device: str | None) -> str:
    return f"No actions recorded for **{md(device)}**." if device else "You haven't requested any deprovisioning yet."


@_markup
def history_title(device: str | None) -> str:
    return f"Last actions for {md(device)}" if device else "Your last actions"


@_markup
def pending_empty() -> str:
    return "Nothing is waiting for your approval, and you have no requests waiting for someone else's."


@_markup
def pending_row(device_name: str, serial: str, requester: str, *, own: bool) -> str:
    who = "your request" if own else f"by {md(requester)}"
    return f"{md(device_name)} ({md(serial)}) — {who}"


@_markup
def history_row(device_name: str, serial: str, state: str, requester: str, reason: str | None) -> str:
    row = f"{md(device_name)} ({md(serial)}) — {md(state)} — {md(requester)}"
    return row + (f" — {md(reason_label(reason))}" if reason else "")


@_markup
def last_action(state: str, requester: str, at: float) -> str:
    return f"{md(state_label(state))} — {md(requester)}, {local_when(at)}"


@_markup
def pending_title(count: int) -> str:
    return f"{count} request(s) waiting for approval"


@_markup
def status_title(name: str) -> str:
    return f"Status of {md(name)}"


def state_label(state: str) -> str:
    return {
        "requested": "waiting for confirmation",
        "awaiting_approval": "waiting for approval",
        "submitting": "being sent to Intune",
        "submitted": "sent to Intune, waiting for Google",
        "failed": "failed",
        "unknown": "outcome unknown",
        "cancelled": "cancelled",
        "expired": "expired",
        "confirmed": "deprovisioned (Intune confirmed)",
        "superseded": "superseded by a newer request",
        "queued": "queued in a bulk request",
        "running": "in progress",  # a bulk request whose devices are being sent
        "finished": "completed",  # a bulk request whose devices have all been sent (or settled)
    }.get(state, state)


@_markup
def selection_line(number: int, name: str, serial: str) -> str:
    return f"{number}\\. {md(name)} — {md(serial)}"


@_markup
def selection_detail(user: str, last_sync: str) -> str:
    return f"{md(user)} · last sync {md(last_sync)}"


@_markup
def pending_line(summary: str, expires: str) -> str:
    return f"{md(summary)} · expires {md(expires)}"


# -- outcomes from Intune's own record ----------------------------------------------------------------------


@_markup
def not_carried_out() -> str:
    return "Intune has no record of the request: it was not carried out. You can request it again."


@_markup
def proactive_intune_failed(device_name: str, detail: str) -> str:
    return (
        f"Intune reports that deprovisioning **{md(device_name)}** failed: {md(detail)}. "
        f"Nothing more will be sent; type **deprovision {md(device_name)}** to try again."
    )


@_markup
def proactive_not_confirmed(device_name: str) -> str:
    return (
        f"Intune has not confirmed deprovisioning **{md(device_name)}** within the time I wait. Check the device in "
        f"the Intune admin center; type **status {md(device_name)}** to see Intune's record."
    )


@_markup
def intune_record(outcome: str, initiated_by: str, at: str) -> str:
    """Intune's own record of a device's latest deprovision, for ``status``."""
    state = {"done": "deprovision done", "failed": "deprovision failed", "pending": "deprovision pending"}.get(
        outcome, outcome
    )
    parts = [state] + ([f"initiated by {md(initiated_by)}"] if initiated_by else []) + ([md(at)] if at else [])
    return " — ".join(parts)


# -- bulk deprovision (a list of devices in one message) ------------------------------------------------------

#: The classes of a listed device, in the order the summary card shows them.
BULK_CLASSES: dict[str, str] = {
    "ready": "Ready to deprovision",
    "not_found": "Not found, or not yours to see",
    "ambiguous": "Matches several devices — use the serial number",
    "incomplete": "Too many matches to check safely — use the serial number",
    "not_chromeos": "Not ChromeOS",
    "denied": "Not permitted by your Intune role",
    "busy": "Already in progress or done",
    "duplicate": "Listed twice (counted once)",
    "changed": "Changed in Intune since the list was checked (left out)",
    "not_approved": "Not approved: outside the approver's role (you can request these again)",
    "not_covered": "Your role does not cover these: left out if you approve",
    "taken": "Left out: another request took the device meanwhile",
}
#: Per-device results on the progress and final cards.
BULK_RESULTS: dict[str, str] = {
    "queued": "waiting",
    "submitting": "sending",
    "submitted": "sent, waiting for Google",
    "confirmed": "deprovisioned (Intune confirmed)",
    "failed": "failed",
    "unknown": "outcome unknown — checking",
    "cancelled": "not sent (cancelled)",
    "expired": "not sent (expired before it could be sent)",
}
BULK_SHOW_ALL = "Show all"
BULK_TITLE_NOTHING = "Nothing to deprovision in that list"
BULK_TITLE_CANCELLED = "Bulk request cancelled"
BULK_TITLE_EXPIRED = "Bulk request expired"
BULK_TITLE_REJECTED = "Bulk request rejected"
BULK_TITLE_WAITING = "Bulk request waiting for approval"
BULK_TITLE_REQUEST = "Bulk deprovision request"
BULK_TITLE_RUNNING = "Bulk deprovision running"
BULK_TITLE_FINISHED = "Bulk deprovision finished"
BULK_BUTTON_MY_VIEW = "Show my view"
BULK_RESULTS_TITLE = "Devices"
FACT_DONE = "Sent"
FACT_FAILED = "Failed"
FACT_UNKNOWN = "Unknown"
FACT_REMAINING = "Remaining"
FACT_NOT_SENT = "Not sent"


def bulk_title(count: int) -> str:
    return f"Deprovision {count} ChromeOS device{'s' if count != 1 else ''}?"


def bulk_button(count: int, *, approval: bool) -> str:
    noun = f"{count} device{'s' if count != 1 else ''}"
    return f"Request approval for {noun}" if approval else f"Deprovision {noun}"


def bulk_running_title(count: int) -> str:
    return f"Deprovisioning {count} device{'s' if count != 1 else ''}…"


def bulk_finished_title(count: int) -> str:
    return f"Bulk deprovision finished — {count} device{'s' if count != 1 else ''}"


@_markup
def bulk_too_many(count: int, limit: int) -> str:
    return (
        f"That list names {count} devices; I take at most {limit} in one message (as the Intune admin center does). "
        "Nothing was done. Split the list and send it in parts."
    )


@_markup
def bulk_entry_invalid(number: int, entry: str, problem: str) -> str:
    why = {
        "too_long": "is too long for a device name (over 128 characters)",
        "control": "contains characters I can't use in a device name",
    }.get(problem, "is not a device name")
    return f"Entry {number} (“{md(entry[:40])}”) {why}. Nothing was done; fix the list and send it again."


@_markup
def bulk_ready_line(name: str, serial: str, ou: str) -> str:
    return f"**{md(name[:48])}** · {md(serial[:32])} · {md(ou[:48]) if ou else NONE}"


@_markup
def bulk_other_line(klass: str, entry: str, detail: str) -> str:
    text = f"**{md(entry[:48])}**"
    return f"{text} — {md(detail[:120])}" if detail else text


@_markup
def bulk_section(klass: str, count: int) -> str:
    return f"{md(BULK_CLASSES.get(klass, klass))} ({count})"


def bulk_detail(klass: str, item_detail: str, requester: str = "", state: str = "") -> str:
    """The short "why" beside a device that is not ready (plain text; the card escapes it)."""
    if klass == "not_chromeos":
        return f"runs {item_detail}" if item_detail else "not ChromeOS"
    if klass == "busy":
        label = {"confirmed": "already deprovisioned", "submitted": "already sent to Intune"}.get(state, "in progress")
        return f"{label} (requested by {requester})" if requester else label
    return item_detail


def bulk_counts_line(counts: dict[str, int]) -> list[tuple[str, str]]:
    return [(BULK_CLASSES[k], str(n)) for k, n in counts.items() if n and k in BULK_CLASSES]


@_markup
def bulk_result_line(name: str, serial: str, state: str) -> str:
    return f"**{md(name[:48])}** · {md(serial[:32])} — {md(BULK_RESULTS.get(state, state))}"


@_markup
def bulk_intro(ready: int, listed: int) -> str:
    return f"You listed {listed} device{'s' if listed != 1 else ''}; {ready} can be deprovisioned now."


@_markup
def bulk_waiting_for(name: str) -> str:
    return f"Waiting for {md(name)} to confirm. Only {md(name)} can start this bulk request."


@_markup
def bulk_running(name: str) -> str:
    return (
        f"Started by {md(name)}. Each device is sent once; this card updates every few seconds. Cancel stops the "
        "devices not yet sent."
    )


@_markup
def bulk_finished(sent: int, failed: int, unknown: int, not_sent: int) -> str:
    parts = [f"{sent} sent to Intune"]
    if failed:
        parts.append(f"{failed} failed")
    if unknown:
        parts.append(f"{unknown} with an unknown outcome (I'm checking Intune's record; those devices stay locked)")
    if not_sent:
        parts.append(f"{not_sent} not sent")
    return "; ".join(parts) + ". Each device must be factory reset (powerwash) before it can enrol again."


@_markup
def bulk_cancelled(name: str, not_sent: int) -> str:
    return (
        f"Cancelled by {md(name)}. {not_sent} device{'s' if not_sent != 1 else ''} not sent; nothing more will be sent."
    )


@_markup
def bulk_awaiting(requester: str) -> str:
    return (
        f"{md(requester)} confirmed. A second person with the right Intune role must approve; devices their role does "
        "not cover are left out, visibly."
    )


@_markup
def bulk_how_to_get_approval(is_group: bool, channel: bool) -> str:
    """Tells the requester of a bulk request who can approve it and how they learn of it."""
    who = f"Anyone else with {ROLES_THAT_WORK} on at least one of these devices can approve"
    if channel:
        return f"{who}: the request is posted in the approvals channel, or they can type **pending** to me."
    if is_group:
        return f"{who}: eligible members of this chat see Approve on this card, and anyone can type **pending** to me."
    return (
        f"{who}. No approvals channel is set and this is a 1:1 chat, so nobody is told automatically: ask them to "
        "type **pending** to me."
    )


def bulk_approval_mentions(requester: str, approvers: Sequence[str]) -> str:
    """The group-chat notice that @mentions the eligible approvers of a bulk request: every member reads it, so it
    names no device and no count (graph-intune.md §16)."""
    names = ", ".join(f"<at>{mention(n)}</at>" for n in approvers)
    return (
        f"{names}: {md(requester)} asks for approval of a bulk deprovision request — your view of the card above "
        "lists the devices your role covers, with Approve and Reject (devices it does not cover are left out)."
    )


@_markup
def bulk_rejected(name: str, comment: str) -> str:
    return f"Rejected by {md(name)}: “{md(comment)}”. Nothing was sent."


@_markup
def proactive_bulk_finished(count: int, sent: int, failed: int, unknown: int) -> str:
    return (
        f"Bulk deprovision of {count} device{'s' if count != 1 else ''} finished: {sent} sent, {failed} failed, "
        f"{unknown} unknown. The card above lists every device."
    )


@_markup
def history_bulk_row(
    count: int, sent: int, failed: int, unknown: int, not_sent: int, state: str, requester: str
) -> str:
    return (
        f"Bulk request, {count} device{'s' if count != 1 else ''} — {md(state)} — sent {sent}, failed {failed}, "
        f"unknown {unknown}, not sent {not_sent} — {md(requester)}"
    )


def bulk_denied_reason(reason: str | None) -> str:
    """Why the requester's role does not cover one listed device (plain text, short)."""
    reasons: dict[str, str] = {
        DenyReason.NOT_ALLOWED: "your role explicitly does not allow it",
        DenyReason.MISSING_READ: "your role lacks Managed devices / Read",
        DenyReason.OUT_OF_SCOPE_GROUPS: "outside the groups of your assignment",
        DenyReason.OUT_OF_SCOPE_TAGS: "outside the scope tags of your assignment",
    }
    return reasons.get(str(reason or ""), "no role of yours includes Remote tasks / Retire")


def bulk_ambiguous(serials: Sequence[str], total: int) -> str:
    return f"matches {total} devices ({', '.join(serials[:5])})"


def bulk_duplicate(first: str) -> str:
    return f"the same device as {first}"


@_markup
def card_not_eligible_bulk() -> str:
    return "You can't approve any device of this request: your Intune role covers none of them."


@_markup
def pending_bulk_row(count: int, requester: str, *, own: bool) -> str:
    """``count``: the requester's own — every device of the request; someone else's — those the viewer may read."""
    devices = f"{count} device{'s' if count != 1 else ''}"
    if own:
        return f"Bulk request, {devices} — your request"
    return f"Bulk request, {devices} you can see — by {md(requester)}"


def pending_bulk_label(count: int) -> str:
    return f"bulk request ({count})"


# -- a bulk request seen by someone other than its requester (least disclosure, graph-intune.md §16) ------------


@_markup
def bulk_shared_note() -> str:
    return (
        "Devices are listed only in each person's own view of this card: the requester sees the whole list, anyone "
        f"else only the devices their Intune role lets them read. If you see this text, click **{BULK_BUTTON_MY_VIEW}**."
    )


@_markup
def bulk_finished_shared(name: str) -> str:
    return f"Started by {md(name)} and finished. The per-device results are in each person's own view of this card."


@_markup
def bulk_intro_other(seen: int, covered: int | None) -> str:
    """``seen``: the request's devices the viewer may read; ``covered``: those their approval would send."""
    if not seen:
        return "None of the devices of this request is one your Intune role lets you read."
    devices = f"{seen} device{'s' if seen != 1 else ''}"
    text = f"You see the {devices} of this request that your Intune role lets you read."
    if covered is None:
        return text
    return text + f" Approving sends {covered} of them; nothing else is sent."


def bulk_approve_button(covered: int, seen: int) -> str:
    noun = f"{covered} device{'s' if covered != 1 else ''}"
    return f"Approve {noun}" if covered == seen else f"Approve {covered} of {seen} devices"


def bulk_not_approved_by(name: str) -> str:
    return f"not approved by {name}: outside their role"


@_markup
def card_bulk_approval_changed() -> str:
    return (
        "What your approval would send changed since this card was shown (devices or your role changed in Intune). "
        "Nothing was sent: check the list and approve again."
    )


@_markup
def proactive_bulk_approved(approver: str) -> str:
    return f"{md(approver)} approved the bulk deprovision request; its card shows the progress."


@_markup
def proactive_bulk_rejected(approver: str, comment: str) -> str:
    return f"{md(approver)} rejected the bulk deprovision request: “{md(comment)}”. Nothing was sent."


@_markup
def proactive_bulk_finished_shared() -> str:
    return "A bulk deprovision finished. Its card shows each person the devices they may see, with their results."
