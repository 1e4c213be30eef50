"""Finding exactly one device, against the simulated Graph over HTTPS — and the pure helpers behind it."""

from __future__ import annotations

import copy
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.devices import (
    MAX_CANDIDATES,
    MAX_QUERY_LENGTH,
    Device,
    DeviceDirectory,
    LookupResult,
    clean_query,
    is_chromeos,
)
from bot.errors import GraphUnavailable, InvalidInput
from bot.graph import GraphClient, MsalTokenSource
from simulator import Simulator
from simulator.control import Call
from simulator.odata import parse_filter
from tests.harness import settings_for

LIST_PATH = "/beta/deviceManagement/managedDevices"
CART3_01 = {
    "id": "27ab6835-99f8-5907-ac4d-64c0365f0d40",
    "name": "NHS-CART3-01",
    "serial": "5CD0832TGL",
    "entra": "a7596301-0064-511b-bd4b-09ff40c05e0d",
}
LIB_01_IDS = {"1d9517ee-8877-5112-a57d-eb3a333de5c9", "235312de-1414-56f7-a0f1-81a787873fac"}
OBRIEN_ID = "024fc40a-add7-5ff8-ad96-69d8bc3c1dac"


@pytest.fixture
async def directory(sim: Simulator) -> AsyncIterator[DeviceDirectory]:
    settings = settings_for(sim, "sqlite+aiosqlite:///:memory:", GRAPH_TIMEOUT="1")
    tokens = MsalTokenSource(settings, settings.graph_resource)
    graph = GraphClient(settings, tokens, GraphClient.build_http(settings))
    yield DeviceDirectory(graph)
    await graph._http.aclose()


def list_calls(sim: Simulator) -> list[Call]:
    return [c for c in sim.calls if c.method == "GET" and c.path == LIST_PATH]


def filters(sim: Simulator) -> list[str]:
    """The ``$filter`` of every first-page list call, in order (nextLink pages repeat it)."""
    return [c.query["$filter"] for c in list_calls(sim) if "$skiptoken" not in c.query]


def add_device(sim: Simulator, template_id: str, **fields: Any) -> dict[str, Any]:
    """A copy of a seeded device with a new id and the given fields (tests may edit the tenant directly)."""
    device = copy.deepcopy(sim.state.devices[template_id])
    device.update(id=str(uuid.uuid4()), **fields)
    sim.state.devices[device["id"]] = device
    return device


# -- each lookup path ----------------------------------------------------------------------------------


async def test_intune_id(sim: Simulator, directory: DeviceDirectory) -> None:
    result = await directory.find(CART3_01["id"].upper())
    assert result.found and result.device is not None
    assert (result.matched_by, result.total_matches) == ("intune_id", 1)
    assert result.device.id == CART3_01["id"]
    assert result.device.serial == CART3_01["serial"]
    assert [(c.method, c.path) for c in sim.calls] == [("GET", f"{LIST_PATH}/{CART3_01['id']}")]


async def test_entra_device_id(sim: Simulator, directory: DeviceDirectory) -> None:
    result = await directory.find(CART3_01["entra"])
    assert result.device is not None
    assert (result.matched_by, result.device.id) == ("entra_device_id", CART3_01["id"])
    assert result.device.azure_ad_device_id == CART3_01["entra"]
    assert [c.status for c in sim.calls] == [404, 200]  # tried as an Intune id first
    assert filters(sim) == [f"azureADDeviceId eq '{CART3_01['entra']}'"]


async def test_serial(sim: Simulator, directory: DeviceDirectory) -> None:
    result = await directory.find(CART3_01["serial"].lower())
    assert result.device is not None
    assert (result.matched_by, result.device.id) == ("serial", CART3_01["id"])
    assert filters(sim) == [f"serialNumber eq '{CART3_01['serial'].lower()}'"]
    assert list_calls(sim)[0].query["$select"].split(",")[:3] == ["id", "deviceName", "serialNumber"]


async def test_device_name_after_serial(sim: Simulator, directory: DeviceDirectory) -> None:
    result = await directory.find("  nhs-cart3-01 ")
    assert result.device is not None
    assert (result.matched_by, result.device.id, result.query) == ("name", CART3_01["id"], "nhs-cart3-01")
    assert filters(sim) == ["serialNumber eq 'nhs-cart3-01'", "deviceName eq 'nhs-cart3-01'"]


