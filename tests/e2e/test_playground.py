"""Deprovision NHS-CART3-01 through the Microsoft 365 Agents Playground in a real browser (issues 6 and 8).

Alex Wilber (the Playground's default user) is a Help Desk Operator for all devices in the simulated tenant;
Patti Fernandez holds the Entra role Intune Administrator. Each test gets a fresh simulator, bot and database.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

import pytest

from bot import messages as m

if TYPE_CHECKING:
    from playwright.async_api import Locator

    from tests.e2e.conftest import Chat, ChatFactory, StackFactory

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

DEVICE = "NHS-CART3-01"
DEVICE_ID = "27ab6835-99f8-5907-ac4d-64c0365f0d40"  # its Intune id in simulator/seeds/demo.yaml
RETIRING = m.reason_label("retiring_device")  # "Retiring device (donated, recycled or out of use)"
DONE = m.CARD_TITLE_SENT
#: Keep the "Sent to Intune" card in place while a test looks at it (the completion check is tested on its own).
STEADY = {"COMPLETION_FIRST_CHECK": "1h"}
PHONE_WIDTH = 390
EXPECT_TIMEOUT_MS = 15_000  # card updates after a click (Playwright's own default is 5 s)


def expect(target: Any) -> Any:
    """Playwright's ``expect``, imported late so that a missing Playwright skips/fails in the fixture, not here."""
    from playwright.async_api import expect as playwright_expect

    playwright_expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    return playwright_expect(target)


async def request_and_confirm(chat: Chat, shot_prefix: str, button: str = m.CARD_BUTTON_CONFIRM) -> Locator:
    """Type the command, wait for the card, pick "Retiring device…", press Deprovision (or Request approval)."""
    await chat.send(f"deprovision {DEVICE}")
    card = chat.card(m.CARD_TITLE_CONFIRM)
    await card.wait_for()
    await card.get_by_text(DEVICE, exact=True).wait_for()
    await card.scroll_into_view_if_needed()
    await chat.shot(f"{shot_prefix}-1-confirm")
    reason = card.get_by_role("radio", name=RETIRING)
    await chat.press(reason)
    await expect(reason).to_be_checked()
    await chat.press(card.get_by_role("button", name=button, exact=True))
    return card


async def card_fits(card: Locator, width: int = PHONE_WIDTH) -> None:
    """The card's box lies inside the viewport width and nothing inside it sticks out to the right."""
    await card.scroll_into_view_if_needed()
    box = await card.bounding_box()
    assert box is not None
    assert box["x"] >= 0, box
    assert box["x"] + box["width"] <= width, box
    overflow = await card.evaluate(
        """card => {
            const right = card.getBoundingClientRect().right;
            const out = [];
            for (const el of card.querySelectorAll('*')) {
                const r = el.getBoundingClientRect();
                if (r.width > 0 && r.right > right + 0.5) out.push(`${el.tagName}.${el.className}: ${r.right - right}px`);
            }
            return {scroll: card.scrollWidth - card.clientWidth, out: out.slice(0, 5)};
        }"""
    )
    assert overflow["scroll"] <= 0 and not overflow["out"], overflow


async def button_usable(button: Locator, width: int = PHONE_WIDTH) -> None:
    """Visible, inside the viewport, and a tap would land on it (nothing covers it)."""
    await button.scroll_into_view_if_needed()
    await expect(button).to_be_visible()
    await expect(button).to_be_enabled()
    box = await button.bounding_box()
    assert box is not None
    assert box["x"] >= 0 and box["x"] + box["width"] <= width, box
    assert box["width"] >= 24 and box["height"] >= 24, f"collapsed button: {box}"
    await button.tap(trial=True)  # actionability only: visible, stable, enabled, receives the pointer event


