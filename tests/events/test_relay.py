"""The outbox relay against real subscribers over real sockets (NestJS-compatible event frames)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from booking_rpc.app import build_context
from booking_rpc.config import Settings
from booking_rpc.context import Context
from booking_rpc.db.pool import Pool, create_pool
from booking_rpc.deadline import current_deadline
from booking_rpc.events.outbox import enqueue
from booking_rpc.events.relay import OutboxRelay, OutboxSignal, retry_dead
from booking_rpc.events.subscribers import Subscriber, parse_subscribers
from booking_rpc.server.server import Server
from tests.fixtures.server import MakeServer
from tests.helpers import Recorder, admin, call, cancelled, wait_for, write_events

EVENT_TYPES = ["reservation.cancelled"]
RECORDED = [*EVENT_TYPES, "booking.created", "booking.confirmed"]


@pytest.fixture
def relay_ctx(pool: Pool) -> Context:
    settings = Settings(outbox_backoff_base=0.01, outbox_backoff_max=0.05, outbox_max_attempts=3)
    return build_context(settings, pool)


async def slow_poll_relay(relay_ctx: Context, make_server: MakeServer) -> tuple[Recorder, Context, OutboxRelay]:
    """A relay whose poll fallback (30 s) is far slower than any test: what it delivers, it heard of."""
    recorder = Recorder(RECORDED)
    server = await make_server(recorder.router)
    ctx = Context(
        pool=relay_ctx.pool,
        sql=relay_ctx.sql,
        settings=relay_ctx.settings.model_copy(update={"outbox_poll_interval": 30.0}),
    )
    return recorder, ctx, OutboxRelay(ctx, [Subscriber("rec", "127.0.0.1", server.port, ("*",))])


def test_parse_static_subscribers() -> None:
    subs = parse_subscribers("notifications=127.0.0.1:4001:booking.*,payment.processed; audit=h:9:*")
    assert subs[0] == Subscriber("notifications", "127.0.0.1", 4001, ("booking.*", "payment.processed"))
    assert subs[0].matches("booking.confirmed") and subs[0].matches("payment.processed")
    assert not subs[0].matches("review.submitted")
    assert subs[1].like_patterns() == ["%"]
    assert subs[0].like_patterns() == ["booking.%", "payment.processed"]


async def test_delivers_in_order_and_marks_published(relay_ctx: Context, make_server: MakeServer) -> None:
    recorder = Recorder(RECORDED)
    server = await make_server(recorder.router)
    a, b = uuid.uuid4(), uuid.uuid4()
    ids_a = await write_events(relay_ctx, a, 3)
    ids_b = await write_events(relay_ctx, b, 2)
    relay = OutboxRelay(relay_ctx, [Subscriber("rec", "127.0.0.1", server.port, ("reservation.*",))])
    try:
        assert await relay.run_once() == 5
        await wait_for(lambda: len(recorder.events) == 5)
    finally:
        await relay.stop()
    got = [p["event_id"] for _, p in recorder.events]
    assert [i for i in got if i in ids_a] == ids_a  # per-aggregate order kept
    assert [i for i in got if i in ids_b] == ids_b
    async with relay_ctx.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM booking_events_outbox WHERE NOT published") == 0


async def test_rolled_back_transaction_emits_nothing(relay_ctx: Context, make_server: MakeServer) -> None:
    recorder = Recorder(RECORDED)
    server = await make_server(recorder.router)
    with pytest.raises(RuntimeError):
        async with relay_ctx.transaction() as conn:
            await enqueue(conn, relay_ctx.sql, uuid.uuid4(), cancelled(uuid.uuid4()))
            raise RuntimeError("roll back")
    relay = OutboxRelay(relay_ctx, [Subscriber("rec", "127.0.0.1", server.port, ("*",))])
    try:
        assert await relay.run_once() == 0
    finally:
        await relay.stop()
    assert recorder.events == []


async def test_subscriber_down_gets_everything_when_back(relay_ctx: Context, make_server: MakeServer) -> None:
    recorder = Recorder(RECORDED)
    probe = await make_server(recorder.router)
    port = probe.port
    await probe.shutdown(0.1)  # the port is free again: the subscriber is "down"
    aggregate = uuid.uuid4()
    ids = await write_events(relay_ctx, aggregate, 3)
    relay = OutboxRelay(relay_ctx, [Subscriber("rec", "127.0.0.1", port, ("*",))])
    try:
        assert await relay.run_once() == 0
        async with relay_ctx.connection() as conn:
            row = await conn.fetchrow("SELECT attempts, dead FROM outbox_deliveries WHERE subscriber = 'rec'")
        assert row is not None and row["attempts"] == 1 and not row["dead"]
        back = Server(recorder.router, None, host="127.0.0.1", port=port)
        await back.start()
        try:
            await asyncio.sleep(0.1)  # past the backoff
            delivered = 0
            for _ in range(20):
                delivered += await relay.run_once()
                if delivered == 3:
                    break
                await asyncio.sleep(0.05)
            await wait_for(lambda: len(recorder.events) == 3)
        finally:
            await back.shutdown(0.5)
    finally:
        await relay.stop()
    assert [p["event_id"] for _, p in recorder.events] == ids


async def test_a_subscriber_down_for_many_attempts_is_reached_as_soon_as_it_is_back(
    relay_ctx: Context, make_server: MakeServer
) -> None:
    ctx = build_context(relay_ctx.settings.model_copy(update={"outbox_max_attempts": 20}), relay_ctx.pool)
    recorder = Recorder(RECORDED)
    probe = await make_server(recorder.router)
    port = probe.port
    await probe.shutdown(0.1)  # the port is free again: the subscriber is down
    ids = await write_events(ctx, uuid.uuid4(), 1)
    relay = OutboxRelay(ctx, [Subscriber("rec", "127.0.0.1", port, ("*",))])
    try:
        await relay.sync_loops(start_tasks=False)
        (loop,) = relay.loops.values()
        while relay.stats.failed["rec"] < 8:  # 8 failed attempts, each after the last one's backoff (<= 50 ms)
            await loop.deliver_batch()
            await asyncio.sleep(0.02)
        await make_server(recorder.router, port=port)
        await asyncio.sleep(0.06)  # past the backoff
        assert await loop.deliver_batch() == 1  # with the client's own backoff: TimeoutError after 5 s
        await wait_for(lambda: len(recorder.events) == 1)
    finally:
        await relay.stop()
    assert [p["event_id"] for _, p in recorder.events] == ids


@pytest.mark.parametrize("moved", [False, True], ids=["same-address", "moved"])
async def test_a_subscriber_that_registers_again_gets_its_events_at_once(
    relay_ctx: Context, make_server: MakeServer, moved: bool
) -> None:
    """A loop whose batch failed waits for its head's retry (here 15-30 s), heedless of commits; a subscriber that
    comes back and registers again (booking.subscriptions.create, at its old address or a new one) ends that
    wait and its backoff: it gets its events at once, not after the retry wait or the 30 s poll."""
    settings = relay_ctx.settings.model_copy(
        update={"outbox_poll_interval": 30.0, "outbox_backoff_base": 30.0, "outbox_backoff_max": 60.0}
    )
    ctx = build_context(settings, relay_ctx.pool)
    recorder = Recorder(RECORDED)
    probe = await make_server(recorder.router)
    port = probe.port
    await probe.shutdown(0.1)  # the port is free again: the subscriber is down
    registration = {"actor": admin(), "name": "rec", "host": "127.0.0.1", "port": port, "patterns": ["*"]}
    await call(ctx, "booking.subscriptions.create", registration)
    relay = OutboxRelay(ctx, [])
    await relay.start()
    try:
        ids = await write_events(ctx, uuid.uuid4(), 2)
        await wait_for(lambda: relay.stats.failed["rec"] == 1)
        back = await make_server(recorder.router, port=0 if moved else port)
        await call(ctx, "booking.subscriptions.create", {**registration, "port": back.port})
        await wait_for(lambda: len(recorder.events) == 2, timeout=3.0)
    finally:
        await relay.stop()
    assert [p["event_id"] for _, p in recorder.events] == ids


async def hold_back(ctx: Context, aggregate: uuid.UUID, *, dead: bool) -> None:
    """Record a failed delivery to 'rec' of `aggregate`'s oldest event: dead (after the most attempts), or
    backing off for a minute after one."""
    async with ctx.connection() as conn:
        head = await conn.fetchval(
            "SELECT id FROM booking_events_outbox WHERE aggregate_id = $1 ORDER BY seq LIMIT 1", aggregate
        )
        await conn.execute(
            "INSERT INTO outbox_deliveries (event_id, subscriber, attempts, dead, next_attempt_at, last_error)"
            " VALUES ($1, 'rec', $2, $3, now() + interval '1 minute', 'refused')",
            head,
            ctx.settings.outbox_max_attempts if dead else 1,
            dead,
        )


async def test_dead_event_blocks_only_its_aggregate(relay_ctx: Context, make_server: MakeServer) -> None:
    recorder = Recorder(RECORDED)
    server = await make_server(recorder.router)
    poisoned, healthy = uuid.uuid4(), uuid.uuid4()
    await write_events(relay_ctx, poisoned, 2)
    healthy_ids = await write_events(relay_ctx, healthy, 2)
    await hold_back(relay_ctx, poisoned, dead=True)  # its first event: parked as dead for 'rec'
    relay = OutboxRelay(relay_ctx, [Subscriber("rec", "127.0.0.1", server.port, ("*",))])
    try:
        assert await relay.run_once() == 2
        await wait_for(lambda: len(recorder.events) == 2)
        assert [p["event_id"] for _, p in recorder.events] == healthy_ids
        assert await retry_dead(relay_ctx) == 1
        assert await relay.run_once() == 2  # the re-driven one, then the one it held back
        await wait_for(lambda: len(recorder.events) == 4)
    finally:
        await relay.stop()


async def test_a_window_of_held_back_rows_does_not_hold_back_other_aggregates(
    relay_ctx: Context, make_server: MakeServer
) -> None:
    # batch 2: a claim's window is the oldest 4 undelivered rows, here all of `poisoned`, whose head is dead
    ctx = build_context(relay_ctx.settings.model_copy(update={"outbox_batch_size": 2}), relay_ctx.pool)
    recorder = Recorder(RECORDED)
    server = await make_server(recorder.router)
    poisoned, healthy = uuid.uuid4(), uuid.uuid4()
    await write_events(ctx, poisoned, 5)
    healthy_ids = await write_events(ctx, healthy, 1)
    await hold_back(ctx, poisoned, dead=True)  # its first event: parked as dead for 'rec'
    relay = OutboxRelay(ctx, [Subscriber("rec", "127.0.0.1", server.port, ("*",))])
    try:
        assert await relay.run_once() == 1
        await wait_for(lambda: len(recorder.events) == 1)
        assert [p["event_id"] for _, p in recorder.events] == healthy_ids
        assert await relay.run_once() == 0  # the dead head still holds back its own aggregate
    finally:
        await relay.stop()


async def test_a_batch_fills_with_due_rows_from_beyond_a_mostly_held_back_window(
    relay_ctx: Context, make_server: MakeServer
) -> None:
    # batch 4: a claim's window is the oldest 8 undelivered rows; 7 of them belong to a dead head and a head
    # backing off, and 1 is due; 6 more due aggregates come after the window
    ctx = build_context(relay_ctx.settings.model_copy(update={"outbox_batch_size": 4}), relay_ctx.pool)
    recorder = Recorder(RECORDED)
    server = await make_server(recorder.router)
    dead, backing_off = uuid.uuid4(), uuid.uuid4()
    await write_events(ctx, dead, 4)
    await write_events(ctx, backing_off, 3)
    due_ids = [(await write_events(ctx, uuid.uuid4(), 1))[0] for _ in range(7)]
    await hold_back(ctx, dead, dead=True)
    await hold_back(ctx, backing_off, dead=False)
    relay = OutboxRelay(ctx, [Subscriber("rec", "127.0.0.1", server.port, ("*",))])
    try:
        await relay.sync_loops(start_tasks=False)
        (loop,) = relay.loops.values()
        assert await loop.deliver_batch() == 4  # a full batch, not the window's one due row
        assert await loop.deliver_batch() == 3
        assert await loop.deliver_batch() == 0  # the held-back aggregates stay held back
        await wait_for(lambda: len(recorder.events) == 7)
    finally:
        await relay.stop()
    assert [p["event_id"] for _, p in recorder.events] == due_ids


async def test_two_relays_deliver_everything_once_each(relay_ctx: Context, make_server: MakeServer) -> None:
    recorder = Recorder(RECORDED)
    server = await make_server(recorder.router)
    aggregates = [uuid.uuid4() for _ in range(10)]
    for a in aggregates:
        await write_events(relay_ctx, a, 3)
    sub = Subscriber("rec", "127.0.0.1", server.port, ("*",))
    relays = [OutboxRelay(relay_ctx, [sub]), OutboxRelay(relay_ctx, [sub])]
    try:
        for _ in range(50):
            counts = await asyncio.gather(*(r.run_once() for r in relays))
            if sum(counts) == 0 and len(recorder.events) >= 30:
                break
        await wait_for(lambda: len(recorder.events) == 30)
    finally:
        for r in relays:
            await r.stop()
    ids = [p["event_id"] for _, p in recorder.events]
    assert len(set(ids)) == 30  # none lost, none sent twice (the advisory lock serialises the subscriber)
    for a in aggregates:
        seen = [p["occurred_at"] for _, p in recorder.events if p["reservation_id"] == str(a)]
        assert seen == sorted(seen)


async def test_a_commit_wakes_the_relay_of_its_own_process(relay_ctx: Context, make_server: MakeServer) -> None:
    recorder, ctx, relay = await slow_poll_relay(relay_ctx, make_server)
    await relay.start()
    try:
        await asyncio.sleep(0.1)
        await write_events(ctx, uuid.uuid4(), 1)
        await wait_for(lambda: len(recorder.events) == 1, timeout=3.0)  # far sooner than the 30 s poll
        assert relay.signal.notifies <= 1  # and other processes were told once
    finally:
        await relay.stop()
    assert ctx.after_commit is None


async def test_an_event_committed_late_is_still_delivered(relay_ctx: Context, make_server: MakeServer) -> None:
    recorder = Recorder(RECORDED)
    server = await make_server(recorder.router)
    relay = OutboxRelay(relay_ctx, [Subscriber("rec", "127.0.0.1", server.port, ("*",))])
    early, late = uuid.uuid4(), uuid.uuid4()
    try:
        async with relay_ctx.transaction() as slow:  # takes the lower seq, commits last
            await enqueue(slow, relay_ctx.sql, early, cancelled(early))
            later_ids = await write_events(relay_ctx, late, 1)
            assert await relay.run_once() == 1  # the committed one goes; the open one is invisible
        assert await relay.run_once() == 1  # committed now: delivered, not skipped as "behind the offset"
        await wait_for(lambda: len(recorder.events) == 2)
    finally:
        await relay.stop()
    assert recorder.events[0][1]["event_id"] == later_ids[0]
    assert recorder.events[1][1]["reservation_id"] == str(early)


async def test_stop_closes_a_listener_it_cannot_unlisten_instead_of_pooling_it(relay_ctx: Context) -> None:
    relay = OutboxRelay(relay_ctx, [])
    await relay.start()
    listener = relay._listener
    assert listener is not None
    size = relay_ctx.pool.get_size()
    busy = asyncio.ensure_future(listener.fetchval("SELECT pg_sleep(30)"))  # UNLISTEN now cannot run on it
    await asyncio.sleep(0.05)
    await relay.stop()  # logs the failed UNLISTEN, raises nothing
    assert listener.is_closed()
    assert relay_ctx.pool.get_size() == size - 1
    with pytest.raises(Exception):  # noqa: B017 - the sleep dies with its connection, whatever asyncpg calls it
        await busy
    async with relay_ctx.connection() as conn:  # the pool hands out a working connection
        assert conn is not listener
        assert await conn.fetchval("SELECT 1") == 1


async def test_the_listen_connection_heals_after_it_is_killed(relay_ctx: Context, make_server: MakeServer) -> None:
    recorder, ctx, relay = await slow_poll_relay(relay_ctx, make_server)
    writer = other_process(ctx)
    await relay.start()
    try:
        assert relay._listener is not None and relay.stats.listening
        first_pid = relay._listener.get_server_pid()
        async with ctx.connection() as killer:  # what a restart, failover or idle-session kill does to it
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", first_pid)
        # the termination is noticed at once; a loaded machine may leave it to the liveness check (5 s)
        await wait_for(lambda: relay.stats.listen_losses == 1, timeout=15.0)
        await wait_for(lambda: relay.stats.listening, timeout=15.0)
        assert relay._listener is not None and relay._listener.get_server_pid() != first_pid
        async with ctx.connection() as conn:
            alive = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", relay._listener.get_server_pid()
            )
        assert alive == 1
        # another process commits: its NOTIFY reaches the new LISTEN connection
        await write_events(writer, uuid.uuid4(), 1)
        await wait_for(lambda: len(recorder.events) == 1, timeout=10.0)  # not the 30 s poll
    finally:
        await relay.stop()
        assert isinstance(writer.after_commit, OutboxSignal)
        await writer.after_commit.stop()
    assert not relay.stats.listening


def other_process(ctx: Context) -> Context:
    """A Context as another replica's would be: its commits signal only by NOTIFY."""
    writer = Context(pool=ctx.pool, sql=ctx.sql, settings=ctx.settings)
    writer.after_commit = OutboxSignal(writer)
    return writer


