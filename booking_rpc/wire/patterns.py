"""Message patterns to route strings, exactly as a NestJS server normalises them.

Registration uses `transformPatternToRoute(pattern)`; lookup (`Server.getRouteFromPattern`) first turns a
non-string pattern into its JSON text, tries `JSON.parse` on it, then applies the same transform. So
`{"cmd":"sum","role":"math"}`, `{"role":"math","cmd":"sum"}` and the *string* '{"role":"math","cmd":"sum"}'
all reach one handler, '"sum"' reaches `sum`, and '123' reaches 123.

Key order: NestJS sorts keys with `localeCompare` (ICU root collation). `_collation_key` reproduces that
order for ASCII keys (punctuation < digits < letters, case-insensitive first, lowercase before
uppercase); keys with other characters fall back to code point order after ASCII letters. Only route
strings we expose could ever show the difference: matching compares our own routes with each other, and
a NestJS peer re-normalises whatever it receives.
"""

from __future__ import annotations

import functools
import json
import math
from decimal import Decimal
from typing import Any, Final

MAX_DEPTH: Final = 5
MAX_KEYS: Final = 20
MAX_DEPTH_REACHED: Final = "[MAX_DEPTH_REACHED]"
TOO_MANY_KEYS: Final = "[TOO_MANY_KEYS]"

# The only characters that can start JSON text whose parse is not the string itself: objects, arrays,
# quoted strings, numbers and the literals true/false/null (leading JSON whitespace too).
_JSON_START: Final = frozenset('{["-0123456789tfn \t\n\r')


def route_of(pattern: Any) -> str | None:
    """The route a NestJS server would look `pattern` up under; None where nothing can ever match
    (patterns that normalise to true/false/null, or a missing pattern)."""
    if isinstance(pattern, str):
        return _route_of_string(pattern)
    if pattern is None or isinstance(pattern, bool):
        return None
    # Non-string patterns go through JSON.stringify + JSON.parse, i.e. they are taken as JSON values.
    route = _transform(pattern, 0)
    return route if isinstance(route, str) else None


@functools.lru_cache(maxsize=4096)
def _route_of_string(pattern: str) -> str | None:
    # The hot path is a plain dotted name such as "booking.slots.find": it cannot be JSON, skip parsing.
    if not pattern or pattern[0] not in _JSON_START:
        return pattern
    try:
        parsed = json.loads(pattern, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return pattern
    route = _transform(parsed, 0)
    return route if isinstance(route, str) else None


def _reject_constant(name: str) -> Any:
    raise ValueError(name)  # JSON.parse has no NaN/Infinity literals


def route_for_registration(pattern: Any) -> str:
    """`transformPatternToRoute(pattern)` for a handler's own pattern (no JSON parsing of strings)."""
    route = _transform(pattern, 0)
    if not isinstance(route, str):
        raise ValueError(f"a message pattern must be a string, number, object or array, not {pattern!r}")
    return route


def _transform(pattern: Any, depth: int) -> Any:
    """transformPatternToRoute: a str for strings, numbers and containers; other values unchanged."""
    if isinstance(pattern, str):
        return pattern
    if isinstance(pattern, bool) or pattern is None:
        return pattern
    if isinstance(pattern, (int, float)):
        return js_number(pattern)
    if not isinstance(pattern, (dict, list, tuple)):
        return pattern
    if depth > MAX_DEPTH:
        return MAX_DEPTH_REACHED
    if len(pattern) > MAX_KEYS:
        return TOO_MANY_KEYS  # checked before any work: a peer may send a huge pattern
    if not isinstance(pattern, dict):
        pattern = {str(i): v for i, v in enumerate(pattern)}  # JS arrays are objects keyed "0", "1", ...
    parts = []
    for key in sorted(pattern, key=_collation_key):
        value = pattern[key]
        if isinstance(value, str):
            parts.append(f'"{_escape(key)}":"{_escape(value)}"')
        else:
            parts.append(f'"{_escape(key)}":{_template(_transform(value, depth + 1))}')
    return "{" + ",".join(parts) + "}"


def _template(value: Any) -> str:
    """JS `${value}` for what `_transform` returns."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def js_number(value: int | float) -> str:
    """JS Number#toString: 1.0 -> "1", 1e21 -> "1e+21", 1e-7 -> "1e-7", ints beyond 2**53 as doubles."""
    if isinstance(value, int):
        if -(2**53) <= value <= 2**53:
            return str(value)
        value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr gives the shortest round-tripping digits, as JS does; only the layout differs.
    _, digit_tuple, exponent10 = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple)).lstrip("0")
    stripped = digits.rstrip("0")
    point = len(digits) + int(exponent10)  # value = 0.<digits> * 10**point
    digits = stripped
    k, n = len(digits), point
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        exponent = n - 1
        exp_sign = "+" if exponent >= 0 else "-"
        head = digits[0] + ("." + digits[1:] if k > 1 else "")
        text = f"{head}e{exp_sign}{abs(exponent)}"
    return sign + text


# ICU root collation order of ASCII punctuation and symbols (all sort before digits and letters).
_ASCII_SYMBOL_ORDER: Final = "\t\n\v\f\r _-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$"
_PRIMARY: Final = {c: i for i, c in enumerate(_ASCII_SYMBOL_ORDER)}


def _collation_key(key: str) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    """Sort key approximating `a.localeCompare(b)`: primary weights, then case (lowercase first)."""
    primary: list[int] = []
    tertiary: list[int] = []
    for char in key:
        if char in _PRIMARY:
            primary.append(_PRIMARY[char])
        elif "0" <= char <= "9":
            primary.append(100 + ord(char))
        elif char.isascii() and char.isalpha():
            primary.append(200 + ord(char.lower()))
            tertiary.append(1 if char.isupper() else 0)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            continue  # control characters are ignorable in ICU
        else:
            primary.append(1000 + ord(char))
    return tuple(primary), tuple(tertiary), key


__all__ = ["MAX_DEPTH", "MAX_KEYS", "js_number", "route_for_registration", "route_of"]
