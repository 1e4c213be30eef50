"""The "did you mean" ranking: a small Levenshtein and its limit."""

from __future__ import annotations

import pytest

from bot.devices import edit_distance, near_miss_limit


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("", "", 0),
        ("abc", "", 3),
        ("nhs-cart3-01", "nhs-cart3-01", 0),
        ("nhs-cart3-0l", "nhs-cart3-01", 1),
        ("nhs-crat3-01", "nhs-cart3-01", 2),
        ("5cd0832tg", "5cd0832tgl", 1),
        ("kitten", "sitting", 3),
    ],
)
def test_edit_distance(a: str, b: str, distance: int) -> None:
    assert edit_distance(a, b) == distance == edit_distance(b, a)


def test_near_miss_limit_grows_slowly() -> None:
    assert near_miss_limit("abcd") == 1
    assert near_miss_limit("NHS-CART3-01") == 2
    assert near_miss_limit("x" * 100) == 3
