"""Browser end-to-end fixtures (``make e2e``): the ``make run`` stack, driven through a real browser.

Per test, on free ports: the simulated Microsoft cloud (in-process :class:`simulator.Simulator`), the bot
(``python app.py`` configured by :func:`simulator.demo.demo_environment`, fresh SQLite file under ``tmp_path``) and one
Microsoft 365 Agents Playground (node) per Teams identity — the Playground has no user switcher, so a second person
is a second Playground whose config file names them as the current user (see ``test_peer_approval_in_two_clients``).
Per module: one headless Debian Chromium (``/usr/bin/chromium``, never a downloaded browser) driven by Playwright's
async API; every chat gets its own browser context. Everything runs on the module's event loop, which is also the
loop the in-process simulator serves on.

Missing Chromium, Node.js, the Playground package or Playwright: the tests FAIL when ``CI`` is set, skip otherwise.
Screenshots go to ``artifacts/e2e/`` (gitignored); a failing test also leaves ``FAILED-<test>-<chat>.png`` there and
prints the tail of the bot's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import shutil
import sys
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

from simulator import Simulator
from simulator.demo import (
    DEFAULT_USER,
    PLAYGROUND,
    PLAYGROUND_USERS,
    ROOT,
    demo_environment,
    drain,
    playground_port,
    prepare_playground_dir,
    start_playground,
    stop,
    wait_ready,
)
from tests.harness import free_port

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Locator, Page, ViewportSize

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "artifacts" / "e2e"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
TIMEOUT_MS = 15_000

USERS = PLAYGROUND_USERS

#: The Playground is a desktop layout: the chat column has ``min-width: 600px``, every Adaptive Card sits in a
#: fixed ``width: 450px`` wrapper and bot bubbles keep a 100 px right margin, so at 390 px no card can fit whatever
#: the bot sends. This test-only stylesheet gives the chat the shape of a phone's chat (full width, card as wide as
#: the bubble); the Adaptive Card's own layout — what the bot controls — is untouched and is what the test judges.
PHONE_SHELL_CSS = """
*:has(.ac-adaptiveCard), *:has([data-lexical-editor]) { min-width: 0 !important; max-width: 100% !important; }
*:has(> .ac-preview-panel) { width: auto !important; }
*:has(> * > .fai-OutputCard) { margin-right: 8px !important; }
"""

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_REPORTS, {})
    return any(r.failed for r in reports.values())


def _missing_tools() -> list[str]:
    missing = []
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"{CHROMIUM} (Debian package `chromium`; a downloaded browser is not used)")
    if shutil.which("node") is None:
        missing.append("node (Node.js 20+)")
    if not PLAYGROUND.is_file():
        missing.append(f"{PLAYGROUND.relative_to(ROOT)} (run `make node`)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the `playwright` Python package (pip install -e '.[test]')")
    return missing


@pytest.fixture(scope="module")
def e2e_tools() -> None:
    """Fail in CI (never skip silently there), skip on a developer machine."""
    missing = _missing_tools()
    if not missing:
        return
    message = "browser end-to-end tests need: " + "; ".join(missing)
    if IN_CI:
        pytest.fail(message + " (CI is set, so this is a failure, not a skip)")
    pytest.skip(message)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(e2e_tools: None) -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        # launch() gives every run a fresh, throw-away user-data-dir.
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


# -- the stack: simulator + bot + Playground(s) ---------------------------------------------------------------


@dataclass
class Stack:
    sim: Simulator
    bot_port: int
    bot_log: Path
    urls: dict[str, str] = field(default_factory=dict)

    def url(self, who: str = DEFAULT_USER) -> str:
        return self.urls[who]


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} not found)"


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@dataclass
class _Running:
    """What a test started, so teardown can stop it all (processes in parallel, then the simulators)."""

    processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    simulators: list[Simulator] = field(default_factory=list)
    tasks: list[asyncio.Future[None]] = field(default_factory=list)
    stacks: list[Stack] = field(default_factory=list)

    async def stop(self) -> None:
        await asyncio.gather(*(stop(p) for p in self.processes), return_exceptions=True)
        for task in self.tasks:
            task.cancel()
        for sim in self.simulators:
            await sim.stop()


async def _playground(stack: Stack, who: str, cwd: Path, running: _Running) -> None:
    prepare_playground_dir(cwd, who, stack.sim.tenant_id)
    process = await start_playground(stack.bot_port, free_port(), cwd)
    running.processes.append(process)
    port = await playground_port(process, timeout=30)
    running.tasks.append(asyncio.ensure_future(drain(process.stdout)))
    # It prints "Listening on" even when it is about to exit over a bad config file: ask it who is signed in.
    url = f"http://localhost:{port}"
    try:
        config = await asyncio.to_thread(_get_json, f"{url}/_internal/v1/config")
    except OSError as exc:
        log = _tail(cwd / "devTools" / "m365agentsplayground.log", 15)
        raise RuntimeError(f"the Playground for {who} did not start: {exc}\n{log}") from exc
    current = config["config"]["currentUser"]
    assert current["id"] == USERS[who][0], (
        f"the Playground for {who} signed in {current.get('name')!r} (is M365_AGENTS_PLAYGROUND_CONFIG_PATH set?)"
    )
    stack.urls[who] = url + "/"


StackFactory = Callable[..., Awaitable[Stack]]


@pytest_asyncio.fixture(loop_scope="module")
async def start_stack(e2e_tools: None, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[StackFactory]:
    """``stack = await start_stack(APPROVAL_MODE="peer", users=("alex", "patti"))``; all stopped at teardown."""
    running = _Running()

    async def factory(users: tuple[str, ...] = (DEFAULT_USER,), **bot_env: str) -> Stack:
        base = tmp_path / f"stack{len(running.stacks)}"
        base.mkdir()
        sim = Simulator()
        await sim.start()
        running.simulators.append(sim)
        stack = Stack(sim=sim, bot_port=free_port(), bot_log=base / "bot.log")
        running.stacks.append(stack)
        env = demo_environment(sim, stack.bot_port, f"sqlite:///{base / 'bot.db'}", **bot_env)
        with stack.bot_log.open("wb") as log:  # the child keeps its own copy of the descriptor
            bot = await asyncio.create_subprocess_exec(
                sys.executable, "app.py", cwd=str(ROOT), env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
            )
        running.processes.append(bot)
        try:
            await asyncio.gather(
                wait_ready(f"http://127.0.0.1:{stack.bot_port}/readyz", timeout=30),
                *(_playground(stack, who, base / f"playground-{who}", running) for who in users),
            )
        except (RuntimeError, TimeoutError, AssertionError) as exc:
            raise RuntimeError(f"{exc}\n--- bot log ---\n{_tail(stack.bot_log)}") from exc
        return stack

    try:
        yield factory
    finally:
        if _failed(request):
            for stack in running.stacks:
                print(f"--- bot log ({stack.bot_log}) ---\n{_tail(stack.bot_log)}")
        await running.stop()


# -- the browser side: one Playground tab per person ------------------------------------------------------------


class Chat:
    """One person's Playground tab (personal chat with the bot), at desktop or phone size."""

    def __init__(self, page: Page, who: str, phone: bool) -> None:
        self.page = page
        self.who = who
        self.phone = phone

    @property
    def compose(self) -> Locator:
        return self.page.locator('[role="textbox"][contenteditable="true"]')

    def card(self, title: str) -> Locator:
        """The Adaptive Card whose title TextBlock reads exactly ``title``."""
        return self.page.locator(".ac-adaptiveCard").filter(has=self.page.get_by_text(title, exact=True))

    async def press(self, target: Locator) -> None:
        """A real pointer action: a tap on the phone, a click on the desktop."""
        if self.phone:
            await target.tap()
        else:
            await target.click()

    async def send(self, text: str) -> None:
        await self.press(self.compose)
        await self.page.keyboard.type(text)
        await self.press(self.page.get_by_role("button", name="Send Message"))
        # The message shows up on the user's side of the chat.
        await self.page.get_by_text(text, exact=True).last.wait_for()

    async def shot(self, name: str, whole: Locator | None = None) -> Path:
        """Screenshot the tab; with ``whole``, first grow the viewport so that all of that card is in the picture
        (an element screenshot of a card taller than the screen is clipped by the chat's scroll area, and at phone
        size comes out shifted by the page's visual-viewport offset)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        size = self.page.viewport_size
        if whole is None or size is None:
            await self.page.screenshot(path=str(path))
            return path
        box = await whole.bounding_box()
        assert box is not None
        await self.page.set_viewport_size(
            {"width": size["width"], "height": max(size["height"], int(box["height"]) + 320)}
        )
        try:
            await whole.scroll_into_view_if_needed()
            await settled(whole)  # the chat scrolls smoothly after a resize
            await self.page.screenshot(path=str(path))
        finally:
            await self.page.set_viewport_size(size)
        return path


ChatFactory = Callable[..., Awaitable[Chat]]


async def settled(target: Locator, timeout: float = 3.0) -> None:
    """Wait until ``target`` stops moving (same bounding box twice, 100 ms apart)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    previous = await target.bounding_box()
    while loop.time() < deadline:
        await asyncio.sleep(0.1)
        current = await target.bounding_box()
        if current == previous:
            return
        previous = current


