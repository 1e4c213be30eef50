"""Graph round trips of a message turn (issue #18), counted over HTTP in the simulator's call log (a ``$batch`` is
one round trip): the exact lookup and the requester's facts go in one ``$batch``; a second round trip only when a
serial misses (then the device name), a GUID is no Intune id (then an Entra device id), or a scope group needs the
device's or its primary user's memberships. The role catalogue is cached (warmed first: it is not per turn).
"""

from __future__ import annotations

import math

import pytest

from simulator import Simulator
from tests.conftest import BotFactory
from tests.harness import ADELE, ALEX, ISAIAH, MEGAN, BotUnderTest, User, action_id_of, card_text, verbs_in

PRADEEP = User("b7a165a9-3d85-5e2f-b4d7-7d0857fb1e95", "Pradeep Gupta")  # School Administrator, users scope group


@pytest.fixture
async def bot(make_bot: BotFactory) -> BotUnderTest:
    bot = await make_bot()
    await bot.running.rbac.catalog()  # cached with a TTL: not part of a turn
    return bot


async def turn(bot: BotUnderTest, sim: Simulator, user: User, text: str) -> tuple[int, str, list[str]]:
    """One message turn: its round trips, the reply's text (card or plain) and the card's verbs."""
    before = len(sim.round_trips())
    replies = await bot.say(user, text)
    assert replies, text
    reply = replies[-1]
    card = reply.cards[0] if reply.cards else None
    spent = len(sim.round_trips()) - before
    return spent, card_text(card) if card else reply.text, verbs_in(card) if card else []


def only_batches(sim: Simulator, since: int) -> bool:
    return all(c.path.endswith("/$batch") for c in sim.round_trips()[since:])


@pytest.mark.parametrize(
    ("user", "target", "name"),
    [
        (ALEX, "5CD0832TGL", "NHS-CART3-01"),  # Help Desk Operator, all devices
        (ADELE, "5CD0832TGL", "NHS-CART3-01"),  # School Administrator, scope tag Northside High
        (ALEX, "27ab6835-99f8-5907-ac4d-64c0365f0d40", "NHS-CART3-01"),  # an Intune id
    ],
)
async def test_tenant_wide_and_tag_scoped_requesters_cost_one_round_trip(
    bot: BotUnderTest, sim: Simulator, user: User, target: str, name: str
) -> None:
    mark = len(sim.round_trips())
    spent, text, verbs = await turn(bot, sim, user, f"deprovision {target}")
    assert spent == 1, sim.round_trips()[mark:]
    assert only_batches(sim, mark)
    assert name in text and "deprovision.confirm" in verbs


async def test_a_device_outside_the_tag_gets_the_uniform_answer_after_one_lookup_trip(
    bot: BotUnderTest, sim: Simulator
) -> None:
    mark = len(sim.round_trips())
    _, text, _ = await turn(bot, sim, ADELE, "deprovision PFX6JNRW")  # LES-STAFF-01: another school's tag
    assert "No device you can manage matches" in text  # not readable: the uniform answer
    # One $batch decided it (lookup + requester's facts); what follows are the unchanged "did you mean" look-ups,
    # made as for a device that does not exist.
    trips = sim.round_trips()[mark:]
    assert trips[0].path.endswith("/$batch")
    assert all("startswith" in str(c.query) for c in trips[1:] if c.method == "GET"), trips


async def test_read_only_role_is_denied_in_one_round_trip(bot: BotUnderTest, sim: Simulator) -> None:
    spent, text, verbs = await turn(bot, sim, MEGAN, "deprovision 5CD0832TGL")
    assert spent == 1 and verbs == []
    assert "NHS-CART3-01" in text


async def test_a_users_scope_group_costs_a_second_round_trip(bot: BotUnderTest, sim: Simulator) -> None:
    # LES-STAFF-01's primary user is in Pradeep's scope group (Lakeview Staff).
    spent, text, verbs = await turn(bot, sim, PRADEEP, "deprovision PFX6JNRW")
    assert spent == 2
    assert "LES-STAFF-01" in text and "deprovision.confirm" in verbs


async def test_a_devices_scope_group_costs_two_once_the_device_object_is_known(
    bot: BotUnderTest, sim: Simulator
) -> None:
    # RMS-LOANER-01 is in Isaiah's scope group (RMS Chromebooks) as an Entra device object. The first turn also
    # resolves that object's id (azureADDeviceId → object id, immutable, then cached): three round trips once.
    first, text, verbs = await turn(bot, sim, ISAIAH, "deprovision NXHQEAA500959207600")
    assert first == 3 and "RMS-LOANER-01" in text and "deprovision.confirm" in verbs
    again, text, verbs = await turn(bot, sim, ISAIAH, "deprovision NXHQEAA500959207600")
    assert again == 2 and "RMS-LOANER-01" in text and "deprovision.confirm" in verbs
    # Outside his scope group: the uniform answer.
    _, text, _ = await turn(bot, sim, ISAIAH, "deprovision 5CD0832TGL")
    assert "No device you can manage matches" in text


async def test_a_name_costs_a_second_round_trip(bot: BotUnderTest, sim: Simulator) -> None:
    """A serial lookup that misses tries the device name (Graph cannot ``or`` across properties)."""
    mark = len(sim.round_trips())
    spent, text, verbs = await turn(bot, sim, ALEX, "deprovision NHS-CART3-01")
    assert spent == 2 and only_batches(sim, mark)
    assert "5CD0832TGL" in text and "deprovision.confirm" in verbs


async def test_an_entra_device_id_costs_a_second_round_trip(bot: BotUnderTest, sim: Simulator) -> None:
    spent, text, verbs = await turn(bot, sim, ALEX, "deprovision a7596301-0064-511b-bd4b-09ff40c05e0d")
    assert spent == 2
    assert "NHS-CART3-01" in text and "deprovision.confirm" in verbs


async def test_the_confirm_turn_is_the_safety_floor(bot: BotUnderTest, sim: Simulator) -> None:
    """Confirming re-reads the device and re-checks the role (one $batch), then POSTs: two round trips."""
    before = len(sim.round_trips())
    replies = await bot.say(ALEX, "deprovision 5CD0832TGL")
    action_id = action_id_of(replies[-1].cards[0])
    middle = len(sim.round_trips())
    await bot.click(ALEX, "deprovision.confirm", {"actionId": action_id, "reason": "retiring_device"})
    trips = [c.path.rsplit("/", 1)[-1] for c in sim.round_trips()[middle:]]
    assert middle - before == 1 and trips == ["$batch", "deprovision"]


@pytest.mark.parametrize("count", [1, 30, 40])
async def test_a_list_of_serials_stays_within_the_bulk_budget(bot: BotUnderTest, sim: Simulator, count: int) -> None:
    """Lookups and role checks of a list: the requester's facts ride in the first lookup batch."""
    serials = sorted(
        d["serialNumber"]
        for d in sim.state.devices.values()
        if d["deviceType"] == "chromeOS" and d["serialNumber"] and d.get("roleScopeTagIds") == ["1"]
    )[:count]
    assert len(serials) == count
    before = len(sim.round_trips())
    replies = await bot.say(ADELE, "deprovision " + ("\n".join(["serial", *serials]) if count > 1 else serials[0]))
    spent = len(sim.round_trips()) - before
    assert spent <= math.ceil(count / 20) + 2 and spent == math.ceil((count + 2) / 20), spent
    assert replies[-1].cards
