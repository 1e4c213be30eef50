"""Teams markdown: untrusted text is escaped, trusted markup is marked. No imports from ``bot/``.

The rule: a plain ``str`` is *text* — a device name, a user name, a comment from chat or Graph. Wherever it is
shown as markdown (a card's TextBlock or Fact, a chat message) it goes through :func:`md`: control characters
(CR, LF, tabs, bidi overrides, zero-width characters) collapse to one space and every character that could start
emphasis, a link, an autolink, a mention or HTML is backslash-escaped, so it renders exactly as typed.
:class:`Markup` is markdown the bot wrote itself (``bot/messages.py``), with every interpolated value already
passed through :func:`md`; it is used as it is. ``md(Markup(...))`` returns it unchanged, so escaping twice is
impossible.
"""

from __future__ import annotations

import re
import unicodedata


class Markup(str):
    """Trusted Teams markdown: built by the bot from constants and :func:`md`-escaped values."""

    __slots__ = ()


#: Characters that start emphasis, links, code, HTML or mentions in Teams markdown (CommonMark escapes them all).
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>~&#{}])")
#: A list marker or a heading at the start of the text would turn a name into a bullet or a title.
_LINE_START = re.compile(r"^(\s*(?:\d{1,9}(?=[.)])|(?=[-+])))([-+.)])(?=\s|$)")
#: Autolinks: ``scheme://``, ``www.`` and ``user@host``. Escaping the ``:`` / ``.`` / ``@`` keeps them text.
_AUTOLINK = re.compile(r"(?i)(?<=[a-z0-9])(:)(?=//)|(?<=\bwww)(\.)|(@)(?=[^\s@]+\.)")
#: Line and paragraph breaks, tabs and the invisible characters that reorder or hide text.
_INVISIBLE = {"\u2028", "\u2029", "\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u2060", "\ufeff"}
_MARK = "\x00"
_BREAKS = re.compile(r"[ \t]*\x00[\x00 \t]*")


def one_line(value: object) -> str:
    """``value`` as one line of plain text: control and invisible format characters become one space each run."""
    text = str(value)
    if text.isascii() and text.isprintable():
        return text
    marked = "".join(
        _MARK if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") or ch in _INVISIBLE else ch for ch in text
    )
    return _BREAKS.sub(" ", marked).strip()


def md(value: object) -> Markup:
    """Escape a user- or Graph-provided value so it renders as text, never as a link, mention or markup."""
    if isinstance(value, Markup):
        return value
    text = _MD_SPECIAL.sub(r"\\\1", one_line(value))
    text = _AUTOLINK.sub(lambda match: "\\" + match.group(0), text)
    return Markup(_LINE_START.sub(r"\1\\\2", text))


def plain(value: object) -> str:
    """A value placed inside a `code span` (no escapes there): backticks removed, one line."""
    return one_line(value).replace("`", "'")