async def test_other_processes_hear_of_commits_by_one_coalesced_notify(
    relay_ctx: Context, make_server: MakeServer
) -> None:
    recorder, ctx, relay = await slow_poll_relay(relay_ctx, make_server)
    await relay.start()
    writer = other_process(ctx)
    try:
        await asyncio.gather(*(write_events(writer, uuid.uuid4(), 5) for _ in range(4)))
        await wait_for(lambda: len(recorder.events) == 20, timeout=3.0)
        signal = writer.after_commit
        assert isinstance(signal, OutboxSignal)
        # the relay may deliver before the writer's NOTIFY task has released its connection and counted
        await wait_for(lambda: signal.notifies >= 1, timeout=3.0)
        assert signal.notifies <= 5  # 20 commits, a NOTIFY per 50 ms at most
        assert relay.signal.notifies == 0  # the relay's own deliveries signal nobody
    finally:
        await relay.stop()
        assert isinstance(writer.after_commit, OutboxSignal)
        await writer.after_commit.stop()


async def test_a_notify_owed_by_a_request_is_not_bound_by_its_deadline(
    relay_ctx: Context, make_server: MakeServer, db_url: str
) -> None:
    recorder, ctx, relay = await slow_poll_relay(relay_ctx, make_server)
    await relay.start()
    # another process's, with a pool of one connection: the NOTIFY must wait for it, and a wait is what a
    # deadline bounds
    writer_pool = await create_pool(db_url, min_size=1, max_size=1)
    writer = Context(pool=writer_pool, sql=ctx.sql, settings=ctx.settings)  # its commits signal nobody
    signal = OutboxSignal(writer)
    try:
        await write_events(writer, uuid.uuid4(), 1)
        async with writer_pool.acquire():
            # the commit's signal, from inside a request whose deadline is up once it has answered
            token = current_deadline.set(asyncio.get_running_loop().time())
            try:
                signal()
            finally:
                current_deadline.reset(token)
            await asyncio.sleep(0.2)  # the coalesced NOTIFY now waits for the connection
        await wait_for(lambda: len(recorder.events) == 1, timeout=5.0)  # not the 30 s poll
        # the relay may deliver before the NOTIFY task has released its connection and counted
        await wait_for(lambda: signal.notifies == 1, timeout=3.0)
    finally:
        await signal.stop()
        await relay.stop()
        await writer_pool.close()


