"""HTML built from elements, escaped by construction: the dashboard never pastes text into markup.

``el("td", device)`` escapes ``device``; only what ``el`` (or ``raw``, for constant markup written here)
returns passes through unescaped.  Device names, alert fields, reasons and every status value are strings
an attacker can influence, so nothing reaches the page any other way.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

VOID = frozenset({"br", "hr", "img", "input", "link", "meta"})


class Markup(str):
    """Text that is already HTML."""


def esc(value: Any) -> Markup:
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def raw(constant: str) -> Markup:
    """Markup written in this program (never data)."""
    return Markup(constant)


def _attr_name(name: str) -> str:
    return name.rstrip("_").replace("_", "-")  # class_ -> class, data_label -> data-label


def _flatten(children: Iterable[Any]) -> Iterable[Any]:
    for child in children:
        if isinstance(child, (list, tuple)):
            yield from _flatten(child)
        elif child is not None and child is not False:
            yield child


def el(tag: str, *children: Any, **attrs: Any) -> Markup:
    """<tag attrs>children</tag>; an attribute of None or False is left out, True is written bare."""
    parts = [tag]
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        parts.append(_attr_name(name) if value is True else f'{_attr_name(name)}="{esc(value)}"')
    opening = f"<{' '.join(parts)}>"
    if tag in VOID:
        return Markup(opening)
    return Markup(opening + "".join(esc(c) for c in _flatten(children)) + f"</{tag}>")


def join(items: Iterable[Any], sep: str = "") -> Markup:
    return Markup(esc(sep).join(esc(i) for i in items))
