"""``make run``: the simulated Microsoft cloud + the bot + the Microsoft 365 Agents Playground.

1. the simulator (Entra sign-in + Graph over HTTPS with a throw-away CA) runs in this process;
2. the bot runs as ``python app.py`` configured against it (anonymous Bot Framework mode, local only);
3. the Playground (npm ``@microsoft/m365agentsplayground``, installed by the Makefile) plays Teams.

Open the printed URL; Ctrl-C stops all three. The Playground 0.2.28 cannot switch users in its UI; its signed-in
user comes from ``.m365agentsplayground.yml``. ``DEMO_USER=patti make run`` signs in another demo user (one of
:data:`PLAYGROUND_USERS`), and ``make playground DEMO_USER=patti`` adds a second Playground, as a second person,
next to a running demo (for the approval flow).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

from simulator import Simulator

ROOT = Path(__file__).resolve().parent.parent
PLAYGROUND = ROOT / "node_modules" / "@microsoft" / "m365agentsplayground" / "cli.js"
DEMO_DB = ROOT / "data" / "demo.db"
#: Written while the demo runs, removed when it stops: ``make doctor-demo`` runs ``ENV_FILE=data/demo.env
#: python app.py doctor`` against the demo's simulator and database.
DEMO_ENV = ROOT / "data" / "demo.env"
CONN = "CONNECTIONS__SERVICE_CONNECTION__SETTINGS__"

#: The Playground 0.2.28 default identities (``GET /_internal/v1/config``); they match simulator/seeds/demo.yaml.
#: key → (Playground user id, display name, mail nickname, Entra object id)
PLAYGROUND_USERS: dict[str, tuple[str, str, str, str]] = {
    "alex": ("user-id-0", "Alex Wilber", "alexw", "00000000-0000-0000-0000-0000000000020"),
    "megan": ("user-id-1", "Megan Bowen", "meganb", "00000000-0000-0000-0000-0000000000021"),
    "adele": ("user-id-2", "Adele Vance", "adelev", "00000000-0000-0000-0000-0000000000022"),
    "isaiah": ("user-id-3", "Isaiah Langer", "isaiahl", "00000000-0000-0000-0000-0000000000023"),
    "patti": ("user-id-4", "Patti Fernandez", "pattif", "00000000-0000-0000-0000-0000000000024"),
    "lynne": ("user-id-5", "Lynne Robbins", "lynner", "00000000-0000-0000-0000-0000000000025"),
}
DEFAULT_USER = "alex"  # the Playground's built-in signed-in user


def playground_config(current: str, tenant_id: str) -> dict[str, Any]:
    """A ``.m365agentsplayground.yml`` naming ``current`` as the signed-in user (the schema wants ≥ 5 others)."""

    def user(key: str) -> dict[str, str]:
        user_id, name, nick, aad = PLAYGROUND_USERS[key]
        given, _, surname = name.partition(" ")
        mail = f"{nick}@example.com"
        return {
            "id": user_id,
            "name": name,
            "userPrincipleName": mail,  # sic: the Playground's field name
            "aadObjectId": aad,
            "givenName": given,
            "surname": surname,
            "email": mail,
        }

    return {
        "version": "0.1.1",
        "tenantId": tenant_id,
        "bot": {"id": "00000000-0000-0000-0000-00000000000011", "name": "Test Bot"},
        "currentUser": user(current),
        "users": [user(key) for key in PLAYGROUND_USERS if key != current],
        "personalChat": {"id": str(uuid.uuid4())},
        "groupChat": {"id": str(uuid.uuid4()), "name": "Group Chat"},
        "team": {
            "id": "team-id",
            "name": "My Team",
            "aadGroupId": "00000000-0000-0000-0000-000000000031",
            "channels": [{"id": "channel-announcements-id", "name": "Announcements"}],
        },
    }


def prepare_playground_dir(cwd: Path, who: str, tenant_id: str) -> None:
    """A working folder for one Playground, signed in as ``who`` (its log goes to ``cwd/devTools``)."""
    cwd.mkdir(parents=True, exist_ok=True)
    config = cwd / ".m365agentsplayground.yml"
    if who == DEFAULT_USER:
        config.unlink(missing_ok=True)
    else:
        config.write_text(yaml.safe_dump(playground_config(who, tenant_id), sort_keys=False))


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def demo_environment(sim: Simulator, bot_port: int, database_url: str, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONNECTIONS__")}
    env.update(sim.env())
    env.update(
        {
            "ENV_FILE": "/nonexistent/.env",
            "PORT": str(bot_port),
            "HOST": "127.0.0.1",
            "DATABASE_URL": database_url,
            "ALLOW_ANONYMOUS": "true",  # anonymous local mode must be asked for explicitly
            # Show the card moving from "Sent to Intune" to "Intune confirmed" well within a minute.
            "COMPLETION_FIRST_CHECK": "10s",
            "SWEEP_INTERVAL": "5s",
            "APP_ENV": "development",
        }
    )
    env.update(extra)
    return env


def doctor_environment(sim: Simulator, database_url: str) -> dict[str, str]:
    """Settings for ``python app.py doctor`` against the demo: the simulated tenant, the demo database, and —
    for the "Bot Framework credentials" row — the simulated app's credentials (the demo bot itself runs anonymous)."""
    return {
        **sim.env(),
        "DATABASE_URL": database_url,
        "APP_ENV": "development",
        CONN + "CLIENTID": sim.client_id,
        CONN + "CLIENTSECRET": sim.client_secret,
        CONN + "TENANTID": sim.tenant_id,
    }