async def test_a_writer_stopping_right_after_its_commits_still_tells_the_other_processes(
    relay_ctx: Context, make_server: MakeServer
) -> None:
    recorder, ctx, relay = await slow_poll_relay(relay_ctx, make_server)
    await relay.start()
    writer = Context(pool=ctx.pool, sql=ctx.sql, settings=ctx.settings)  # another process's, signalled by hand
    signal = OutboxSignal(writer)
    try:
        # the relay has run its first batches and waits (30 s poll): only a NOTIFY makes it look again
        await write_events(ctx, uuid.uuid4(), 1)
        await wait_for(lambda: len(recorder.events) == 1, timeout=5.0)
        await write_events(writer, uuid.uuid4(), 3)
        signal()  # what its commit did; the NOTIFY is still coalescing (NOTIFY_COALESCE) when it stops
        await signal.stop()
        assert signal.notifies == 1
        await wait_for(lambda: len(recorder.events) == 4, timeout=5.0)  # heard of, not found by the 30 s poll
        await signal.stop()  # nothing owed any more: no second NOTIFY
        assert signal.notifies == 1
    finally:
        await relay.stop()


def plan_work(node: dict[str, Any]) -> int:
    """Rows every node of an EXPLAIN ANALYZE plan read (produced or filtered out), over all its loops."""
    rows = node["Actual Rows"] + node.get("Rows Removed by Filter", 0) + node.get("Rows Removed by Join Filter", 0)
    own = int(rows * node["Actual Loops"])
    return own + sum(plan_work(child) for child in node.get("Plans", []))


