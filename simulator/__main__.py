"""``python -m simulator --seed PATH --port 8443 [--page-size N] [--latency-ms N] [--env-file PATH]``."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from .seed import DEMO_SEED_PATH, load_seed
from .server import Simulator


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    p.add_argument("--seed", default=str(DEMO_SEED_PATH), help="seed YAML (default: demo)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8443, help="0 = any free port")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--action-delay", type=float, default=2.0, help="seconds until pending → done")
    p.add_argument("--env-file", help="write a dotenv file for the bot here")
    return p.parse_args(argv)


def _write_env(path: Path, env: dict[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()), encoding="utf-8")


async def _serve(args: argparse.Namespace) -> None:
    sim = Simulator(seed=load_seed(args.seed), page_size=args.page_size)
    sim.control.latency = args.latency_ms / 1000.0
    sim.control.action_completion_delay = args.action_delay
    await sim.start(host=args.host, port=args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    env = sim.env()
    print(f"Graph base URL    {sim.base_url}  (GRAPH_BASE_URL)")
    print(f"Authority         {sim.authority}  (AZURE_AUTHORITY_HOST={sim.authority_host})")
    print(f"Bot Framework     {sim.botframework_metadata_url}  (BOTFRAMEWORK_OPENID_METADATA)")
    print(f"CA certificate    {sim.ca_path}  (SSL_CERT_FILE / REQUESTS_CA_BUNDLE)")
    print(f"Tenant id         {sim.tenant_id}")
    print(f"Client id         {sim.client_id}")
    print(f"Control API       {sim.base_url}/_sim/control | /_sim/calls | /_sim/stats")
    if args.env_file:
        _write_env(Path(args.env_file), env)
        print(f"Env file          {args.env_file}")
    print(f"ready {sim.base_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(_serve(_parse(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
