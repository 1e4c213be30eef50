"""Ids the bot hands out never start with "-" (an operator pastes them into `app.py actions resolve <id>`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.flow import base
from bot.flow.base import ACTION_ID_RE, new_id


def test_an_id_that_would_read_as_an_option_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: Iterator[str] = iter(["-AAAAAAAAAAAAAAAAAAAAAAA", "-BBBBBBBBBBBBBBBBBBBBBBB", "CCCCCCCCCCCCCCCCCCCCCCCC"])
    monkeypatch.setattr(base.secrets, "token_urlsafe", lambda _n: next(drawn))
    assert new_id() == "CCCCCCCCCCCCCCCCCCCCCCCC"


def test_ids_are_24_url_safe_characters_and_distinct() -> None:
    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 24 and ACTION_ID_RE.match(i) and not i.startswith("-") for i in ids)