def write_env_file(path: Path, values: dict[str, str]) -> None:
    """A dotenv file readable only by its owner (it holds the simulated tenant's client secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Written by `make run` while the demo runs; used by `make doctor-demo`. Removed when the demo stops.\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(header + "".join(f"{key}={value}\n" for key, value in values.items()))


async def wait_ready(url: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            status = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=2).status)  # noqa: S310
            if status == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


async def start_playground(bot_port: int, port: int, cwd: Path) -> asyncio.subprocess.Process:
    node = shutil.which("node")
    if node is None or not PLAYGROUND.exists():
        raise RuntimeError("Node.js or the Playground is missing: run `make run` (it installs node_modules)")
    env = {**os.environ, "TEAMSAPPTESTER_BROWSER": "none", "TEAMSAPPTESTER_PORT": str(port)}
    cwd.mkdir(parents=True, exist_ok=True)
    return await asyncio.create_subprocess_exec(
        node,
        str(PLAYGROUND),
        "-e",
        f"http://127.0.0.1:{bot_port}/api/messages",
        "-c",
        "msteams",
        "-p",
        str(port),
        "--disable-telemetry",
        cwd=str(cwd),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def playground_port(process: asyncio.subprocess.Process, timeout: float = 60.0) -> int:
    """The Playground prints ``Listening on <port>`` (it silently picks another port if the default is taken)."""
    assert process.stdout is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=max(0.1, deadline - loop.time()))
        if not line:
            break
        text = line.decode(errors="replace").strip()
        if "Listening on" in text:
            return int(text.rsplit(" ", 1)[-1].strip().rstrip("."))
    raise RuntimeError("the Playground did not start")


async def stop(process: asyncio.subprocess.Process | None) -> None:
    if process is None or process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout=10)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()


async def run(**bot_env: str) -> None:
    bot_port = int(os.environ.get("PORT", "3978"))
    playground_wanted = int(os.environ.get("PLAYGROUND_PORT", "56150"))
    if not port_free(bot_port):
        raise SystemExit(f"Port {bot_port} is in use. Stop the other process or run `PORT=3979 make run`.")
    DEMO_DB.parent.mkdir(exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{DEMO_DB}{suffix}").unlink(missing_ok=True)
    sim = Simulator(page_size=int(os.environ.get("SIM_PAGE_SIZE", "20")))
    await sim.start(port=int(os.environ.get("SIM_PORT", "0")))
    bot: asyncio.subprocess.Process | None = None
    playground: asyncio.subprocess.Process | None = None
    try:
        write_env_file(DEMO_ENV, doctor_environment(sim, f"sqlite:///{DEMO_DB}"))
        env = demo_environment(sim, bot_port, f"sqlite:///{DEMO_DB}", **bot_env)
        bot = await asyncio.create_subprocess_exec(sys.executable, "app.py", cwd=str(ROOT), env=env)
        await wait_ready(f"http://127.0.0.1:{bot_port}/readyz")
        who = os.environ.get("DEMO_USER", DEFAULT_USER).lower()
        if who not in PLAYGROUND_USERS:
            raise SystemExit(f"DEMO_USER must be one of {', '.join(PLAYGROUND_USERS)}")
        prepare_playground_dir(ROOT / "data" / "playground", who, sim.tenant_id)
        playground = await start_playground(bot_port, playground_wanted, ROOT / "data" / "playground")
        port = await playground_port(playground)
        banner(sim, bot_port, port, PLAYGROUND_USERS[who][1])
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        waiters: list[Any] = [
            asyncio.ensure_future(bot.wait()),
            asyncio.ensure_future(playground.wait()),
            asyncio.ensure_future(stopping.wait()),
        ]
        if playground.stdout is not None:
            waiters.append(asyncio.ensure_future(drain(playground.stdout)))
        await asyncio.wait(waiters[:3], return_when=asyncio.FIRST_COMPLETED)
        print("\n  Stopping the Playground, the bot and the simulator…", flush=True)
        for waiter in waiters:
            waiter.cancel()
    finally:
        DEMO_ENV.unlink(missing_ok=True)
        await stop(playground)
        await stop(bot)
        await sim.stop()


async def drain(stream: asyncio.StreamReader | None) -> None:
    """Keep reading a child's output so its pipe never fills."""
    while stream is not None and await stream.readline():
        pass