async def record_delivered(conn: asyncpg.Connection, subscriber: str, ids: list[uuid.UUID]) -> None:
    """`subscriber`'s delivered records of the rows `ids` (what its batches would have written)."""
    await conn.execute(
        "INSERT INTO outbox_deliveries (event_id, subscriber, attempts, delivered_at)"
        " SELECT unnest($1::uuid[]), $2, 1, now()",
        ids,
        subscriber,
    )


async def write_rows(ctx: Context, count: int, *, delivered: bool) -> list[uuid.UUID]:
    """`count` outbox rows of their own aggregates; `delivered`: published, each with the delivery record of
    subscriber 'rec' (the history of what it already has). Their ids, in seq order."""
    async with ctx.transaction() as conn:
        ids: list[uuid.UUID] = await conn.fetchval(
            "WITH o AS (INSERT INTO booking_events_outbox (aggregate_type, aggregate_id, event_type, payload,"
            " published) SELECT 'reservation', gen_random_uuid(), 'reservation.cancelled', '{}', $2"
            " FROM generate_series(1, $1) RETURNING id, seq) SELECT array_agg(id ORDER BY seq) FROM o",
            count,
            delivered,
        )
        if delivered:
            await record_delivered(conn, "rec", ids)
    return ids


async def test_a_claim_costs_its_window_not_the_delivery_history(relay_ctx: Context) -> None:
    """On fresh tables (no statistics yet: a new deployment, the bench) the claim's work follows its window.

    Every delivered event keeps its delivery row. Planned as a join, the claim read all of this subscriber's
    delivery rows for each row of its window: each batch cost more than the one before (bench.events --sink
    jetstream fell behind its producers).
    """
    ctx = relay_ctx
    claim = ctx.sql["outbox.claim_for_subscriber"]

    async def work() -> int:
        async with ctx.transaction() as conn:
            await conn.fetchval(ctx.sql["outbox.batch_start"], "rec")  # the batch's own planner settings
            plan = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {claim}", "rec", ["%"], 500, 2000, 0)
        return plan_work(plan[0]["Plan"])  # the pool decodes json

    await write_rows(ctx, 3000, delivered=False)
    before = await work()
    history = 6000
    await write_rows(ctx, history, delivered=True)  # the history of what this subscriber already has
    after = await work()
    # not even one pass over the history (the claim of 6c7f760 read it four times: 27,001 -> 51,001 rows,
    # under twice the work it began with)
    assert after - before < history, (before, after)


async def rows_read(ctx: Context) -> int:
    """Rows the outbox and its delivery records have given (sequential and index scans) up to now, counting
    every backend's flushed counters; `ctx`'s pool must be of one connection, whose own count is flushed first."""
    async with ctx.connection() as conn:
        await conn.execute("SELECT pg_stat_force_next_flush()")  # at its next idle moment, before the next query
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        read: int = await conn.fetchval(
            "SELECT sum(coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)) FROM pg_stat_user_tables"
            " WHERE relname IN ('booking_events_outbox', 'outbox_deliveries')"
        )
    return read


