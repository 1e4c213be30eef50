"""The simulated Microsoft cloud in its own process, for the benchmarks.

``python -m bench.sim_server --clones 12`` starts :class:`simulator.Simulator` on a free loopback port with the demo
seed plus ``clones`` copies of every active ChromeOS device (new ids, serials, names, Entra device objects and the
same scope-group memberships), so a confirm round can use hundreds of distinct devices without a restart. It
prints one JSON line ``{"base_url", "env", "devices": [{id, name, serial}]}`` on stdout and serves until SIGTERM.
The bench drives it over HTTP (``/_sim/control``, ``/_sim/stats``).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import re
import signal
import sys
import uuid
from typing import Any

from simulator import Simulator, load_seed

_NS = uuid.UUID("5b1c0d3e-6a0f-4c55-9a57-3a6e1f0b7c21")
_SAFE_SERIAL = re.compile(r"^[A-Z0-9]+$")


def _active_chromeos(device: dict[str, Any]) -> bool:
    os_name = str(device.get("operatingSystem") or "").replace(" ", "").casefold()
    return (
        os_name == "chromeos"
        and not device.get("deviceActionResults")
        and str(device.get("deviceStatus", "Active")) == "Active"
        and bool(_SAFE_SERIAL.match(str(device.get("serialNumber", ""))))
    )


def enlarged_seed(clones: int) -> dict[str, Any]:
    """The demo seed plus ``clones`` copies of each active ChromeOS device with a plain serial number."""
    seed = load_seed(None)
    originals = [d for d in seed.get("managed_devices") or [] if _active_chromeos(d)]
    groups_of: dict[str, list[dict[str, Any]]] = {}
    for group in seed.get("groups") or []:
        for member in group.get("members") or []:
            groups_of.setdefault(str(member), []).append(group)
    added: list[dict[str, Any]] = []
    for k in range(1, clones + 1):
        for original in originals:
            clone = copy.deepcopy(original)
            key = f"{original['id']}/{k}"
            clone["id"] = str(uuid.uuid5(_NS, key))
            clone["serialNumber"] = f"{original['serialNumber']}B{k:02d}"
            clone["deviceName"] = f"{original['deviceName']}-B{k:02d}"
            if original.get("azureADDeviceId"):
                clone["azureADDeviceId"] = str(uuid.uuid5(_NS, key + "/aad"))
            entra = original.get("entraObjectId")
            if entra:
                clone["entraObjectId"] = str(uuid.uuid5(_NS, key + "/obj"))
                for group in groups_of.get(str(entra), []):
                    group["members"].append(clone["entraObjectId"])
            added.append(clone)
    seed["managed_devices"] = list(seed.get("managed_devices") or []) + added
    return seed


async def serve(clones: int) -> None:
    seed = enlarged_seed(clones)
    sim = Simulator(seed=seed)
    await sim.start()
    devices = [
        {"id": d["id"], "name": d["deviceName"], "serial": d["serialNumber"]}
        for d in sim.state.devices.values()
        if _active_chromeos(
            {
                **d,
                "deviceStatus": next((p["value"] for p in d["chromeOSDeviceInfo"] if p["name"] == "deviceStatus"), ""),
            }
        )
    ]
    print(json.dumps({"base_url": sim.base_url, "env": sim.env(), "devices": devices}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sim_server")
    parser.add_argument("--clones", type=int, default=12)
    args = parser.parse_args()
    asyncio.run(serve(args.clones))
    sys.exit(0)


if __name__ == "__main__":
    main()
