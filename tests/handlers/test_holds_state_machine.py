"""A hypothesis state machine over create / cancel / expire / sweep / block / unblock / confirm / reschedule
on a few slots.

After every step: the capacity invariant holds in the database, and every outcome matches a small model
(who holds what, which holds are past their TTL, which idempotency keys were used).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from booking_rpc.app import build_context
from booking_rpc.config import Settings
from booking_rpc.db.pool import Pool, create_pool
from booking_rpc.errors import RpcError
from booking_rpc.jobs.expiry import expire_holds
from tests.helpers import call, capacity_violations, hold_quota_drift

T = TypeVar("T")
CAPACITIES = [1, 2, 3]
USERS = [uuid.UUID(int=i + 1) for i in range(4)]
PETS = {u: uuid.UUID(int=100 + i) for i, u in enumerate(USERS)}
# Pending holds one user (and their one pet) may have: below the number of slots, so the limit is reached.
HOLD_LIMIT = 2
ADMIN = {"id": str(uuid.UUID(int=999)), "role": "admin"}


@dataclass
class Hold:
    id: uuid.UUID
    slot: int
    user: uuid.UUID
    lock_id: str
    status: str  # pending / cancelled / expired / confirmed (as the model believes)
    past_ttl: bool = False

    @property
    def live(self) -> bool:
        return self.status == "pending" and not self.past_ttl


def test_holds_state_machine(db_url: str) -> None:
    loop = asyncio.new_event_loop()

    def run(coro: Coroutine[Any, Any, T]) -> T:
        return loop.run_until_complete(coro)

    pool: Pool = run(create_pool(db_url, min_size=1, max_size=3))
    # no reschedule cut-off or maximum here: the slots start within a day, and the policy has its own tests
    ctx = build_context(
        Settings(
            port=0,
            metrics_enabled=False,
            jobs_enabled=False,
            max_active_holds_per_user=HOLD_LIMIT,
            max_active_holds_per_pet=HOLD_LIMIT,
            reschedule_cutoff_hours=0,
            max_reschedules=10_000,
        ),
        pool,
    )

    class Holds(RuleBasedStateMachine):
        @initialize()
        def setup(self) -> None:
            self.holds: list[Hold] = []
            self.bookings: dict[uuid.UUID, int] = {}  # booking id -> the slot it is on
            self.keys: dict[tuple[uuid.UUID, str], tuple[int, uuid.UUID]] = {}
            self.blocked = [False] * len(CAPACITIES)
            self.service_id = uuid.uuid4()
            self.slot_ids: list[uuid.UUID] = []

            async def prepare() -> None:
                async with pool.acquire() as conn:
                    await conn.execute(
                        "TRUNCATE bookings, reservations, slots, services, booking_events_outbox, hold_quotas CASCADE"
                    )
                    await conn.execute(
                        "INSERT INTO services (id, clinic_id, name, price) VALUES ($1, $2, 'Checkup', 10)",
                        self.service_id,
                        uuid.uuid4(),
                    )
                    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(
                        hour=9, minute=0, second=0, microsecond=0
                    )
                    for i, cap in enumerate(CAPACITIES):
                        s = start + dt.timedelta(hours=i)
                        self.slot_ids.append(
                            await conn.fetchval(
                                """INSERT INTO slots (service_id, slot_date, slot_start_time, slot_end_time,
                                                  starts_at, ends_at, capacity)
                               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id""",
                                self.service_id,
                                s.date(),
                                s.time(),
                                (s + dt.timedelta(minutes=30)).time(),
                                s,
                                s + dt.timedelta(minutes=30),
                                cap,
                            )
                        )

            run(prepare())

        # --- model helpers

        def live_on(self, slot: int) -> list[Hold]:
            return [h for h in self.holds if h.slot == slot and h.live]

        def used(self, slot: int) -> int:
            """Units of `slot` taken: live holds and bookings (lapsed holds count as free)."""
            return len(self.live_on(slot)) + sum(s == slot for s in self.bookings.values())

        def lapse_on(self, slot: int) -> None:
            """A take of a unit on `slot` gives back its holds past their TTL."""
            for h in self.holds:
                if h.slot == slot and h.status == "pending" and h.past_ttl:
                    h.status = "expired"

        def expect_create(self, slot: int, user: uuid.UUID, key: str | None) -> str | uuid.UUID:
            if key is not None and (user, key) in self.keys:
                first_slot, first_id = self.keys[(user, key)]
                return first_id if first_slot == slot else "IDEMPOTENCY_CONFLICT"
            # lapsed holds count until given back, as booked_count counts them (the statement checks first)
            if sum(1 for h in self.holds if h.user == user and h.status == "pending") >= HOLD_LIMIT:
                return "TOO_MANY_HOLDS"
            if self.blocked[slot]:
                return "SLOT_BLOCKED"
            if any(h.user == user for h in self.live_on(slot)):
                return "ALREADY_HELD"
            if self.used(slot) >= CAPACITIES[slot]:
                return "SLOT_FULL"
            return "OK"

        # --- rules

        @rule(
            slot=st.integers(0, len(CAPACITIES) - 1),
            user=st.sampled_from(USERS),
            key=st.one_of(st.none(), st.sampled_from(["a", "b"])),
        )
        def create(self, slot: int, user: uuid.UUID, key: str | None) -> None:
            expected = self.expect_create(slot, user, key)
            body = {
                "actor": {"id": str(user), "role": "user"},
                "user_id": str(user),
                "pet_id": str(PETS[user]),
                "service_id": str(self.service_id),
                "slot_id": str(self.slot_ids[slot]),
                "idempotency_key": key,
            }
            try:
                res = run(call(ctx, "booking.reservation.create", body))
            except RpcError as err:
                assert err.code == expected, (err, expected)
                return
            if isinstance(expected, uuid.UUID):
                assert res.id == expected
                return
            assert expected == "OK", expected
            self.lapse_on(slot)  # holds of this slot past their TTL were given back by this create
            self.holds.append(Hold(res.id, slot, user, res.lock_id, "pending"))
            if key is not None:
                self.keys[(user, key)] = (slot, res.id)

        @rule(data=st.data())
        def cancel(self, data: st.DataObject) -> None:
            if not self.holds:
                return
            h = data.draw(st.sampled_from(self.holds))
            wrong_lock = data.draw(st.booleans())
            body = {
                "actor": {"id": str(h.user), "role": "user"},
                "reservation_id": str(h.id),
                "lock_id": "not-the-lock" if wrong_lock else h.lock_id,
            }
            if wrong_lock:
                expected = "LOCK_MISMATCH"
            elif h.status == "cancelled":
                expected = "OK"
            elif h.status == "confirmed":
                expected = "ILLEGAL_TRANSITION"
            elif h.status == "expired" or h.past_ttl:
                expected = "RESERVATION_EXPIRED"
            else:
                expected = "OK"
            try:
                res = run(call(ctx, "booking.reservation.cancel", body))
            except RpcError as err:
                assert err.code == expected, (err, expected)
                return
            assert expected == "OK" and res.status == "cancelled"
            h.status = "cancelled"

        @rule(data=st.data())
        def pass_ttl(self, data: st.DataObject) -> None:
            pending = [h for h in self.holds if h.live]
            if not pending:
                return
            h = data.draw(st.sampled_from(pending))

            async def go() -> None:
                async with pool.acquire() as conn:
                    await conn.execute(
                        "UPDATE reservations SET expires_at = now() - interval '1 second' WHERE id = $1", h.id
                    )

            run(go())
            h.past_ttl = True

        @rule()
        def sweep(self) -> None:
            due = [h for h in self.holds if h.status == "pending" and h.past_ttl]
            assert run(expire_holds(ctx, batch_size=2)) == len(due)
            for h in due:
                h.status = "expired"

        @rule(data=st.data())
        def confirm(self, data: st.DataObject) -> None:
            live = [h for h in self.holds if h.live]
            if not live:
                return
            h = data.draw(st.sampled_from(live))
            body = {
                "actor": {"id": str(h.user), "role": "user"},
                "reservation_id": str(h.id),
                "lock_id": h.lock_id,
                "user_id": str(h.user),
            }
            booking = run(call(ctx, "booking.reservation.confirm", body))
            h.status = "confirmed"
            self.bookings[booking.id] = h.slot

        @rule(data=st.data(), slot=st.integers(0, len(CAPACITIES) - 1))
        def reschedule(self, data: st.DataObject, slot: int) -> None:
            if not self.bookings:
                return
            booking_id = data.draw(st.sampled_from(sorted(self.bookings)))
            current = self.bookings[booking_id]
            if slot == current:
                expected = "OK"  # already there: a no-op
            elif self.blocked[slot]:
                expected = "SLOT_BLOCKED"
            elif self.used(slot) >= CAPACITIES[slot]:
                expected = "SLOT_FULL"
            else:
                expected = "OK"
            body = {"actor": ADMIN, "booking_id": str(booking_id), "slot_id": str(self.slot_ids[slot])}
            try:
                moved = run(call(ctx, "booking.booking.reschedule", body))
            except RpcError as err:
                assert err.code == expected, (err, expected)
                return
            assert expected == "OK" and moved.slot_id == self.slot_ids[slot]
            if slot != current:
                self.lapse_on(slot)
                self.bookings[booking_id] = slot

        @rule(slot=st.integers(0, len(CAPACITIES) - 1), blocked=st.booleans())
        def block(self, slot: int, blocked: bool) -> None:
            pattern = "booking.slots.block" if blocked else "booking.slots.unblock"
            run(call(ctx, pattern, {"actor": ADMIN, "slot_id": str(self.slot_ids[slot])}))
            self.blocked[slot] = blocked

        # --- invariants

        @invariant()
        def capacity_invariant(self) -> None:
            if not self.slot_ids:
                return

            async def read() -> tuple[list[dict[str, Any]], dict[uuid.UUID, str], int]:
                async with pool.acquire() as conn:
                    violations = await capacity_violations(conn) + await hold_quota_drift(conn)
                    statuses = dict(await conn.fetch("SELECT id, status FROM reservations"))
                    expired_events = await conn.fetchval(
                        "SELECT count(*) FROM booking_events_outbox WHERE event_type = 'reservation.expired'"
                    )
                return violations, statuses, expired_events

            violations, statuses, expired_events = run(read())
            assert violations == []
            assert statuses == {h.id: h.status for h in self.holds}
            assert expired_events == sum(h.status == "expired" for h in self.holds)
            for i, sid in enumerate(self.slot_ids):
                avail = run(
                    call(
                        ctx,
                        "booking.availability.check",
                        {"service_id": str(self.service_id), "slot_id": str(sid)},
                    )
                )
                free = CAPACITIES[i] - self.used(i)
                if self.blocked[i]:
                    assert (avail.available, avail.reason) == (False, "SLOT_BLOCKED")
                else:
                    assert avail.remaining == free, (i, avail)

    try:
        run_state_machine_as_test(
            Holds,
            settings=settings(
                max_examples=15,
                stateful_step_count=20,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        run(pool.close())
        loop.close()