def banner(sim: Simulator, bot_port: int, playground: int, user: str) -> None:
    print(
        f"""
  ChromeOS deprovision bot — demo
  ───────────────────────────────
  Open:        http://localhost:{playground}   (Microsoft 365 Agents Playground, signed in as {user})
  Bot:         http://127.0.0.1:{bot_port}/api/messages   (anonymous local mode)
  Simulator:   {sim.base_url}   (Entra + Graph, CA {sim.ca_path})

  Try:  help  ·  deprovision NHS-CART3-01  ·  deprovision NHS-LIB-01  ·  deprovision NHS-OFFICE-PC01
        status 5CD0832TGL  ·  history
  Other people: DEMO_USER=megan|adele|isaiah|patti|lynne make run  (each has a different permission outcome);
  a second person next to this demo (approvals): make playground DEMO_USER=patti
  Check the configuration the way an operator would: make doctor-demo  (python app.py doctor, ENV_FILE=data/demo.env)
  Ctrl-C stops everything.
""",
        flush=True,
    )


async def second_playground() -> None:
    """Another Playground, signed in as ``DEMO_USER``, talking to the running demo bot."""
    who = os.environ.get("DEMO_USER", "patti").lower()
    if who not in PLAYGROUND_USERS:
        raise SystemExit(f"DEMO_USER must be one of {', '.join(PLAYGROUND_USERS)}")
    bot_port = int(os.environ.get("PORT", "3978"))
    await wait_ready(f"http://127.0.0.1:{bot_port}/healthz", timeout=5)
    cwd = ROOT / "data" / f"playground-{who}"
    prepare_playground_dir(cwd, who, "00000000-0000-0000-0000-0000000000001")
    process = await start_playground(bot_port, 0, cwd)
    try:
        port = await playground_port(process)
        print(
            f"\n  Second Playground: http://localhost:{port}   (signed in as {PLAYGROUND_USERS[who][1]})\n", flush=True
        )
        await asyncio.gather(process.wait(), drain(process.stdout))
    finally:
        await stop(process)


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(second_playground() if "--second" in sys.argv else run())


if __name__ == "__main__":
    main()