async def test_serial_wins_over_a_device_named_like_it(sim: Simulator, directory: DeviceDirectory) -> None:
    impostor = add_device(sim, OBRIEN_ID, deviceName=CART3_01["serial"], serialNumber="IMPOSTOR1")
    result = await directory.find(CART3_01["serial"])
    assert result.device is not None
    assert (result.matched_by, result.device.id) == ("serial", CART3_01["id"])
    assert result.device.id != impostor["id"]
    assert filters(sim) == [f"serialNumber eq '{CART3_01['serial']}'"]


async def test_serial_with_url_special_characters(sim: Simulator, directory: DeviceDirectory) -> None:
    result = await directory.find("PF2K9&7+QZ")
    assert result.device is not None
    assert (result.matched_by, result.device.name) == ("serial", "LES-RM12-04")
    assert filters(sim) == ["serialNumber eq 'PF2K9&7+QZ'"]


# -- duplicates, not found, non-ChromeOS ---------------------------------------------------------------


async def test_duplicate_names_are_ambiguous(sim: Simulator, directory: DeviceDirectory) -> None:
    first = sim.state.devices["1d9517ee-8877-5112-a57d-eb3a333de5c9"]
    first.update(userDisplayName="Alex Wilber", userPrincipalName="AlexW@contoso.edu")
    result = await directory.find("NHS-LIB-01")
    assert not result.found and result.ambiguous
    assert (result.matched_by, result.total_matches) == ("name", 2)
    assert {d.id for d in result.candidates} == LIB_01_IDS
    by_serial = {d.serial: d for d in result.candidates}
    assert set(by_serial) == {"PF881HK3", "PF9XH00P"}
    assert by_serial["PF881HK3"].primary_user == "Alex Wilber"
    assert by_serial["PF881HK3"].last_sync == "2025-10-24T19:53:45Z"
    assert by_serial["PF9XH00P"].primary_user == ""
    assert by_serial["PF9XH00P"].last_sync == "2025-10-26T17:20:29Z"
    assert all(d.name == "NHS-LIB-01" and d.is_chromeos for d in result.candidates)


async def test_at_most_ten_candidates(sim: Simulator, directory: DeviceDirectory) -> None:
    for i in range(12):
        add_device(sim, "1d9517ee-8877-5112-a57d-eb3a333de5c9", serialNumber=f"DUP{i:02d}", deviceName="nhs-lib-01")
    result = await directory.find("NHS-LIB-01")
    assert result.ambiguous
    assert result.total_matches == 14
    assert len(result.candidates) == MAX_CANDIDATES
    keys = [(d.name.lower(), d.serial) for d in result.candidates]
    assert keys == sorted(keys)
    assert len(list_calls(sim)) > 2  # 15 rows over pages of 5: the later pages were read too


async def test_not_found(sim: Simulator, directory: DeviceDirectory) -> None:
    result = await directory.find("NO-SUCH-DEVICE")
    assert result == LookupResult(query="NO-SUCH-DEVICE")
    assert not result.found and not result.ambiguous
    assert filters(sim) == ["serialNumber eq 'NO-SUCH-DEVICE'", "deviceName eq 'NO-SUCH-DEVICE'"]


async def test_unknown_guid_is_not_found(sim: Simulator, directory: DeviceDirectory) -> None:
    guid = "99999999-9999-4999-8999-999999999999"
    result = await directory.find(guid)
    assert not result.found and not result.candidates
    assert [c.status for c in sim.calls] == [404, 200]
    assert filters(sim) == [f"azureADDeviceId eq '{guid}'"]  # a GUID is never tried as a serial or name


@pytest.mark.parametrize(
    ("query", "operating_system", "device_type"),
    [("NHS-OFFICE-PC01", "Windows", "windowsRT"), ("LES-IPAD-01", "iOS", "iPad")],
)
async def test_non_chromeos_device_is_found_but_flagged(
    directory: DeviceDirectory, query: str, operating_system: str, device_type: str
) -> None:
    result = await directory.find(query)
    assert result.device is not None
    assert (result.device.name, result.device.operating_system) == (query, operating_system)
    assert result.device.device_type == device_type
    assert not result.device.is_chromeos


async def test_chrome_os_with_a_space_is_chromeos(directory: DeviceDirectory) -> None:
    result = await directory.find("O'Brien-Lab-01")
    assert result.device is not None
    assert result.device.operating_system == "Chrome OS"
    assert result.device.is_chromeos


