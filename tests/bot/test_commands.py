"""The chat grammar: forgiving around the command, exact about the device."""

from __future__ import annotations

import time

import pytest

from bot import commands
from bot.commands import BulkDeprovision, Deprovision, Help, History, Invalid, Pending, Status, Unknown, parse


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("deprovision NHS-CART3-01", Deprovision("NHS-CART3-01")),
        ("Deprovision nhs-cart3-02 please", Deprovision("nhs-cart3-02")),
        ("DEPROVISION NHS-CART3-01!", Deprovision("NHS-CART3-01")),
        ("can you deprovision RMS-LOANER-01?", Deprovision("RMS-LOANER-01")),
        ("Could you please deprovision RMS-LOANER-01, thanks", Deprovision("RMS-LOANER-01")),
        ("please deprovision NHS-CART3-01.", Deprovision("NHS-CART3-01")),
        ("pls deprovision NHS-CART3-01 pls", Deprovision("NHS-CART3-01")),
        ("deprovision: NHS-CART3-01", Deprovision("NHS-CART3-01")),
        ("deprovision:NHS-CART3-01", Deprovision("NHS-CART3-01")),
        ("<at>Deprovision Bot</at> deprovision NHS-CART3-01", Deprovision("NHS-CART3-01")),
        ("deprovision <at>Deprovision Bot</at> NHS-CART3-01", Deprovision("NHS-CART3-01")),
        ("deprovision NHS-CART3-01 <at>Deprovision Bot</at>?", Deprovision("NHS-CART3-01")),
        ("deprovision NHS-CART3-01 reason: retiring please", Deprovision("NHS-CART3-01", "retiring_device")),
        ("deprovision NHS-CART3-01 because: rma", Deprovision("NHS-CART3-01", "same_model_replacement")),
        ("deprovision NHS-CART3-01 reason: lost it", Deprovision("NHS-CART3-01", None, "lost it")),
        # polite words never eat the device: a lone word after the verb is the device
        ("deprovision please", Deprovision("please")),
        ('deprovision "please" please', Deprovision("please")),
        ('deprovision "NHS-CART3-01."', Deprovision("NHS-CART3-01.")),
        ("deprovision O'Brien-Lab-01 please", Deprovision("O'Brien-Lab-01")),
        ("Status NHS-CART3-01?", Status("NHS-CART3-01")),
        ("can you show me the status", Unknown("the status")),
        ("History please", History()),
        ("history NHS-CART3-01?", History("NHS-CART3-01")),
        ("history?", History()),
        ("Pending!", Pending()),
        ("can you show pending?", Pending()),
        ("approvals pls", Pending()),
        ("help", Help()),
        ("Help!", Help()),
        ("?", Help()),
        ("hi", Help()),
        ("status", Invalid("empty", "status")),
        ("status?", Invalid("empty", "status")),
        ("deprovision", Invalid("empty", "deprovision")),
        ("please deprovision?", Invalid("empty", "deprovision")),
        ("deprovison NHS-CART3-01", Unknown("deprovison NHS-CART3-01", "deprovision")),
        ("stauts NHS-CART3-01", Unknown("stauts NHS-CART3-01", "status")),
        ("make me a sandwich", Unknown("make me a sandwich")),
        ("status ABC\x07DEF", Invalid("control", "status")),
        ("can you show history of \x07?", Invalid("control", "history")),
        ("pending " + "x" * 1000, Invalid("message_too_long", "pending")),
        ("x" * 1001, Invalid("message_too_long", "deprovision")),
    ],
)
def test_parse(text: str, expected: object) -> None:
    assert parse(text) == expected


# -- bulk: deprovision followed by several devices ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("deprovision A1, B2; C3", BulkDeprovision(("A1", "B2", "C3"))),
        ("deprovision\nSerial number\nPF83MNK5\nPFAK0D6F\n", BulkDeprovision(("PF83MNK5", "PFAK0D6F"))),
        ("<p>deprovision</p><p>serial</p><p>PF83MNK5</p><p>PFAK0D6F</p>", BulkDeprovision(("PF83MNK5", "PFAK0D6F"))),
        ("deprovision PF83MNK5<br>pf83mnk5<br/>PFAK0D6F", BulkDeprovision(("PF83MNK5", "PFAK0D6F"))),
        (
            "deprovision NHS-CART7-01\tPF83MNK5\nNHS-CART7-02\tPFAK0D6F",
            BulkDeprovision(("NHS-CART7-01", "PF83MNK5", "NHS-CART7-02", "PFAK0D6F")),
        ),
        # spaces inside an entry of a list belong to the name
        ("deprovision Chrome- PFSXKG0X\nNHS-CART7-01", BulkDeprovision(("Chrome- PFSXKG0X", "NHS-CART7-01"))),
        ("deprovision A1, B2 reason: retiring", BulkDeprovision(("A1", "B2"), "retiring_device")),
        ("deprovision A1\nB2\nreason: lost it", BulkDeprovision(("A1", "B2"), None, "lost it")),
        ("please deprovision A1, 'B2', \"C3\" thanks", BulkDeprovision(("A1", "B2", "C3"))),
        # one line with spaces only stays one entry: the flow tries it as one device first
        ("deprovision Chrome- PFSXKG0X", Deprovision("Chrome- PFSXKG0X")),
        # duplicates (any case) count once; one left is the single-device command
        ("deprovision NHS-CART7-01, nhs-cart7-01", Deprovision("NHS-CART7-01")),
        ("deprovision serial\nNHS-CART7-01", Deprovision("NHS-CART7-01")),
        ("deprovision , ; ,\n;", Invalid("empty", "deprovision")),
        ("deprovision A1,\x07B2", Invalid("control", "deprovision")),
        (
            "deprovision " + ",".join(f"D{i:04d}" for i in range(3000)),
            BulkDeprovision(tuple(f"D{i:04d}" for i in range(3000))),
        ),
        ("deprovision " + "x" * 30_000, Invalid("list_too_long", "deprovision")),
        ("status A1, B2" + " " * 1000, Invalid("message_too_long", "status")),
    ],
)
def test_parse_lists(text: str, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    "body",
    [
        "deprovision a" + " ," * 14990,
        " ." * 14990,
        "deprovision a" + ", ;" * 9990,
        "please " * 4200,
        "deprovision " + "please " * 4200 + "x",
        "deprovision " + "x, " * 9000 + "please!!",
    ],
    ids=["comma-runs", "dot-runs", "separator-runs", "polite-words", "polite-inside", "polite-tail"],
)
def test_hostile_messages_near_the_size_limit_parse_in_linear_time(body: str) -> None:
    """Politeness is peeled only near the ends and a bounded number of times. Before, `deprovision a , , , …`
    backtracked cubically (2 KB: 42 s; 30 KB: hours) on the event loop. The bound is a guard against that blow-up,
    generous by two orders of magnitude — not a performance measurement."""
    assert len(body) <= commands.MAX_BULK_MESSAGE_LENGTH
    started = time.process_time()
    commands.parse(body)
    assert time.process_time() - started < 1.0
