"""The batched lookup of a list: one $batch sub-request per entry and round, re-verified exactly like one device."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest

from bot.devices import BatchLookup, DeviceDirectory
from bot.graph import GraphClient, MsalTokenSource
from simulator import Simulator
from tests.harness import settings_for


@pytest.fixture
async def graph(sim: Simulator) -> AsyncIterator[GraphClient]:
    settings = settings_for(sim, "sqlite+aiosqlite:///:memory:", GRAPH_TIMEOUT="2")
    client = GraphClient(settings, MsalTokenSource(settings, settings.graph_resource), GraphClient.build_http(settings))
    await client.get("/beta/deviceManagement/managedDevices", {"$top": "1"})  # the token first, not counted below
    yield client
    await client.aclose()


def chrome(sim: Simulator) -> list[dict]:
    return sorted(
        (d for d in sim.state.devices.values() if d["deviceType"] == "chromeOS" and d["serialNumber"]),
        key=lambda d: d["deviceName"],
    )


@pytest.mark.parametrize("count", [1, 20, 21, 45])
async def test_serials_cost_one_round_trip_per_twenty(sim: Simulator, graph: GraphClient, count: int) -> None:
    devices = chrome(sim)[:count]
    assert len(devices) == count
    before = graph.stats.calls
    results = await BatchLookup(graph).find_many([d["serialNumber"] for d in devices])
    assert graph.stats.calls - before == math.ceil(count / 20)  # ≤ ⌈N/20⌉ + 2
    assert [r.device.id if r.device else None for r in results] == [d["id"] for d in devices]
    assert {r.matched_by for r in results} == {"serial"}


async def test_names_and_ids_take_a_second_round_only_for_the_misses(sim: Simulator, graph: GraphClient) -> None:
    devices = chrome(sim)[:30]
    entries = [d["deviceName"] for d in devices[:10]] + [d["id"] for d in devices[10:20]]
    entries += [d["azureADDeviceId"] for d in devices[20:25]] + ["NO-SUCH-DEVICE"]
    before = graph.stats.calls
    results = await BatchLookup(graph).find_many(entries)
    # round 1: 26 entries (2 batches); round 2: 10 names + 5 Entra ids + 1 miss (1 batch)
    assert graph.stats.calls - before == 3
    expected = [d["id"] for d in devices[:25]] + [None]
    found = [r.device.id if r.device else None for r in results]
    assert found == expected
    labels = [r.matched_by for r in results]
    assert labels == ["name"] * 10 + ["intune_id"] * 10 + ["entra_device_id"] * 5 + [""]


async def test_same_answers_as_the_single_lookup(sim: Simulator, graph: GraphClient) -> None:
    entries = ["NHS-LIB-01", "nhs-cart3-01", "O'Brien-Lab-01", "5cd0832tgl", "x' or 1 eq 1 or 'a", "Chrome- PFSXKG0X"]
    many = await BatchLookup(graph).find_many(entries)
    directory = DeviceDirectory(graph)
    for entry, result in zip(entries, many, strict=True):
        single = await directory.find(entry)
        assert (result.device, result.candidates, result.matched_by) == (
            single.device,
            single.candidates,
            single.matched_by,
        ), entry


async def test_an_ignored_filter_is_never_trusted(sim: Simulator, graph: GraphClient) -> None:
    sim.control.ignore_filters = True  # Graph returns the whole tenant for every filter
    sim.page_size = 5
    results = await BatchLookup(graph).find_many(["NHS-CART7-01", "NO-SUCH-DEVICE"])
    assert all(r.incomplete and r.device is None for r in results)