# -- the silently ignored filter -----------------------------------------------------------------------


def lookup_cases(sim: Simulator) -> list[tuple[str, str, str, int]]:
    """(query, matched_by, device id, list steps taken) — the last device sits on the last page of the tenant."""
    last = list(sim.state.devices.values())[-1]
    return [
        (CART3_01["serial"], "serial", CART3_01["id"], 1),
        (CART3_01["name"], "name", CART3_01["id"], 2),
        (CART3_01["entra"], "entra_device_id", CART3_01["id"], 1),
        (last["deviceName"], "name", last["id"], 2),
        (last["serialNumber"], "serial", last["id"], 1),
    ]


async def test_ignored_filter_still_finds_exactly_the_right_device(sim: Simulator, directory: DeviceDirectory) -> None:
    sim.control.ignore_filters = True
    pages = math.ceil(len(sim.state.devices) / sim.page_size)
    assert pages > 2
    for query, matched_by, device_id, steps in lookup_cases(sim):
        sim.calls.clear()
        result = await directory.find(query)
        assert result.device is not None, query
        assert (result.matched_by, result.device.id, result.total_matches) == (matched_by, device_id, 1), query
        # The whole tenant came back for every step, and every nextLink page was read.
        assert len(list_calls(sim)) == steps * pages, query


async def test_ignored_filter_never_returns_a_non_matching_device(sim: Simulator, directory: DeviceDirectory) -> None:
    sim.control.ignore_filters = True
    result = await directory.find("NO-SUCH-DEVICE")
    assert not result.found and not result.candidates and not result.incomplete
    assert len(list_calls(sim)) == 2 * math.ceil(len(sim.state.devices) / sim.page_size)

    duplicates = await directory.find("NHS-LIB-01")
    assert {d.id for d in duplicates.candidates} == LIB_01_IDS
    assert duplicates.total_matches == 2


# -- OData injection -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ignore_filters", [False, True])
@pytest.mark.parametrize(
    "attack",
    [
        "x' or deviceName eq 'y",
        "NHS-LIB-01' or serialNumber eq '5CD0832TGL",
        "5CD0832TGL') or (deviceName eq 'NHS-LIB-01",
        "' or 1 eq 1 or ''='",
    ],
)
async def test_injection_is_one_literal_clause(
    sim: Simulator, directory: DeviceDirectory, attack: str, ignore_filters: bool
) -> None:
    sim.control.ignore_filters = ignore_filters
    result = await directory.find(attack)
    assert not result.found and not result.candidates
    sent = filters(sim)
    doubled = attack.replace("'", "''")
    assert sent == [f"serialNumber eq '{doubled}'", f"deviceName eq '{doubled}'"]
    assert parse_filter(sent[0], ["serialNumber", "deviceName"]) == [("serialNumber", attack)]
    assert parse_filter(sent[1], ["serialNumber", "deviceName"]) == [("deviceName", attack)]


@pytest.mark.parametrize("typed", ["O'Brien-Lab-01", "o'brien-lab-01", "O＇Brien-Lab-01", '"O\'Brien-Lab-01"'])
async def test_apostrophe_in_a_name(sim: Simulator, directory: DeviceDirectory, typed: str) -> None:
    result = await directory.find(typed)
    assert result.device is not None
    assert (result.device.id, result.matched_by) == (OBRIEN_ID, "name")
    literal = result.query.replace("'", "''")
    assert filters(sim) == [f"serialNumber eq '{literal}'", f"deviceName eq '{literal}'"]
    assert "''" in filters(sim)[1]


