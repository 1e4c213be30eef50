"""The Graph call budget of one permission check, and the role catalogue's TTL cache.

Budget (issue 5): with a warm role catalogue at most 2 Graph HTTP round trips for the typical case
(requester memberships + device scope, one ``$batch`` each), cold at most 5. Counted twice, independently:
``GraphClient.stats.calls`` (the client's top-level requests) and ``Simulator.round_trips()`` (what the server
saw, a ``$batch`` counting once). The simulator pages lists by 5, so the cold catalogue needs follow-up pages.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import pytest_asyncio

from bot.devices import Device
from bot.graph import GraphClient, MsalTokenSource
from bot.rbac import Catalog, DenyReason, RbacChecker
from simulator import Simulator
from simulator.testing import running_simulator
from tests.harness import ADELE, ALEX, EVERYONE, ISAIAH, LYNNE, MEGAN, PATTI, User, settings_for

HELPDESK_OPERATORS = "b9155c07-315c-5251-83a0-4b3c4801f5a1"
HELPDESK_OPERATOR_ROLE = "9e0cc482-82df-4ab2-a24c-0c23a3f52e1e"

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Rig:
    sim: Simulator
    graph: GraphClient
    checker: RbacChecker

    def mark(self) -> tuple[int, int]:
        return self.graph.stats.calls, len(self.sim.round_trips())

    def spent(self, mark: tuple[int, int]) -> int:
        """Round trips since ``mark``; both counters must agree."""
        client = self.graph.stats.calls - mark[0]
        server = len(self.sim.round_trips()) - mark[1]
        assert client == server, (client, server)
        return client

    async def check(self, user_id: str, device: Device) -> tuple[int, bool, DenyReason | None]:
        mark = self.mark()
        decision = await self.checker.check(user_id, device)
        return self.spent(mark), decision.allowed, decision.reason


RigFactory = Callable[..., Rig]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_sim() -> AsyncIterator[Simulator]:
    async with running_simulator(page_size=5) as simulator:
        yield simulator


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tokens(module_sim: Simulator) -> MsalTokenSource:
    settings = settings_for(module_sim, "sqlite+aiosqlite:///:memory:")
    source = MsalTokenSource(settings, settings.graph_resource)
    await source.token()  # token requests are not Graph round trips; keep them out of the counts
    return source


@pytest_asyncio.fixture(loop_scope="module")
async def make_rig(module_sim: Simulator, tokens: MsalTokenSource) -> AsyncIterator[RigFactory]:
    """A fresh checker (cold catalogue, cold device-object cache) on a freshly seeded tenant."""
    module_sim.reset_state()
    module_sim.control.reset()
    graphs: list[GraphClient] = []

    def factory(**env: str) -> Rig:
        settings = settings_for(module_sim, "sqlite+aiosqlite:///:memory:", **env)
        graph = GraphClient(settings, tokens, GraphClient.build_http(settings))
        graphs.append(graph)
        return Rig(module_sim, graph, RbacChecker(settings, graph))

    yield factory
    for graph in graphs:
        await graph._http.aclose()


def device(sim: Simulator, name: str) -> Device:
    rows = [d for d in sim.state.devices.values() if d["deviceName"] == name]
    assert len(rows) == 1, name
    return Device.from_graph(rows[0])


def catalogue_fetches(sim: Simulator, since: int = 0) -> int:
    """Role catalogue fetches the server saw (each asks for the scope tags exactly once)."""
    return sum(1 for c in sim.calls[since:] if c.path.endswith("/deviceManagement/roleScopeTags"))


# -- cold -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "name", "allowed"),
    [
        (ALEX, "NHS-CART3-01", True),  # allDevices
        (ISAIAH, "RMS-LOANER-01", True),  # resourceScope through the device object: needs the 2nd trip
        (ISAIAH, "NHS-CART3-01", False),  # same, denied
        (ADELE, "RMS-LOANER-01", False),
        (PATTI, "LES-STAFF-01", True),
    ],
)
async def test_cold_first_check_within_five_round_trips(
    make_rig: RigFactory, user: User, name: str, allowed: bool
) -> None:
    rig = make_rig()
    spent, ok, _ = await rig.check(user.aad_id, device(rig.sim, name))
    assert ok is allowed
    assert spent <= 5, rig.graph.stats.by_path
    assert catalogue_fetches(rig.sim) == 1


# -- warm -------------------------------------------------------------------------------------------------


async def test_warm_alex_all_devices_is_one_round_trip(make_rig: RigFactory) -> None:
    rig = make_rig()
    await rig.checker.catalog()
    for name in ("NHS-CART3-01", "RMS-LOANER-01", "LES-STAFF-01", "Chrome- PFKP4A5R"):
        assert await rig.check(ALEX.aad_id, device(rig.sim, name)) == (1, True, None), name


async def test_warm_isaiah_resource_scope_is_at_most_two_round_trips(make_rig: RigFactory) -> None:
    rig = make_rig()
    await rig.checker.catalog()
    loaner = device(rig.sim, "RMS-LOANER-01")
    first = await rig.check(ISAIAH.aad_id, loaner)  # device object id not known yet
    assert first[1:] == (True, None) and first[0] <= 2
    assert await rig.check(ISAIAH.aad_id, loaner) == (1, True, None)  # its object id is immutable: cached
    outside = device(rig.sim, "NHS-CART3-01")
    denied = await rig.check(ISAIAH.aad_id, outside)
    assert denied[1:] == (False, DenyReason.OUT_OF_SCOPE_GROUPS) and denied[0] <= 2
    assert await rig.check(ISAIAH.aad_id, outside) == (1, False, DenyReason.OUT_OF_SCOPE_GROUPS)
    # Device with a primary user in scope: still within budget.
    student = device(rig.sim, "Chrome- 5CD3535YMN")
    spent, ok, _ = await rig.check(ISAIAH.aad_id, student)
    assert ok and spent <= 2


async def test_warm_budget_for_every_demo_user_and_device(make_rig: RigFactory) -> None:
    rig = make_rig()
    await rig.checker.catalog()
    worst = 0
    for user in EVERYONE:
        for row in list(rig.sim.state.devices.values())[:12]:
            spent, _, _ = await rig.check(user.aad_id, Device.from_graph(row))
            worst = max(worst, spent)
    assert worst <= 2
    assert catalogue_fetches(rig.sim) == 1


async def test_warm_denials_without_scope_assignments_are_one_round_trip(make_rig: RigFactory) -> None:
    rig = make_rig()
    await rig.checker.catalog()
    assert await rig.check(MEGAN.aad_id, device(rig.sim, "NHS-CART3-01")) == (1, False, DenyReason.NO_ROLE)
    assert await rig.check(LYNNE.aad_id, device(rig.sim, "RMS-LOANER-01")) == (1, False, DenyReason.NO_ROLE)
    assert await rig.check(ADELE.aad_id, device(rig.sim, "LES-STAFF-01")) == (1, False, DenyReason.OUT_OF_SCOPE_TAGS)
    assert await rig.check(PATTI.aad_id, device(rig.sim, "LES-RM12-01")) == (1, True, None)


async def test_many_admin_groups_stay_in_one_round_trip(make_rig: RigFactory) -> None:
    """45 more admin groups: checkMemberGroups is chunked by 20 ids, all chunks in the same $batch."""
    rig = make_rig()
    state = rig.sim.state
    for i in range(45):
        gid, aid = str(uuid.uuid4()), str(uuid.uuid4())
        state.groups[gid] = {"id": gid, "displayName": f"Admins {i}", "securityEnabled": True, "members": []}
        state.role_assignments[aid] = {
            "id": aid,
            "displayName": f"Extra {i}",
            "members": [gid],
            "scopeType": "allDevices",
            "resourceScopes": [],
            "scopeMembers": [],
            "roleScopeTagIds": [],
            "roleDefinitionId": HELPDESK_OPERATOR_ROLE,
        }
    state.groups[gid]["members"].append(LYNNE.aad_id)  # only the last group grants Lynne the role
    await rig.checker.catalog()
    mark = len(rig.sim.calls)
    assert await rig.check(LYNNE.aad_id, device(rig.sim, "NHS-CART3-01")) == (1, True, None)
    chunks = [c.body["groupIds"] for c in rig.sim.calls[mark:] if c.path.endswith("/checkMemberGroups")]
    assert len(chunks) >= 3 and all(len(ids) <= 20 for ids in chunks)


# -- the TTL cache ----------------------------------------------------------------------------------------


async def poll_new_catalogue(checker: RbacChecker, stale: Catalog, timeout: float = 5.0) -> Catalog:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = await checker.catalog()
        if current is not stale:
            return current
        await asyncio.sleep(0.01)
    raise AssertionError("the role catalogue was never refreshed")


def grant_lynne(sim: Simulator) -> None:
    sim.state.groups[HELPDESK_OPERATORS]["members"].append(LYNNE.aad_id)


async def test_within_ttl_the_catalogue_is_not_fetched_again(make_rig: RigFactory) -> None:
    rig = make_rig()
    first = await rig.checker.catalog()
    for _ in range(3):
        await rig.checker.check(ALEX.aad_id, device(rig.sim, "NHS-CART3-01"))
    assert await rig.checker.catalog() is first
    assert catalogue_fetches(rig.sim) == 1


async def test_expired_catalogue_is_served_stale_and_refreshed_in_the_background(make_rig: RigFactory) -> None:
    rig = make_rig(RBAC_CACHE_TTL="200ms")
    lynne_device = device(rig.sim, "NHS-CART3-01")
    stale = await rig.checker.catalog()
    # A new assignment appears in Intune (Lynne's group membership itself is never cached, so use a new role).
    aid = str(uuid.uuid4())
    lynne_group = str(uuid.uuid4())
    rig.sim.state.groups[lynne_group] = {
        "id": lynne_group,
        "displayName": "L",
        "securityEnabled": True,
        "members": [LYNNE.aad_id],
    }
    rig.sim.state.role_assignments[aid] = {
        "id": aid,
        "displayName": "Lynne's new assignment",
        "members": [lynne_group],
        "scopeType": "allDevices",
        "resourceScopes": [],
        "scopeMembers": [],
        "roleScopeTagIds": [],
        "roleDefinitionId": HELPDESK_OPERATOR_ROLE,
    }
    assert (await rig.checker.check(LYNNE.aad_id, lynne_device)).reason == DenyReason.NO_ROLE  # within TTL
    await asyncio.sleep(0.25)

    rig.sim.control.latency = 0.1  # every Graph call now takes 0.1 s: a blocking refresh (3 calls) would show
    mark = rig.mark()
    started = time.perf_counter()
    served = await rig.checker.catalog()
    assert served is stale
    assert time.perf_counter() - started < 0.1
    assert rig.mark() == mark  # nothing was awaited on Graph
    for _ in range(5):  # more callers while the refresh is in flight: still one refresh
        assert await rig.checker.catalog() is stale
    decision = await rig.checker.check(LYNNE.aad_id, lynne_device)  # decided on the stale copy
    assert decision.reason == DenyReason.NO_ROLE

    fresh = await poll_new_catalogue(rig.checker, stale)
    rig.sim.control.latency = 0.0
    assert aid in {a.id for a in fresh.assignments}
    assert catalogue_fetches(rig.sim) == 2
    after = await rig.checker.check(LYNNE.aad_id, lynne_device)
    assert after.allowed and after.assignment_id == aid


async def test_failed_background_refresh_keeps_the_stale_catalogue(make_rig: RigFactory) -> None:
    rig = make_rig(RBAC_CACHE_TTL="100ms")
    nhs = device(rig.sim, "NHS-CART3-01")
    stale = await rig.checker.catalog()
    await asyncio.sleep(0.15)
    rig.sim.control.add_fault(path=r"/deviceManagement/roleDefinitions$", status=500, count=100)
    await rig.checker.catalog()  # starts a refresh that fails
    for _ in range(500):
        if any(c.path.endswith("/roleDefinitions") and c.status == 500 for c in rig.sim.calls):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("no refresh was attempted")
    assert await rig.checker.catalog() is stale
    assert (await rig.checker.check(ALEX.aad_id, nhs)).allowed  # still served, still decided
    rig.sim.control.faults.clear()
    grant_lynne(rig.sim)
    fresh = await poll_new_catalogue(rig.checker, stale)  # the next caller retried the refresh
    assert fresh.fetched_at > stale.fetched_at
    assert (await rig.checker.check(LYNNE.aad_id, nhs)).allowed