async def test_a_subscriber_down_with_a_backlog_costs_each_wake_up_no_backlog_scan(
    relay_ctx: Context, make_server: MakeServer, db_url: str
) -> None:
    """While its subscriber is down, commits keep waking the loop: no wake-up may read the backlog (main's
    claim read all of it once the window's heads backed off), and the loop waits for its failed head's retry
    instead of claiming a batch at each wake-up only to fail it."""
    probe = await make_server(Recorder(RECORDED).router)
    port = probe.port
    await probe.shutdown(0.1)  # the port is free again: the subscriber is down
    settings = relay_ctx.settings.model_copy(
        update={
            "outbox_batch_size": 5,
            "outbox_backoff_base": 5.0,
            "outbox_backoff_max": 60.0,
            "outbox_poll_interval": 30.0,
        }
    )
    await write_rows(relay_ctx, 3000, delivered=False)
    relay_pool = await create_pool(db_url, min_size=1, max_size=1)  # all the relay reads, on one backend
    ctx = build_context(settings, relay_pool)
    relay = OutboxRelay(ctx, [Subscriber("rec", "127.0.0.1", port, ("*",))])
    try:
        before = await rows_read(ctx)
        await relay.sync_loops()  # the loop alone (no sweep, no LISTEN): its first batch fails
        await wait_for(lambda: relay.stats.failed["rec"] == 1)
        for _ in range(20):  # what commits do
            relay.wake_all()
            await asyncio.sleep(0.05)
        read = await rows_read(ctx) - before
        failed = relay.stats.failed["rec"]
    finally:
        await relay.stop()
        await relay_pool.close()
    # one batch: its window of 10 rows and the 5 claimed, each looked up; with a claim per wake-up, 5 of the
    # 20 wake-ups claimed (and failed) a batch, 110 rows; main's claim read the 3,000-row backlog at each one
    # once the window's heads backed off
    assert failed == 1, failed
    assert read < 50, read


async def write_unwanted(ctx: Context) -> uuid.UUID:
    """An event of a type no test subscriber takes (`audit.noted`), committed on its own; its id."""
    event_id = uuid.uuid4()
    async with ctx.transaction() as conn:
        await conn.execute(ctx.sql["outbox.enqueue"], event_id, "audit", uuid.uuid4(), "audit.noted", {"n": 1})
    return event_id


async def published(ctx: Context, *ids: uuid.UUID | str) -> list[bool]:
    async with ctx.connection() as conn:
        rows = await conn.fetch(
            "SELECT id, published FROM booking_events_outbox WHERE id = ANY($1::uuid[])", [str(i) for i in ids]
        )
    by_id = {str(r["id"]): r["published"] for r in rows}
    return [by_id[str(i)] for i in ids]


async def test_a_batch_publishes_the_rows_nobody_wants_up_to_its_last_event(
    relay_ctx: Context, make_server: MakeServer
) -> None:
    recorder = Recorder(RECORDED)
    server = await make_server(recorder.router)
    aggregate = uuid.uuid4()
    before = await write_unwanted(relay_ctx)
    wanted = await write_events(relay_ctx, aggregate, 1)
    between = await write_unwanted(relay_ctx)
    wanted += await write_events(relay_ctx, uuid.uuid4(), 1)
    after = await write_unwanted(relay_ctx)
    relay = OutboxRelay(relay_ctx, [Subscriber("rec", "127.0.0.1", server.port, ("reservation.*",))])
    try:
        await relay.sync_loops(start_tasks=False)
        (loop,) = relay.loops.values()
        assert await loop.deliver_batch() == 2
        # published by the batch itself, not seconds later by the sweep: later claims do not scan them again
        assert await published(relay_ctx, *wanted, before, between, after) == [True, True, True, True, False]
        async with relay_ctx.connection() as conn:
            # a single subscriber's deliveries leave no records behind: the rows are published
            assert await conn.fetchval("SELECT count(*) FROM outbox_deliveries") == 0
        assert await relay.run_once() == 0
        assert await published(relay_ctx, after) == [True]  # the sweep takes the rest
    finally:
        await relay.stop()
    await wait_for(lambda: len(recorder.events) == 2)
    assert [p["event_id"] for _, p in recorder.events] == wanted


async def test_delivery_records_live_until_every_subscriber_has_the_row(
    relay_ctx: Context, make_server: MakeServer
) -> None:
    first, second = Recorder(RECORDED), Recorder(RECORDED)
    first_server, second_server = await make_server(first.router), await make_server(second.router)
    ids = await write_events(relay_ctx, uuid.uuid4(), 2)
    subs = [
        Subscriber("all", "127.0.0.1", first_server.port, ("*",)),
        Subscriber("some", "127.0.0.1", second_server.port, ("reservation.*",)),
    ]
    relay = OutboxRelay(relay_ctx, subs)
    try:
        await relay.sync_loops(start_tasks=False)
        loops = {loop.subscriber.name: loop for loop in relay.loops.values()}
        assert await loops["all"].deliver_batch() == 1  # per aggregate, the oldest first
        assert await published(relay_ctx, *ids) == [False, False]  # "some" has not got it yet
        async with relay_ctx.connection() as conn:
            records = await conn.fetch("SELECT event_id, subscriber, delivered_at FROM outbox_deliveries")
        assert [(str(r["event_id"]), r["subscriber"]) for r in records] == [(ids[0], "all")]
        assert records[0]["delivered_at"] is not None
        assert await loops["all"].deliver_batch() == 1  # its record keeps the first from being sent again
        assert await loops["all"].deliver_batch() == 0
        assert await loops["some"].deliver_batch() == 1
        assert await loops["some"].deliver_batch() == 1
        assert await published(relay_ctx, *ids) == [True, True]
        async with relay_ctx.connection() as conn:
            assert await conn.fetchval("SELECT count(*) FROM outbox_deliveries") == 0
    finally:
        await relay.stop()
    await wait_for(lambda: len(first.events) == 2 and len(second.events) == 2)
    assert [p["event_id"] for _, p in first.events] == ids
    assert [p["event_id"] for _, p in second.events] == ids