async def test_deprovision_at_desktop_size(start_stack: StackFactory, open_chat: ChatFactory) -> None:
    """As in `make run`: the card says "Sent to Intune", then moves in place to "Intune confirmed" once the bot has
    read Intune's own record (checks every second here; the simulator completes the action after two)."""
    stack = await start_stack(COMPLETION_FIRST_CHECK="1s", SWEEP_INTERVAL="1s")
    alex = await open_chat(stack)

    await request_and_confirm(alex, "desktop")

    done = alex.card(DONE).or_(alex.card(m.CARD_TITLE_DONE))
    await expect(done).to_have_count(1)
    await expect(alex.card(m.CARD_TITLE_CONFIRM)).to_have_count(0)  # updated in place, not a second message
    await expect(done.get_by_role("button")).to_have_count(0)
    await expect(done.get_by_text(RETIRING, exact=True)).to_be_visible()
    await done.scroll_into_view_if_needed()
    await alex.shot("desktop-2-sent")
    confirmed = alex.card(m.CARD_TITLE_DONE)
    await expect(confirmed).to_have_count(1)
    await expect(alex.card(DONE)).to_have_count(0)  # the same message, updated in place
    await confirmed.scroll_into_view_if_needed()
    await alex.shot("desktop-3-confirmed")
    posts = stack.sim.deprovision_posts()
    assert len(posts) == 1, posts
    assert DEVICE_ID in posts[0].path


async def test_deprovision_at_phone_size(start_stack: StackFactory, open_chat: ChatFactory) -> None:
    """390×844 touch screen (taps, not clicks). The Playground page itself is a desktop layout (see PHONE_SHELL_CSS
    in conftest.py: without it every card is 446 px wide whatever the bot sends), so the checks are on the card:
    its box within 0…390 px, no element inside it sticking out, Deprovision and Cancel visible and tappable."""
    stack = await start_stack(**STEADY)
    alex = await open_chat(stack, phone=True)

    await alex.send(f"deprovision {DEVICE}")
    card = alex.card(m.CARD_TITLE_CONFIRM)
    await card.wait_for()
    await card_fits(card)
    for name in (m.CARD_BUTTON_CONFIRM, m.CARD_BUTTON_CANCEL):
        await button_usable(card.get_by_role("button", name=name, exact=True))
    await alex.shot("phone-1-confirm")
    await alex.shot("phone-1-confirm-card", card)

    reason = card.get_by_role("radio", name=RETIRING)
    await reason.scroll_into_view_if_needed()
    await reason.tap()
    await expect(reason).to_be_checked()
    await card.get_by_role("button", name=m.CARD_BUTTON_CONFIRM, exact=True).tap()

    done = alex.card(DONE)
    await expect(done).to_have_count(1)
    await card_fits(done)
    await alex.shot("phone-2-done")
    await alex.shot("phone-2-done-card", done)
    assert len(stack.sim.deprovision_posts()) == 1


async def test_peer_approval_in_two_clients(start_stack: StackFactory, open_chat: ChatFactory) -> None:
    """APPROVAL_MODE=peer: Alex requests and confirms, Patti approves from her own chat, Alex's card catches up.

    Switching the Playground's current user (0.2.28), what was found:
    - the web UI has no user picker: the header shows the current user's name and avatar (not clickable), the ``⋯``
      menu only has "View Documentation" and "Report an Issue";
    - the HTTP API has ``GET /_internal/v1/config`` but no PUT (routes: config, configAuth, configDebugOptions,
      customActivities[/template], conversations/…/messages, invoke, submit);
    - the current user comes from ``.m365agentsplayground.yml`` (working directory, or
      ``M365_AGENTS_PLAYGROUND_CONFIG_PATH``), read once at start. Its schema wants at least 5 ``users``; with a bad
      file it still prints "Listening on <port>" and then exits, so the fixture checks ``/_internal/v1/config``.
    So "switching to Patti" is a second Playground whose config makes Patti the current user, against the same
    bot — like Patti's own Teams client. No ``customActivities`` workaround is needed: her ``pending`` and clicks
    are ordinary UI actions, and the bot's update of Alex's card (PUT to the serviceUrl stored with Alex's
    conversation) lands in Alex's Playground, which is still open.
    """
    stack = await start_stack(users=("alex", "patti"), APPROVAL_MODE="peer", **STEADY)
    alex, patti = await asyncio.gather(open_chat(stack, "alex"), open_chat(stack, "patti"))  # two people, two tabs

    await request_and_confirm(alex, "peer-alex", m.CARD_BUTTON_REQUEST_APPROVAL)
    waiting = alex.card(m.CARD_TITLE_WAITING)
    await expect(waiting).to_have_count(1)
    # The requester cannot approve; she may withdraw.
    await expect(waiting.get_by_role("button")).to_have_count(1)
    await expect(waiting.get_by_role("button", name=m.CARD_BUTTON_WITHDRAW, exact=True)).to_be_visible()
    await waiting.scroll_into_view_if_needed()
    await alex.shot("peer-alex-2-waiting")
    assert stack.sim.deprovision_posts() == []

    await patti.send("pending")
    pending = patti.card(m.pending_title(1))
    await pending.wait_for()
    await patti.shot("peer-patti-1-pending")
    await patti.press(pending.get_by_role("button", name=re.compile(rf"^Open {DEVICE}")))
    approve = patti.page.get_by_role("button", name=m.CARD_BUTTON_APPROVE, exact=True)
    await approve.wait_for()
    await patti.page.get_by_text(m.card_approver_hint(), exact=True).scroll_into_view_if_needed()
    await patti.shot("peer-patti-2-approver-view")
    await patti.press(approve)

    done = patti.card(DONE)
    await expect(done).to_have_count(1)
    await expect(done.get_by_text("Patti Fernandez", exact=True)).to_be_visible()  # fact "Approved by"
    await done.scroll_into_view_if_needed()
    await patti.shot("peer-patti-3-done")

    # Alex's tab: the card he confirmed is updated in place, and he is told who approved.
    alex_done = alex.card(DONE)
    await expect(alex_done).to_have_count(1)
    await expect(alex.card(m.CARD_TITLE_WAITING)).to_have_count(0)
    await expect(
        alex.page.get_by_text(f"Patti Fernandez approved deprovisioning {DEVICE}.", exact=True)
    ).to_be_visible()
    await alex.shot("peer-alex-3-done")
    posts = stack.sim.deprovision_posts()
    assert len(posts) == 1 and DEVICE_ID in posts[0].path, posts


