"""Pattern normalisation as NestJS's transformPatternToRoute / getRouteFromPattern (nestjs-tcp.md §3, §9)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from booking_rpc.wire.patterns import (
    MAX_DEPTH_REACHED,
    TOO_MANY_KEYS,
    js_number,
    route_for_registration,
    route_of,
)


def test_plain_string_is_its_own_route() -> None:
    assert route_of("booking.slots.find") == "booking.slots.find"
    assert route_for_registration("booking.slots.find") == "booking.slots.find"


def test_object_pattern_matches_in_any_key_order_and_as_a_json_string() -> None:
    registered = route_for_registration({"cmd": "sum", "role": "math"})
    assert registered == '{"cmd":"sum","role":"math"}'
    assert route_of({"role": "math", "cmd": "sum"}) == registered
    assert route_of({"cmd": "sum", "role": "math"}) == registered
    assert route_of('{"role":"math","cmd":"sum"}') == registered
    assert route_of('{ "role" : "math",\n "cmd": "sum" }') == registered


def test_quoted_string_pattern_matches_the_bare_string() -> None:
    assert route_of('"sum"') == route_for_registration("sum") == "sum"


def test_numeric_string_matches_the_number() -> None:
    assert route_of("123") == route_of(123) == route_for_registration(123) == "123"
    assert route_of("1.0") == route_of(1.0) == "1"
    assert route_of("1e2") == "100"


@pytest.mark.parametrize("pattern", ["true", "false", "null", " null", True, False, None])
def test_literal_patterns_never_match(pattern: Any) -> None:
    assert route_of(pattern) is None


def test_string_true_can_be_registered_but_never_looked_up() -> None:
    assert route_for_registration("true") == "true"
    assert route_of("true") != route_for_registration("true")


def test_nested_pattern_with_an_array() -> None:
    pattern = {"cmd": "find", "filter": {"tags": ["a", "b"], "n": 2, "ok": True, "none": None}}
    route = route_for_registration(pattern)
    assert route == '{"cmd":"find","filter":{"n":2,"none":null,"ok":true,"tags":{"0":"a","1":"b"}}}'
    assert route_of(json.dumps(pattern)) == route
    assert route_of({"filter": {"none": None, "ok": True, "n": 2.0, "tags": ["a", "b"]}, "cmd": "find"}) == route


def test_array_pattern_becomes_an_object_with_index_keys() -> None:
    assert route_of(["x", 1]) == route_of('["x",1]') == '{"0":"x","1":1}'
    # Index keys sort as strings, like JS: "10" before "2".
    route = route_of(list(range(11)))
    assert route is not None
    assert route.startswith('{"0":0,"1":1,"10":10,"2":2')


def test_quotes_and_backslashes_are_escaped_in_keys_and_string_values() -> None:
    assert route_for_registration({'k"\\': 'v"\\'}) == '{"k\\"\\\\":"v\\"\\\\"}'


def test_string_values_are_not_parsed_again() -> None:
    assert route_of({"p": '{"b":1,"a":2}'}) == '{"p":"{\\"b\\":1,\\"a\\":2}"}'
    assert route_of('"{\\"b\\":1,\\"a\\":2}"') == '{"b":1,"a":2}'


def test_non_json_strings_starting_like_json_stay_as_they_are() -> None:
    for pattern in ["nothing", "123abc", "{not json", "[", "-", "trueish", "foo bar"]:
        assert route_of(pattern) == pattern


def nest(depth: int) -> Any:
    pattern: Any = {"leaf": 1}
    for _ in range(depth):
        pattern = {"k": pattern}
    return pattern


def test_depth_limit() -> None:
    # Objects at depth 0..5 are written out; one at depth 6 is replaced, unquoted, like NestJS.
    assert route_of(nest(5)) == '{"k":' * 5 + '{"leaf":1}' + "}" * 5
    assert route_of(nest(6)) == '{"k":' * 6 + MAX_DEPTH_REACHED + "}" * 6


def test_key_limit() -> None:
    twenty = {f"k{i:02}": i for i in range(20)}
    route = route_of(twenty)
    assert route is not None and route.startswith('{"k00":0,')
    assert route_of({**twenty, "k20": 20}) == TOO_MANY_KEYS
    assert route_of({"cmd": {**twenty, "k20": 20}}) == '{"cmd":' + TOO_MANY_KEYS + "}"


def test_keys_sort_like_locale_compare_for_ascii() -> None:
    # ICU root order: punctuation, digits, then letters case-insensitively with lowercase first.
    keys = ["b", "B", "a", "A", "_x", "-x", "1", "Ab", "aa", "a_b", "ab"]
    route = route_for_registration(dict.fromkeys(keys, 0))
    order = [json.loads("[" + part.split(":")[0] + "]")[0] for part in route[1:-1].split(",")]
    assert order == ["_x", "-x", "1", "a", "A", "a_b", "aa", "ab", "Ab", "b", "B"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (-0.0, "0"),
        (0.1, "0.1"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1.5e-7, "1.5e-7"),
        (1e-6, "0.000001"),
        (123.456, "123.456"),
        (2**53, "9007199254740992"),
        (2**60, "1152921504606847000"),
        (5e-324, "5e-324"),
        (-2.5e25, "-2.5e+25"),
    ],
)
def test_js_number_formatting(value: float, text: str) -> None:
    assert js_number(value) == text


@settings(max_examples=100, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_js_number_round_trips(value: float) -> None:
    assert float(js_number(value)) == value


_keys = st.text(max_size=6)
_patterns = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(_keys, _patterns, min_size=1, max_size=4))
def test_lookup_of_the_json_text_equals_registration(pattern: dict[str, Any]) -> None:
    registered = route_for_registration(pattern)
    assert route_of(pattern) == registered
    assert route_of(json.dumps(pattern)) == registered
    reversed_keys = dict(reversed(list(pattern.items())))
    assert route_of(reversed_keys) == registered


def test_huge_array_pattern_is_refused_before_any_work() -> None:
    assert route_of(list(range(100_000))) == TOO_MANY_KEYS
    assert route_of({"cmd": [0] * 21}) == '{"cmd":' + TOO_MANY_KEYS + "}"