async def test_the_sweep_forgets_the_delivery_records_of_the_rows_it_publishes(
    relay_ctx: Context, make_server: MakeServer
) -> None:
    first, second = Recorder(RECORDED), Recorder(RECORDED)
    first_server, second_server = await make_server(first.router), await make_server(second.router)
    (event_id,) = await write_events(relay_ctx, uuid.uuid4(), 1)
    everyone = Subscriber("all", "127.0.0.1", first_server.port, ("*",))
    relay = OutboxRelay(relay_ctx, [everyone, Subscriber("some", "127.0.0.1", second_server.port, ("reservation.*",))])
    try:
        await relay.sync_loops(start_tasks=False)
        loops = {loop.subscriber.name: loop for loop in relay.loops.values()}
        assert await loops["all"].deliver_batch() == 1  # kept unpublished (with its record) for "some"
    finally:
        await relay.stop()
    relay = OutboxRelay(relay_ctx, [everyone])  # "some" unsubscribed: "all" was the last the row awaited
    try:
        assert await relay.run_once() == 0
        assert await published(relay_ctx, event_id) == [True]  # by the sweep (publish_done)
        async with relay_ctx.connection() as conn:
            assert await conn.fetchval("SELECT count(*) FROM outbox_deliveries") == 0
    finally:
        await relay.stop()
    await wait_for(lambda: len(first.events) == 1)
    assert [p["event_id"] for _, p in first.events] == [event_id] and second.events == []


async def test_the_sweep_deletes_the_records_of_removed_subscribers_and_of_published_rows(
    relay_ctx: Context, make_server: MakeServer
) -> None:
    """Records from before 590436b (kept for every published row) and those of a subscriber no longer
    configured were never deleted; the sweep deletes them, and only them, also when replicas sweep at once."""
    recorder = Recorder(RECORDED)
    server = await make_server(recorder.router)
    history = await write_rows(relay_ctx, 300, delivered=True)  # published, each with a record of 'rec'
    awaited = await write_rows(relay_ctx, 3, delivered=False)
    async with relay_ctx.connection() as conn:
        # 'gone' was removed: its records of published and of unpublished rows; 'rec' is configured: its
        # delivered record of a row 'waiting' still awaits, and a failed delivery backing off
        await record_delivered(conn, "gone", [history[0], *awaited])
        await conn.execute(
            "INSERT INTO outbox_deliveries (event_id, subscriber, attempts, delivered_at) VALUES ($1, 'rec', 1, now())",
            awaited[0],
        )
        await conn.execute(
            "INSERT INTO outbox_deliveries (event_id, subscriber, attempts, next_attempt_at)"
            " VALUES ($1, 'rec', 1, now() + interval '1 minute')",
            awaited[1],
        )
    subs = [
        Subscriber("rec", "127.0.0.1", server.port, ("*",)),
        Subscriber("waiting", "127.0.0.1", 1, ("*",)),  # keeps 'rec''s delivered record of awaited[0] needed
    ]
    relays = [OutboxRelay(relay_ctx, subs) for _ in range(2)]
    try:
        # batch 500 > 300 records: each replica's sweep takes its share in one batch, skipping the other's
        await asyncio.gather(*(r.publish_done() for r in relays))
    finally:
        for r in relays:
            await r.stop()
    async with relay_ctx.connection() as conn:
        left = await conn.fetch("SELECT subscriber, event_id FROM outbox_deliveries ORDER BY event_id")
    assert sorted((r["subscriber"], str(r["event_id"])) for r in left) == sorted(
        [("rec", str(awaited[0])), ("rec", str(awaited[1]))]
    )


async def test_a_sweep_keeps_the_records_of_a_subscription_newer_than_its_replicas_list(
    relay_ctx: Context, make_server: MakeServer
) -> None:
    """A replica whose subscriber list predates a subscription (its NOTIFY not handled yet) must not take that
    subscriber's delivery records for a removed one's: its loops' marks rest on them."""
    recorder = Recorder(RECORDED)
    server = await make_server(recorder.router)
    awaited = await write_rows(relay_ctx, 2, delivered=False)
    async with relay_ctx.connection() as conn:
        await conn.execute(
            "INSERT INTO event_subscriptions (name, host, port, patterns) VALUES ('newer', '127.0.0.1', 1, '{*}')"
        )
        await record_delivered(conn, "newer", awaited)
        await record_delivered(conn, "gone", awaited)
    relay = OutboxRelay(relay_ctx, [Subscriber("rec", "127.0.0.1", server.port, ("*",))])
    try:
        await relay.forget_stale_deliveries()
    finally:
        await relay.stop()
    async with relay_ctx.connection() as conn:
        left = await conn.fetch("SELECT subscriber, event_id FROM outbox_deliveries")
    assert sorted((r["subscriber"], str(r["event_id"])) for r in left) == sorted(
        ("newer", str(event_id)) for event_id in awaited
    )


def deletes_buffers(node: dict[str, Any]) -> int:
    """Buffers the DELETE nodes of an EXPLAIN (ANALYZE, BUFFERS) plan touched (theirs include their inputs')."""
    if node["Node Type"] == "ModifyTable" and node["Operation"] == "Delete":
        return int(node["Shared Hit Blocks"] + node["Shared Read Blocks"])
    return sum(deletes_buffers(child) for child in node.get("Plans", []))


async def test_a_delivered_batch_forgets_its_records_without_reading_the_delivery_history(relay_ctx: Context) -> None:
    """mark_delivered deletes the records of the rows it publishes by event id: that must be a lookup per row,
    not a pass over every subscriber's records (migration 0047)."""
    ctx = relay_ctx
    batch = await write_rows(ctx, 200, delivered=False)

    async def buffers() -> int:
        async with ctx.connection() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                await conn.fetchval(ctx.sql["outbox.batch_start"], "rec")  # the batch's own planner settings
                plan = await conn.fetchval(
                    f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {ctx.sql['outbox.mark_delivered']}",
                    "rec",
                    batch,
                    ["rec"],
                    ["%"],
                    2**62,
                    0,
                )
            finally:
                await tx.rollback()  # the same batch, delivered again below
        return deletes_buffers(plan[0]["Plan"])

    before = await buffers()
    await write_rows(ctx, 20_000, delivered=True)
    after = await buffers()
    # at most one index page more per row of the batch (a level more of the index): without the index, a pass
    # over the primary key's pages per batch (hash join, 202 -> 1192 buffers) or per row (nested loop)
    assert after - before <= len(batch), (before, after)


