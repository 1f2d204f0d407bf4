"""Reading a whole number from text typed by a user or stored in a file (imports nothing else of ddpm)."""

from __future__ import annotations

import re

_WHOLE = re.compile(r"-?[0-9]{1,19}")  # ASCII digits only: "²".isdigit() is true but int("²") fails


def ascii_integer(text: str) -> int | None:
    """The integer `text` spells (surrounding spaces ignored, an optional minus, at most 19 ASCII digits: int64), else
    None. Unicode digits and digit strings too long for any index, step or seed here are not numbers."""
    match = _WHOLE.fullmatch(text.strip())
    return int(match.group()) if match else None