# -- input bounds: refused before any network traffic ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("   \t ", "empty"),
        ('""', "empty"),
        ("“ ”", "empty"),
        ("A" * (MAX_QUERY_LENGTH + 1), "too_long"),
        ("NHS\x00LIB", "control"),
        ("NHS-LIB-01\nx", "control"),
        ("NHS\tLIB", "control"),
        ("NHS\x7fLIB", "control"),
        ("NHS\x85LIB", "control"),
        ("NHS\u200bLIB", "control"),
        ("NHS\u202eLIB", "control"),
        ("NHS\u2066LIB", "control"),
        ("NHS\ufeffLIB", "control"),
    ],
)
async def test_bad_input_is_refused_without_calling_graph(
    sim: Simulator, directory: DeviceDirectory, text: str, problem: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await directory.find(text)
    assert caught.value.problem == problem
    assert sim.calls == []
    assert sim.token_requests == []


async def test_longest_allowed_input_is_looked_up(sim: Simulator, directory: DeviceDirectory) -> None:
    result = await directory.find("A" * MAX_QUERY_LENGTH)
    assert not result.found
    assert len(filters(sim)) == 2


async def test_graph_failure_during_lookup_propagates(sim: Simulator, directory: DeviceDirectory) -> None:
    sim.control.add_fault("GET", LIST_PATH + "$", 503, count=50)
    directory._graph._sleep = _no_sleep
    with pytest.raises(GraphUnavailable):
        await directory.find(CART3_01["serial"])


async def _no_sleep(_delay: float) -> None:
    return None


# -- get / details -------------------------------------------------------------------------------------


async def test_get_and_details(sim: Simulator, directory: DeviceDirectory) -> None:
    assert await directory.get("not-a-guid") is None
    assert sim.calls == []
    assert await directory.get("99999999-9999-4999-8999-999999999999") is None
    device = await directory.get(CART3_01["id"])
    assert device is not None and device.name == CART3_01["name"]
    details = await directory.details(CART3_01["id"])
    status = {p["name"]: p["value"] for p in details["chromeOSDeviceInfo"]}
    assert status["deviceStatus"] == "Active"
    assert details["deviceActionResults"] == []


# -- pure helpers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("  5CD0832TGL  ", "5CD0832TGL"),
        ("`NHS-LIB-01`", "NHS-LIB-01"),
        ("“ NHS-LIB-01 ”", "NHS-LIB-01"),
        ('"O\'Brien-Lab-01"', "O'Brien-Lab-01"),
        ("ＮＨＳ－ＬＩＢ－０１", "NHS-LIB-01"),  # full-width forms folded by NFKC
        ("Chrome- 5CD3535YMN", "Chrome- 5CD3535YMN"),
        ("A" * MAX_QUERY_LENGTH, "A" * MAX_QUERY_LENGTH),
    ],
)
def test_clean_query(text: str, cleaned: str) -> None:
    assert clean_query(text) == cleaned


@pytest.mark.parametrize(
    ("operating_system", "device_type", "expected"),
    [
        ("ChromeOS", "", True),
        ("Chrome OS", "", True),
        ("chrome os", "", True),
        ("CHROMEOS", "", True),
        ("Chrome_OS", "", True),
        ("ChromeOS Flex", "", True),
        ("", "chromeOS", True),
        ("", "ChromeOS", True),
        ("Unknown", "chromeOS", True),
        ("Windows", "windowsRT", False),
        ("iOS", "iPad", False),
        ("Android", "androidEnterprise", False),
        ("Chrome", "", False),
        ("", "", False),
    ],
)
def test_is_chromeos(operating_system: str, device_type: str, expected: bool) -> None:
    assert is_chromeos(operating_system, device_type) is expected


def test_device_from_graph_reads_legacy_entra_id_and_tolerates_nulls() -> None:
    row = {
        "id": "d1",
        "deviceName": "Chrome- ABC",
        "serialNumber": "ABC",
        "operatingSystem": "Chrome OS",
        "deviceType": None,
        "azureActiveDirectoryDeviceId": "e1",
        "userPrincipalName": "AlexW@contoso.edu",
        "userDisplayName": None,
        "enrollmentProfileName": None,
        "roleScopeTagIds": None,
        "lastSyncDateTime": "2025-10-01T08:00:00Z",
    }
    device = Device.from_graph(row)
    assert device.azure_ad_device_id == "e1"
    assert (device.device_type, device.enrollment_profile, device.user_display_name) == ("", "", "")
    assert device.primary_user == "AlexW@contoso.edu"
    assert device.scope_tag_ids == ()
    assert device.effective_scope_tags == ("0",)
    assert device.is_chromeos
    assert Device.from_snapshot(device.snapshot()) == device

    current = Device.from_graph({**row, "azureADDeviceId": "e2", "roleScopeTagIds": [1, "2"]})
    assert current.azure_ad_device_id == "e2"
    assert current.scope_tag_ids == ("1", "2")
    assert Device.from_snapshot({**current.snapshot(), "unknown_later_field": 1}) == current