async def test_a_sweep_reads_what_it_deletes_not_every_delivery_record(relay_ctx: Context, db_url: str) -> None:
    """The live delivery state (here 'rec''s records of 6,000 rows 'waiting' still awaits) is never deleted, and no
    sweep may read all of it: the search for stale records anywhere read every record at every sweep, in every
    replica. Sweeps go on from where the last stopped, so stale records anywhere are still found."""
    awaited = await write_rows(relay_ctx, 6000, delivered=False)
    async with relay_ctx.connection() as conn:
        await record_delivered(conn, "rec", awaited)
        # two removed subscribers' records: one's first in key order, the other's last
        for removed in ("a-removed", "z-removed"):
            await record_delivered(conn, removed, awaited[:100])
    relay_pool = await create_pool(db_url, min_size=1, max_size=1)  # all the sweep reads, on one backend
    ctx = build_context(relay_ctx.settings, relay_pool)  # batch 500
    relay = OutboxRelay(ctx, [Subscriber("rec", "127.0.0.1", 1, ("*",)), Subscriber("waiting", "127.0.0.1", 1, ("*",))])
    try:
        await relay.sync_loops(start_tasks=False)
        before = await rows_read(ctx)
        first = await relay.forget_stale_deliveries()
        read = await rows_read(ctx) - before
        later = [await relay.forget_stale_deliveries() for _ in range(14)]  # a pass: 6,200 records, 500 a step
    finally:
        await relay.stop()
        await relay_pool.close()
    async with relay_ctx.connection() as conn:
        left = await conn.fetch("SELECT subscriber, count(*) FROM outbox_deliveries GROUP BY subscriber")
    # one step: the first 500 records in key order (100 stale, 400 live) and each one's outbox row, 1,000 rows;
    # 4be3cf6's search for stale records anywhere read 18,400 (every record, and the live ones' rows)
    assert read < 2000, read
    assert {r["subscriber"]: r["count"] for r in left} == {"rec": 6000}
    # a step per sweep while it finds mostly live records; the pass reaches the last ones
    assert first == 100 and sum(later) == 100, (first, later)


async def write_aggregate(ctx: Context, aggregate: uuid.UUID, count: int) -> None:
    """`count` undelivered events of one aggregate, in one statement."""
    async with ctx.transaction() as conn:
        await conn.execute(
            "INSERT INTO booking_events_outbox (aggregate_type, aggregate_id, event_type, payload)"
            " SELECT 'reservation', $1, 'reservation.cancelled', '{}' FROM generate_series(1, $2)",
            aggregate,
            count,
        )


async def test_a_claim_does_not_read_the_events_queued_behind_a_dead_head(relay_ctx: Context, db_url: str) -> None:
    """A dead head with thousands of events behind it, older than every due event (those before them were
    delivered): skipped one by one, they cost every claim a read each before its window."""
    dead = uuid.uuid4()
    await write_aggregate(relay_ctx, dead, 5)
    await hold_back(relay_ctx, dead, dead=True)
    queued = 5000
    await write_aggregate(relay_ctx, dead, queued)  # queued behind the dead head
    await write_rows(relay_ctx, 2000, delivered=False)  # due events of other aggregates, after them
    relay_pool = await create_pool(db_url, min_size=1, max_size=1)  # all the claims read, on one backend
    ctx = build_context(relay_ctx.settings, relay_pool)
    window = 1000

    async def claim() -> int:
        """Rows one claim reads (batch 500, window 1,000)."""
        before = await rows_read(ctx)
        async with ctx.transaction() as conn:
            await conn.fetchval(ctx.sql["outbox.batch_start"], "rec")
            claimed = await conn.fetch(ctx.sql["outbox.claim_for_subscriber"], "rec", ["%"], 500, window, 0)
        assert len(claimed) == 500
        return await rows_read(ctx) - before

    try:
        first = await claim()  # the first claim since they were queued reads them once
        later = [await claim() for _ in range(3)]
    finally:
        await relay_pool.close()
    # its window, a lookup of each row's delivery and the 500 rows claimed; the claim of 19d5a7b also read the
    # 5,005 rows held back at every claim
    assert max(later) < 2 * window, (first, later)


async def test_events_queued_behind_a_head_go_in_order_once_it_is_due(
    relay_ctx: Context, make_server: MakeServer
) -> None:
    recorder = Recorder(RECORDED)
    server = await make_server(recorder.router)
    aggregate = uuid.uuid4()
    ids = await write_events(relay_ctx, aggregate, 3)
    other = await write_events(relay_ctx, uuid.uuid4(), 1)
    await hold_back(relay_ctx, aggregate, dead=True)
    relay = OutboxRelay(relay_ctx, [Subscriber("rec", "127.0.0.1", server.port, ("*",))])
    try:
        assert await relay.run_once() == 1  # the other aggregate's; the claims marked the three held back
        ids += await write_events(relay_ctx, aggregate, 2)  # queued behind the dead head after it was marked
        assert await relay.run_once() == 0
        assert await retry_dead(relay_ctx) == 1
        assert await relay.run_once() == 5
        await wait_for(lambda: len(recorder.events) == 6)
    finally:
        await relay.stop()
    assert [p["event_id"] for _, p in recorder.events] == other + ids


