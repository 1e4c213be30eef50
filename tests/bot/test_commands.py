"""The chat grammar: forgiving around the command, exact about the device."""

from __future__ import annotations

import pytest

from bot.commands import Deprovision, Help, History, Invalid, Pending, Status, Unknown, parse


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
