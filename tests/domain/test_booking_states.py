"""The booking state machine table."""

from __future__ import annotations

import itertools

import pytest

from booking_rpc.domain.booking_states import FINAL, STATUSES, TRANSITIONS, check_transition, is_allowed
from booking_rpc.errors import RpcError

LEGAL = {
    ("pending_approval", "confirmed", "approve"),
    ("pending_approval", "cancelled", "reject"),
    ("pending_approval", "cancelled", "cancel"),
    ("confirmed", "in-progress", "update"),
    ("in-progress", "completed", "update"),
    ("confirmed", "no-show", "update"),
    ("confirmed", "cancelled", "cancel"),
    ("in-progress", "cancelled", "cancel"),
}


def test_table_is_exactly_the_legal_set() -> None:
    table = {(a, b, act) for (a, b), acts in TRANSITIONS.items() for act in acts}
    assert table == LEGAL


@pytest.mark.parametrize(
    ("current", "target", "action"),
    list(itertools.product(STATUSES, STATUSES, ["update", "cancel", "approve", "reject"])),
)
def test_every_pair(current: str, target: str, action: str) -> None:
    if (current, target, action) in LEGAL:
        check_transition(current, target, action)
        return
    with pytest.raises(RpcError) as info:
        check_transition(current, target, action)
    assert info.value.code == "ILLEGAL_TRANSITION" and info.value.status_code == 409
    assert f"'{current}'" in info.value.message and f"'{target}'" in info.value.message


def test_final_states_go_nowhere() -> None:
    for f in FINAL:
        assert not any(is_allowed(f, t, a) for t in STATUSES for a in ("update", "cancel", "approve", "reject"))


def test_cancel_via_update_hints() -> None:
    with pytest.raises(RpcError, match=r"booking\.booking\.cancel"):
        check_transition("confirmed", "cancelled", "update")
