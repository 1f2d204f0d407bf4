"""Reading a number or a JSON value from text typed by a user or stored in a file (imports nothing else of ddpm).

Numbers are ASCII: "²".isdigit() is true but int("²") fails, and int("３") (a full-width digit) is 3, so a text that
Python's int() or float() would read is not necessarily one a user meant as a number; here only ASCII digits count,
the same way for a flag, a prompt, a web UI field and a number stored in a file.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # the whole numbers a tensor, a seed or a step can hold
_WHOLE = re.compile(r"-?[0-9]{1,19}")
_REAL = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,6})?")
_SPACE = " \t\n\r\f\v"  # ASCII white space: str.strip() alone also strips "\x1c".."\x1f", which int() refuses


def ascii_integer(text: str) -> int | None:
    """The integer `text` spells (surrounding ASCII white space ignored, an optional minus, ASCII digits) when it
    fits in int64, else None. Unicode digits and digit strings too long for any index, step or seed here are not
    numbers."""
    match = _WHOLE.fullmatch(text.strip(_SPACE))
    value = int(match.group()) if match else None
    return value if value is not None and INT64_MIN <= value <= INT64_MAX else None


def ascii_real(text: str) -> float | None:
    """The number `text` spells in ASCII decimal notation (sign, digits, point, exponent: "0.5", "-3", "1e-4"), else
    None: "nan", "inf" and Unicode digits are not numbers here. A value too large for a float reads as inf, which
    every check of a finite number refuses."""
    match = _REAL.fullmatch(text.strip(_SPACE))
    return float(match.group()) if match else None


def finite(value: int | float) -> bool:
    """math.isfinite for any int or float: an integer too large for a float (10**400, which JSON can spell) is not
    finite here, where math.isfinite raises OverflowError."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def json_value(text: str | bytes) -> Any:
    """json.loads, with every way the text can fail to be JSON a ValueError of one line: a syntax error, and also
    nesting too deep for the parser (json.loads raises RecursionError for "[" * 100_000)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to be read") from None
    except json.JSONDecodeError as e:
        raise ValueError(str(e).splitlines()[0][:200]) from None