@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
async def test_help_and_a_polite_request(start_stack: StackFactory, open_chat: ChatFactory, phone: bool) -> None:
    """The help card keeps its placeholders; a polite, punctuated request reaches the normal confirmation card."""
    stack = await start_stack(**STEADY)
    alex = await open_chat(stack, phone=phone)
    size = "phone" if phone else "desktop"

    await alex.send("help")
    help_card = alex.card(m.HELP_TITLE)
    await help_card.wait_for()
    await expect(help_card.get_by_text("deprovision <device>", exact=True)).to_be_visible()
    await expect(help_card.get_by_text("status <device>", exact=True)).to_be_visible()
    if phone:
        await card_fits(help_card)
    await alex.shot(f"{size}-help", help_card)

    await alex.send("can you deprovision NHS-CART3-02 please?")
    card = alex.card(m.CARD_TITLE_CONFIRM)
    await card.wait_for()
    await card.get_by_text("NHS-CART3-02", exact=True).wait_for()
    if phone:
        await card_fits(card)
    await alex.shot(f"{size}-polite-request", card)
    assert stack.sim.deprovision_posts() == []


async def test_bulk_deprovision_at_phone_size(start_stack: StackFactory, open_chat: ChatFactory) -> None:
    """A list of 12 Chromebooks at 390×844: the summary card fits, "Show all" reveals the rest in place, one tap on
    "Deprovision 12 devices" sends each once, and the card ends with the per-device list."""
    stack = await start_stack(**STEADY, BULK_UPDATE_INTERVAL="1s")
    alex = await open_chat(stack, phone=True)
    cart = [f"NHS-CART7-{i:02d}" for i in range(1, 13)]
    await alex.send("deprovision " + ", ".join(cart))
    card = alex.card(m.bulk_title(12))
    await card.wait_for()
    await card_fits(card)
    confirm = card.get_by_role("button", name=m.bulk_button(12, approval=False), exact=True)
    show_all = card.get_by_role("button", name=re.compile(rf"^{m.BULK_SHOW_ALL} \("))
    for button in (confirm, card.get_by_role("button", name=m.CARD_BUTTON_CANCEL, exact=True), show_all):
        await button_usable(button)
    last = card.get_by_text(re.compile(r"NHS-CART7-12"))
    await expect(last).to_be_hidden()
    await alex.shot("phone-bulk-1-summary-card", card)
    await show_all.tap()
    await expect(last).to_be_visible()
    await card_fits(card)
    await alex.shot("phone-bulk-2-show-all", card)

    reason = card.get_by_role("radio", name=RETIRING)
    await reason.scroll_into_view_if_needed()
    await reason.tap()
    await expect(reason).to_be_checked()
    await confirm.tap()
    done = alex.card(m.bulk_finished_title(12))
    await expect(done).to_have_count(1)
    await card_fits(done)
    await alex.shot("phone-bulk-3-finished-card", done)
    assert len(stack.sim.deprovision_posts()) == 12