async def test_a_sweep_reads_what_it_publishes_not_the_backlog_a_subscriber_awaits(
    relay_ctx: Context, db_url: str
) -> None:
    """'rec' has 6,000 rows that 'waiting' (down) still awaits: none is complete, and no sweep may read them all
    to find that out (the search for complete rows anywhere read the whole backlog, and 'rec''s records of it, at
    every sweep, in every replica). Sweeps go on from where the last stopped, so a complete row anywhere in the
    backlog is still published."""
    awaited = await write_rows(relay_ctx, 6000, delivered=False)
    async with relay_ctx.connection() as conn:
        await record_delivered(conn, "rec", awaited)
        # the last row 'waiting' has too: its batch and 'rec''s committed at once, each saw no record of the
        # other's, and neither published it
        await record_delivered(conn, "waiting", awaited[-1:])
    relay_pool = await create_pool(db_url, min_size=1, max_size=1)  # all the sweep reads, on one backend
    ctx = build_context(relay_ctx.settings, relay_pool)  # batch 500
    relay = OutboxRelay(ctx, [Subscriber("rec", "127.0.0.1", 1, ("*",)), Subscriber("waiting", "127.0.0.1", 1, ("*",))])
    try:
        await relay.sync_loops(start_tasks=False)
        reads, marked = [], []
        for _ in range(13):  # a pass: 6,000 rows, 500 a step
            before = await rows_read(ctx)
            marked.append(await relay.publish_done())
            reads.append(await rows_read(ctx) - before)
    finally:
        await relay.stop()
        await relay_pool.close()
    print(f"rows read by each sweep: {[int(r) for r in reads]}; rows published: {marked}")
    # a step of each half a sweep: 500 rows and 'rec''s record of each, and 500 records and the row of each,
    # 2,000 rows; the search for complete rows anywhere read 12,999 every sweep (25,002 the one that published)
    assert max(reads) < 2500, reads
    # the pass reaches the complete row, and only that one is published
    assert sum(marked) == 1 and await published(relay_ctx, awaited[0], awaited[-1]) == [False, True], marked


async def test_a_healthy_subscribers_claim_does_not_read_the_backlog_another_one_awaits(
    relay_ctx: Context, make_server: MakeServer, db_url: str
) -> None:
    """'down' awaits 6,000 rows that 'up' already has (unpublished until 'down' has them too); then rows for
    both arrive, a batch at a time. Once its first claims have passed them, each batch of 'up' costs what it
    claims, not a read of the 6,000 rows it already has and of those it got since."""
    recorder = Recorder(RECORDED)
    server = await make_server(recorder.router)
    awaited = await write_rows(relay_ctx, 6000, delivered=False)
    async with relay_ctx.connection() as conn:
        await record_delivered(conn, "up", awaited)
    relay_pool = await create_pool(db_url, min_size=1, max_size=1)  # all the batches read, on one backend
    ctx = build_context(relay_ctx.settings, relay_pool)  # batch 500, window 1,000
    up = Subscriber("up", "127.0.0.1", server.port, ("*",))
    relay = OutboxRelay(ctx, [up, Subscriber("down", "127.0.0.1", 1, ("*",))])
    try:
        await relay.sync_loops(start_tasks=False)
        loop = relay.loops[up]
        reads, delivered = [], []
        for _ in range(6):
            await write_rows(ctx, 500, delivered=False)  # new rows, for both
            before = await rows_read(ctx)
            delivered.append(await loop.deliver_batch())
            reads.append(int(await rows_read(ctx) - before))
        await write_rows(ctx, 500, delivered=False)
        async with ctx.transaction() as conn:
            await conn.fetchval(ctx.sql["outbox.batch_start"], "up")
            claim = f"EXPLAIN (ANALYZE, BUFFERS) {ctx.sql['outbox.claim_for_subscriber']}"
            plan = await conn.fetch(claim, "up", ["%"], 500, 1000, loop.delivered_to)
    finally:
        await relay.stop()
        await relay_pool.close()
    print(f"rows read by each batch of 'up': {reads}; delivered: {delivered}")
    print("\n".join(row[0] for row in plan))
    assert delivered == [500] * 6, delivered
    await wait_for(lambda: len(recorder.events) == 3000)
    # the first batches scan from seq 0 (a relay's loop starts there) until the seqs they read are settled;
    # then each reads its window from the loop's mark (the last two batches' rows and its 500, and a lookup of
    # each one's record), the rows read back, its records written and the range its unwanted rows are looked
    # for in: 5,000 rows a batch, whatever the backlog; scanning from seq 0, a batch read the 6,000 rows 'up'
    # has, and the records of them, again and 1,500 more after each batch (20,001, 21,501, 23,001, 24,501, 26,000, 27,500)
    assert max(reads[3:]) < 6000 and reads[-1] <= reads[3], reads


async def test_a_row_committed_late_behind_the_rows_a_subscriber_has_is_still_delivered(
    relay_ctx: Context, make_server: MakeServer
) -> None:
    """An open transaction holds a seq below rows committed and delivered after it, batch after batch: the
    loop's mark (its claims scan after it) must not pass that seq before the transaction ends."""
    recorder = Recorder(RECORDED)
    server = await make_server(recorder.router)
    up = Subscriber("up", "127.0.0.1", server.port, ("*",))
    relay = OutboxRelay(relay_ctx, [up])
    early = uuid.uuid4()
    try:
        await relay.sync_loops(start_tasks=False)
        loop = relay.loops[up]
        async with relay_ctx.transaction() as slow:  # takes the lower seq, commits last
            await enqueue(slow, relay_ctx.sql, early, cancelled(early))
            for _ in range(5):
                await write_events(relay_ctx, uuid.uuid4(), 1)
                assert await loop.deliver_batch() == 1
        first = loop.delivered_to
        delivered = []
        for _ in range(5):
            await write_events(relay_ctx, uuid.uuid4(), 1)
            delivered.append(await loop.deliver_batch())
        await wait_for(lambda: len(recorder.events) == 11)
    finally:
        await relay.stop()
    async with relay_ctx.connection() as conn:
        early_seq = await conn.fetchval("SELECT seq FROM booking_events_outbox WHERE aggregate_id = $1", early)
    # committed at last, it goes with the next batch: the mark stayed below it while it was open (a mark moved
    # to the sequence's last seq at each batch passed it, and it was never delivered), and moves past it after
    assert delivered == [2, 1, 1, 1, 1], delivered
    assert recorder.events[5][1]["reservation_id"] == str(early)
    assert first < early_seq < loop.delivered_to, (first, early_seq, loop.delivered_to)
