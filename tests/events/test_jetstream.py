"""The outbox relay's JetStream sink on a real nats-server: every committed event reaches the stream once per
event id, in per-aggregate order, with the NestJS event envelope; duplicates acked by the stream count as
delivered; NATS down spends no attempt; a relay killed mid-delivery and a NATS restart lose nothing; the
sink closes promptly and quietly with NATS gone deaf."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import subprocess
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import asyncpg
import nats

from booking_rpc.config import Settings
from booking_rpc.context import Context
from booking_rpc.db.pool import Pool
from booking_rpc.db.queries import Queries
from booking_rpc.devnats import NatsServer
from booking_rpc.events.jetstream import JetStreamSink, event_body, stream_subjects
from booking_rpc.events.outbox import event_body as outbox_event_body
from booking_rpc.events.relay import OutboxRelay
from booking_rpc.models.events import PUBLISHED_EVENTS
from tests.fixtures.nats import StreamMessage, read_stream
from tests.helpers import cancelled, fetch, relay, spawn_service, wait_for, write_events

ROOT = Path(__file__).resolve().parents[2]


def relay_settings(nats_url: str, stream: str) -> Settings:
    return Settings(
        nats_url=nats_url,
        events_nats=True,
        nats_stream=stream,
        nats_duplicate_window=180,
        outbox_backoff_base=0.01,
        outbox_backoff_max=0.05,
    )


async def outbox_rows(pool: Pool) -> list[asyncpg.Record]:
    return await fetch(pool, "SELECT id, aggregate_id, seq, event_type, payload, published FROM booking_events_outbox")


async def all_published(pool: Pool, timeout: float) -> None:
    """Until no outbox row is left unpublished (the relay's commits, not its counters, say delivered)."""
    async with asyncio.timeout(timeout):
        while await fetch(pool, "SELECT 1 FROM booking_events_outbox WHERE NOT published LIMIT 1"):
            await asyncio.sleep(0.05)


def assert_once_each_in_aggregate_order(messages: list[StreamMessage], rows: list[asyncpg.Record]) -> None:
    """Stream count = outbox rows, one message per event id, and each aggregate's events in outbox order."""
    assert len(messages) == len(rows)
    assert sorted(m.msg_id or "" for m in messages) == sorted(str(r["id"]) for r in rows)
    expected: dict[uuid.UUID, list[str]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["seq"]):
        expected[row["aggregate_id"]].append(str(row["id"]))
    aggregate_of = {str(r["id"]): r["aggregate_id"] for r in rows}
    seen: dict[uuid.UUID, list[str]] = defaultdict(list)
    for message in messages:
        seen[aggregate_of[message.msg_id or ""]].append(message.msg_id or "")
    assert seen == expected


def test_stream_subjects_cover_every_published_event() -> None:
    subjects = stream_subjects()
    for event in PUBLISHED_EVENTS:
        assert f"{event.event_type.split('.')[0]}.>" in subjects
    assert subjects == ["booking.>", "payment.>", "reservation.>", "review.>", "waitlist.>"]


async def test_closing_while_nats_is_deaf_and_gone_is_prompt_quiet_and_complete(
    nats_server_factory: Callable[..., NatsServer],
) -> None:
    """NATS stops reading what the sink writes, then goes (an EOF): the sink's client reconnects with the old
    socket's bytes unsent, its reconnect Task waiting for that socket to close (for ever, here). The sink's
    close (the relay's stop) must then neither raise nats-py's CancelledError nor hang, and must leave none of
    the client's Tasks behind."""
    server = nats_server_factory()
    deaf = asyncio.Event()
    before = asyncio.all_tasks()
    async with relay(server, hold=lambda held: False, deaf=deaf) as url:
        sink = JetStreamSink([url], "TEST_DEAF")
        sink.start()
        await wait_for(lambda: sink.ready, 10)
        deaf.set()
        connection = sink.nc._transport._io_writer.transport  # type: ignore[union-attr]
        for _ in range(100):  # messages of 1 MB, until the sockets hold no more and asyncio buffers them
            await sink.nc.publish("deaf.filler", b"x" * 1_000_000)
            await asyncio.sleep(0.02)  # the flusher's turn
            if connection.get_write_buffer_size():
                break
        assert connection.get_write_buffer_size()
        await asyncio.to_thread(server.stop)  # the relay passes its EOF on
        await wait_for(lambda: sink.nc.is_reconnecting, 10)
        async with asyncio.timeout(10):
            await sink.close()
        assert sink.nc.is_closed
        await asyncio.sleep(0)  # what was cancelled last has run its end
        assert {task for task in asyncio.all_tasks() - before if not task.done()} == set()


async def test_every_event_reaches_the_stream_once_in_order_as_a_nest_event(
    pool: Pool, nats_url: str, jetstream_stream: str
) -> None:
    ctx = Context(pool=pool, sql=Queries.load(), settings=relay_settings(nats_url, jetstream_stream))
    aggregates = [uuid.uuid4() for _ in range(3)]
    for aggregate in aggregates:
        await write_events(ctx, aggregate, 4)
    relay = OutboxRelay(ctx, [])
    await relay.start()
    try:
        await all_published(pool, 15)
        assert relay.stats.delivered[f"jetstream:{jetstream_stream}"] == 12
    finally:
        await relay.stop()
    rows = await outbox_rows(pool)
    assert all(r["published"] for r in rows)
    messages = await read_stream(nats_url, jetstream_stream)
    assert_once_each_in_aggregate_order(messages, rows)
    payload_of = {str(r["id"]): r["payload"] for r in rows}
    for message in messages:
        assert message.subject == "reservation.cancelled"
        assert message.body == {"pattern": "reservation.cancelled", "data": payload_of[message.msg_id or ""]}
    nc = await nats.connect(nats_url)
    try:
        config = (await nc.jetstream().stream_info(jetstream_stream)).config
    finally:
        await nc.close()
    assert (config.storage, config.duplicate_window, config.subjects) == ("file", 180.0, stream_subjects())


async def test_a_duplicate_ack_counts_as_delivered(pool: Pool, nats_url: str, jetstream_stream: str) -> None:
    ctx = Context(pool=pool, sql=Queries.load(), settings=relay_settings(nats_url, jetstream_stream))
    first = OutboxRelay(ctx, [])
    await first.start()  # creates the stream
    assert first.jetstream is not None
    await wait_for(lambda: first.jetstream is not None and first.jetstream.ready, 10)
    await first.stop()
    aggregate = uuid.uuid4()
    ids = await write_events(ctx, aggregate, 2)
    [row] = [r for r in await outbox_rows(pool) if str(r["id"]) == ids[0]]
    # what a relay that crashed after the PubAck and before its commit left behind
    nc = await nats.connect(nats_url)
    try:
        ack = await nc.jetstream().publish(
            row["event_type"], event_body(row["event_type"], row["payload"]), headers={"Nats-Msg-Id": ids[0]}
        )
        assert not ack.duplicate
    finally:
        await nc.close()
    relay = OutboxRelay(ctx, [])
    await relay.start()
    try:
        await all_published(pool, 15)
        assert relay.jetstream is not None and relay.jetstream.duplicates == 1
    finally:
        await relay.stop()
    assert_once_each_in_aggregate_order(await read_stream(nats_url, jetstream_stream), await outbox_rows(pool))


async def test_nats_down_spends_no_attempt_and_everything_goes_once_it_is_up(
    pool: Pool, nats_server_factory: Callable[[], NatsServer]
) -> None:
    server = nats_server_factory()
    server.stop()
    ctx = Context(pool=pool, sql=Queries.load(), settings=relay_settings(server.url, "BOOKING_EVENTS"))
    relay = OutboxRelay(ctx, [])
    await relay.start()
    try:
        await write_events(ctx, uuid.uuid4(), 3)
        await asyncio.sleep(1.0)
        assert relay.jetstream is not None and relay.jetstream.state == "connecting"
        assert await fetch(pool, "SELECT * FROM outbox_deliveries") == []  # no attempt spent, nothing dead
        server.start()
        await all_published(pool, 20)
    finally:
        await relay.stop()
    assert_once_each_in_aggregate_order(await read_stream(server.url, "BOOKING_EVENTS"), await outbox_rows(pool))


async def test_a_loop_waiting_out_a_failed_batch_publishes_as_soon_as_the_sink_is_ready_again(
    pool: Pool, nats_url: str, jetstream_stream: str
) -> None:
    """The stream is gone: the batch fails, and its loop waits for the head's retry (15-30 s here), heedless of
    commits; the sink making the stream again (as after a reconnect) ends that wait and the backoff at once."""
    settings = relay_settings(nats_url, jetstream_stream).model_copy(
        update={"outbox_poll_interval": 30.0, "outbox_backoff_base": 30.0, "outbox_backoff_max": 60.0}
    )
    ctx = Context(pool=pool, sql=Queries.load(), settings=settings)
    relay = OutboxRelay(ctx, [])
    await relay.start()
    try:
        await wait_for(lambda: relay.jetstream is not None and relay.jetstream.ready)
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().delete_stream(jetstream_stream)
        finally:
            await nc.close()
        await write_events(ctx, uuid.uuid4(), 2)
        await all_published(pool, 3.0)
    finally:
        await relay.stop()
    assert relay.stats.failed[f"jetstream:{jetstream_stream}"] == 1
    assert_once_each_in_aggregate_order(await read_stream(nats_url, jetstream_stream), await outbox_rows(pool))


def start_service(db_url: str, nats_url: str) -> subprocess.Popen[str]:
    return spawn_service(
        db_url,
        BOOKING_RPC_NATS_URL=nats_url,
        BOOKING_RPC_EVENTS_NATS="true",
        BOOKING_RPC_OUTBOX_BATCH_SIZE="40",
        BOOKING_RPC_OUTBOX_BACKOFF_BASE="0.05",
        BOOKING_RPC_OUTBOX_BACKOFF_MAX="0.5",
    )


async def stream_count(url: str, stream: str) -> int:
    nc = await nats.connect(url)
    try:
        return int((await nc.jetstream().stream_info(stream)).state.messages)
    except Exception:
        return 0
    finally:
        await nc.close()


async def test_relay_killed_mid_delivery_and_nats_restarted_lose_and_repeat_nothing(
    pool: Pool, db_url: str, nats_server_factory: Callable[[], NatsServer]
) -> None:
    server = nats_server_factory()
    ctx = Context(pool=pool, sql=Queries.load(), settings=Settings())
    aggregates = [uuid.uuid4() for _ in range(200)]
    rows = []
    for _ in range(20):  # 4,000 events, 20 per aggregate, interleaved
        for aggregate in aggregates:
            event_id = uuid.uuid4()
            payload = outbox_event_body(cancelled(aggregate), event_id, dt.datetime.now(dt.UTC))
            rows.append((event_id, "reservation", aggregate, "reservation.cancelled", payload))
    async with ctx.transaction() as conn:
        await conn.executemany(ctx.sql["outbox.enqueue"], rows)
    first = start_service(db_url, server.url)
    try:
        async with asyncio.timeout(60):
            while await stream_count(server.url, "BOOKING_EVENTS") < 400:
                await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)  # mid-delivery: some batches acked by the stream, never committed
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    partial = await stream_count(server.url, "BOOKING_EVENTS")
    assert 400 <= partial < 4000
    second = start_service(db_url, server.url)
    try:
        async with asyncio.timeout(60):
            while await stream_count(server.url, "BOOKING_EVENTS") < partial + 400:
                await asyncio.sleep(0.05)
        server.stop()  # NATS restarts under the second relay, mid-delivery (same store)
        await asyncio.sleep(1.0)
        server.start()
        await all_published(pool, 90)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(15)
    assert_once_each_in_aggregate_order(await read_stream(server.url, "BOOKING_EVENTS"), await outbox_rows(pool))