def _phone_shell_css() -> str:
    return re.sub(r"\s+", " ", PHONE_SHELL_CSS).strip()


@pytest_asyncio.fixture(loop_scope="module")
async def open_chat(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[ChatFactory]:
    """``chat = await open_chat(stack, "patti", phone=True)`` — a fresh browser context on that person's Playground."""
    opened: list[tuple[BrowserContext, Chat]] = []
    for stale in ARTIFACTS.glob(f"FAILED-{request.node.name}-*.png"):
        stale.unlink()

    async def factory(stack: Stack, who: str = DEFAULT_USER, *, phone: bool = False) -> Chat:
        if phone:
            context = await browser.new_context(
                viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2, locale="en-US"
            )
        else:
            context = await browser.new_context(viewport=DESKTOP, locale="en-US")
        context.set_default_timeout(TIMEOUT_MS)
        page = await context.new_page()
        chat = Chat(page, who, phone)
        opened.append((context, chat))
        await page.goto(stack.url(who))
        await page.get_by_role("button", name="Send Message").wait_for()
        if phone:
            # Its own "Toggle Log Panel" button (off-screen in the overflowing header, hence a DOM click); at
            # phone width the log panel would cover the chat.
            await page.get_by_title("Toggle Log Panel").dispatch_event("click")
            await page.get_by_text("Log Panel", exact=True).wait_for(state="hidden")
            await page.add_style_tag(content=_phone_shell_css())
        return chat

    yield factory
    failed = _failed(request)
    for context, chat in opened:
        if failed:
            with contextlib.suppress(Exception):
                await chat.shot(f"FAILED-{request.node.name}-{chat.who}{'-phone' if chat.phone else ''}")
        await context.close()
