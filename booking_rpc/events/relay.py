"""The outbox relay: delivers committed events to subscribed NestJS peers, at least once, in order.

One loop per subscriber, so a slow or dead subscriber delays only its own deliveries. Each batch runs in a
transaction that holds a per-subscriber advisory lock (several replicas share the subscribers, and two
never serve the same one at once), claims per aggregate only the oldest event that subscriber has not
received, sends them as NestJS events `{pattern: event_type, data: payload}` over a kept-open connection,
and records the deliveries before it commits. A crash mid-batch rolls the records back: those events are
sent again (consumers drop duplicates by `event_id`). A failed delivery backs off exponentially with
jitter and, after `outbox_max_attempts`, is parked as dead: it holds back its own aggregate only, and
`booking-rpc outbox retry` re-drives it.

Wake-ups: writers do not NOTIFY (every committing transaction that has NOTIFYed queues on one
database-wide lock; bench/flows.py measured it). After a commit, `Context.transaction` calls the
`OutboxSignal`, which wakes this process's loops at once and sends other processes (replicas) one coalesced
NOTIFY of its own, at most every NOTIFY_COALESCE seconds; a slow poll is the fallback for anything else.
A loop whose whole batch failed (its subscriber is down) ignores those until its failed head is due; what
says the subscriber is back ends that wait and makes its backing-off deliveries due at once: a subscription
written (booking.subscriptions.create re-registering it, or moving it: migration 0050's NOTIFY, which also
has every relay re-read the subscriptions now) and, for the JetStream sink, NATS reconnecting.

The LISTEN connection heals itself: it is watched (its termination, and a `SELECT 1` every
LISTEN_CHECK_INTERVAL for losses no socket reports, e.g. a partition) and opened again, with backoff, after
any loss (database restart, failover, an idle-session kill). Meanwhile the relay is poll-only: a warning
says so, `booking_rpc_outbox_relay_listening` is 0, and once LISTEN is back every loop is woken at once.

With BOOKING_RPC_EVENTS_NATS, a JetStream stream is one more subscriber of every event type: its loop
publishes instead of writing to a TCP peer (events/jetstream.py), and is otherwise the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import random
import secrets
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from opentelemetry.trace import SpanKind

from booking_rpc.client import Client, ClientError
from booking_rpc.context import Context
from booking_rpc.events.jetstream import JetStreamSink
from booking_rpc.events.subscribers import JETSTREAM, Subscriber, jetstream_subscriber, load_dynamic, parse_subscribers
from booking_rpc.tracing import Tracing, stored_metadata

log = structlog.get_logger(__name__)

NOTIFY_CHANNEL = "booking_outbox"
DELIVERY_TIMEOUT = 5.0
SCAN_WINDOW = 2  # batches' worth of backlog rows a claim looks at (each is looked up again by the next claim)
SUBSCRIPTIONS_REFRESH = 5.0
LISTEN_CHECK_INTERVAL = 5.0  # seconds between liveness checks of the LISTEN connection
LISTEN_CHECK_TIMEOUT = 2.0
LISTEN_RETRY_MIN, LISTEN_RETRY_MAX = 0.1, 2.0  # backoff while LISTEN cannot be re-established
NOTIFY_COALESCE = 0.05  # other replicas hear of this process's commits at most this late (plus their batch)
BUSY_RETRY = 0.05  # another replica holds a subscriber's lock: look again this soon, not at the next poll
BATCH_GATHER = 0.01  # woken by a commit, wait this long so one batch (one commit) carries the commits near it
NOTIFY_TIMEOUT = 2.0
FORGET_BATCHES = 10  # steps (a batch of delivery records examined each) of one sweep, at most
FORGET_START = ("", uuid.UUID(int=0))  # before every delivery record's key (no subscriber name is empty)
PUBLISH_START = 0  # before every outbox row's seq (a BIGSERIAL, from 1)
# NOTIFY payload of a subscription written (migration 0050): that subscriber is back, or has moved
SUBSCRIPTION_CHANGED = "subscription:"


class OutboxSignal:
    """What runs after each commit that may have written events (`Context.after_commit`).

    Wakes this process's relay loops at once (`local`), and NOTIFYs other processes, coalesced to one
    statement per NOTIFY_COALESCE seconds and outside every writer's transaction, so no commit waits on
    PostgreSQL's notification lock. The payload is this process's token: its own relay ignores it.
    """

    def __init__(self, ctx: Context, local: Callable[[], None] | None = None) -> None:
        self.ctx = ctx
        self.local = local
        self.token = secrets.token_hex(8)
        self._timer: asyncio.TimerHandle | None = None
        self._sending: asyncio.Task[None] | None = None
        self.notifies = 0

    def __call__(self) -> None:
        if self.local is not None:
            self.local()
        if self._timer is None:
            # in a context of its own: called inside a request, the NOTIFY would inherit its deadline (and be
            # refused once the request has answered), though it is owed to the commit, not to the request
            self._timer = asyncio.get_running_loop().call_later(
                NOTIFY_COALESCE, self._send, context=contextvars.Context()
            )

    def _send(self) -> None:
        self._timer = None
        if self._sending is not None and not self._sending.done():
            self._timer = asyncio.get_running_loop().call_later(NOTIFY_COALESCE, self._send)
            return
        self._sending = asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        try:
            async with asyncio.timeout(NOTIFY_TIMEOUT), self.ctx.connection() as conn:
                await conn.fetchval(self.ctx.sql["outbox.notify"], self.token)
            self.notifies += 1
        except Exception as exc:  # the other replicas' poll will find the events
            log.debug("outbox NOTIFY for other replicas failed", error=repr(exc))

    async def stop(self) -> None:
        """Stop, first sending the NOTIFY still owed (bounded by NOTIFY_TIMEOUT): a writer that stops right
        after its last commits (a replica shutting down) has the other processes' relays hear of them now, not
        at their next poll."""
        owed = self._timer is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sending is not None and not self._sending.done():
            owed = True  # it may have started before the last commits: the one sent below covers them all
            self._sending.cancel()
        if owed:
            await self._notify()


@dataclass(slots=True)
class RelayStats:
    delivered: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    wakeups: int = 0
    listening: bool = False  # False: poll-only (no LISTEN connection)
    listen_losses: int = 0


class _SubscriberLoop:
    def __init__(self, relay: OutboxRelay, subscriber: Subscriber) -> None:
        self.relay = relay
        self.subscriber = subscriber
        self.jetstream = relay.jetstream if subscriber.codec == JETSTREAM else None
        # no reconnect backoff of the client's own: the loop spaces its attempts (backoff, the retry wait), and
        # the client's, up to 5 s before a connect, took an attempt's whole DELIVERY_TIMEOUT after 7 failed
        # connects: a subscriber down that long was never reached again, and its heads went dead
        self.client = (
            None
            if self.jetstream is not None
            else Client(subscriber.host, subscriber.port, codec=subscriber.codec, connect_timeout=2.0)
        )
        self.wake = asyncio.Event()
        # the subscriber is back (re-registered, moved; NATS reconnected): ends a retry wait, and its failed
        # deliveries are due at once instead of after their backoff
        self.back = asyncio.Event()
        self.busy = False  # the last batch found another replica serving this subscriber
        self.more = False  # the last batch's window held more undelivered rows than it claimed
        self.retry_at: float | None = None  # loop time before which an unreachable subscriber is not tried
        # every unmarked row up to this seq that the subscriber wants, it has: its claims scan after it. From
        # 0, each claim read every row it has that another subscriber still awaits (unpublished), so a
        # subscriber down cost every healthy one's claim its whole backlog. Each replica keeps its own: it
        # rests on the delivery records alone, and no replica undoes a delivered one; marked rows (held_back)
        # are found by aggregate, never by this scan; a new subscriber, or new patterns, is a new loop, from 0
        # (so is a restarted relay: its first batches read the backlog once).
        self.delivered_to = PUBLISH_START
        self.settled = PUBLISH_START  # no open transaction can still commit a row up to this seq
        self._seq_read: int | None = None  # the sequence's last seq, read by the last batch_start
        self._fence: tuple[int, int] | None = None  # (a seq read, the xmax of a snapshot taken after the read)
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        settings = self.relay.ctx.settings
        while True:
            # cleared before the batch: a commit while it runs wakes the next one, instead of being missed
            self.wake.clear()
            self.busy = False
            try:
                if self.back.is_set():
                    self.back.clear()
                    await self.retry_now()
                # again at once only while a batch may have left some behind (a full batch, later events of
                # its aggregates): an empty claim after every batch cost as much as the batch's own claim
                while await self.deliver_batch() > 0 and self.more:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay batch failed", subscriber=self.subscriber.name)
            if self.retry_at is not None:
                # nothing of the batch went through (the subscriber is down): try again when its head is due,
                # not at every commit or NOTIFY meanwhile, each of which would claim a batch only to fail it;
                # only word that the subscriber is back (resume) ends the wait sooner
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.back.wait(), max(0.0, self.retry_at - asyncio.get_running_loop().time())
                    )
                self.retry_at = None
                continue
            try:
                await asyncio.wait_for(self.wake.wait(), BUSY_RETRY if self.busy else settings.outbox_poll_interval)
            except TimeoutError:
                continue
            await asyncio.sleep(BATCH_GATHER)

    def resume(self) -> None:
        """The subscriber is back: deliver to it now, its failed deliveries' backoff and a retry wait ended."""
        self.back.set()
        self.wake.set()

    async def retry_now(self) -> None:
        """Make the subscriber's failed deliveries that are backing off due now (dead ones stay dead)."""
        async with self.relay.ctx.connection() as conn:
            await conn.execute(self.relay.ctx.sql["outbox.retry_now"], self.subscriber.name)

    def settle(self, last_seq: int, xmin: int, xmax: int) -> None:
        """Learn from a batch_start (the sequence's last seq, its snapshot's xmin and xmax) which seqs no
        open transaction can still commit (`settled`). A row takes its seq after its transaction's xid
        (migration 0052), so every holder of a seq up to one read had an xid below the xmax of any snapshot
        taken after the read; once a later snapshot's xmin is past that xmax, each of them has ended. Until
        then the claim's mark stays below rows committed late (a lower seq than rows already delivered)."""
        if self._fence is not None and xmin >= self._fence[1]:
            self.settled = max(self.settled, self._fence[0])
            self._fence = None
        if self._fence is None and self._seq_read is not None:
            self._fence = (self._seq_read, xmax)
        self._seq_read = last_seq

    def backoff(self, attempts: int) -> float:
        settings = self.relay.ctx.settings
        delay: float = min(settings.outbox_backoff_max, settings.outbox_backoff_base * 2.0 ** max(0, attempts))
        return delay * random.uniform(0.5, 1.0)  # jitter: replicas and subscribers don't retry in step

    async def deliver_batch(self) -> int:
        """Send one batch; the number of events delivered (0 when nothing was due or the lock is taken)."""
        ctx = self.relay.ctx
        sub = self.subscriber
        if self.jetstream is not None and not self.jetstream.ready:
            return 0  # NATS down: claim nothing and spend no attempt; its reconnect wakes this loop
        async with ctx.transaction() as conn:
            start = await conn.fetchrow(ctx.sql["outbox.batch_start"], sub.name)
            assert start is not None
            self.settle(start["last_seq"], start["xmin"], start["xmax"])
            if not start["locked"]:
                self.busy = True
                return 0
            batch = ctx.settings.outbox_batch_size
            claim, patterns = ctx.sql["outbox.claim_for_subscriber"], sub.like_patterns()
            # the window skips the aggregates held back (dead or backing off), so it is never empty while
            # anything is due, and a batch fills from beyond the held-back rows
            scanned_after = self.delivered_to
            rows = await conn.fetch(claim, sub.name, patterns, batch, batch * SCAN_WINDOW, scanned_after)
            self.more = bool(rows) and rows[0]["backlog"] > len(rows)
            if not rows:
                return 0
            lacking = rows[0]["lacking"]
            self.delivered_to = max(scanned_after, self.settled if lacking is None else min(self.settled, lacking - 1))
            self.relay.stats.batches += 1
            tracing: Tracing | None = ctx.extras.get("tracing")
            with contextlib.ExitStack() as traced:
                if tracing is not None:
                    # a trace of its own, linked to the traces of the requests that wrote the events
                    traced.enter_context(
                        tracing.root_span(
                            "outbox.deliver",
                            SpanKind.PRODUCER,
                            {"messaging.destination.name": sub.name, "messaging.batch.message_count": len(rows)},
                            tracing.links_to(row["trace_context"] for row in rows),
                        )
                    )
                return await self._send_batch(conn, rows, scanned_after)

    async def _send_batch(self, conn: asyncpg.Connection, rows: list[asyncpg.Record], scanned_after: int) -> int:
        """Send claimed rows and record the outcome in the batch's transaction; the number delivered."""
        ctx = self.relay.ctx
        sub = self.subscriber
        sent, failures = await self.send(rows)
        delivered = [row["id"] for row in sent]
        delays = []
        if delivered:
            names, patterns = self.relay.subscription_pairs()
            last = max(row["seq"] for row in sent)
            await conn.execute(
                ctx.sql["outbox.mark_delivered"], sub.name, delivered, names, patterns, last, scanned_after
            )
            self.relay.stats.delivered[sub.name] += len(delivered)
        for row, error in failures:
            delays.append(self.backoff(row["attempts"]))
            outcome = await conn.fetchrow(
                ctx.sql["outbox.mark_failed"],
                sub.name,
                row["id"],
                error,
                delays[-1],
                ctx.settings.outbox_max_attempts,
            )
            assert outcome is not None
            attempts, dead = outcome["attempts"], outcome["dead"]
            await conn.execute(ctx.sql["outbox.note_failure"], row["id"], error, dead)
            self.relay.stats.failed[sub.name] += 1
            if dead:
                self.relay.stats.dead[sub.name] += 1
                log.error("event parked as dead", subscriber=sub.name, event_id=str(row["id"]), error=error)
            else:
                log.warning("delivery failed, will retry", subscriber=sub.name, attempts=attempts, error=error)
        if delays and not delivered:
            # at most a poll interval: a head parked as dead is not due again, yet the others are
            wait = min(min(delays), ctx.settings.outbox_poll_interval)
            self.retry_at = asyncio.get_running_loop().time() + wait
        return len(delivered)

    async def send(self, rows: list[asyncpg.Record]) -> tuple[list[asyncpg.Record], list[tuple[asyncpg.Record, str]]]:
        """Deliver a batch: (rows delivered, (row, error) of those that failed)."""
        if self.jetstream is not None:
            return await self.jetstream.publish(rows)
        assert self.client is not None
        try:
            # the whole batch in one write, then one wait for the peer to take it; each event carries
            # the trace of the transaction that wrote it (NestJS: TcpContext.getMetadata())
            events = [(row["event_type"], row["payload"], stored_metadata(row["trace_context"])) for row in rows]
            await asyncio.wait_for(self.client.emit_many(events), DELIVERY_TIMEOUT)
        except (ClientError, OSError, TimeoutError) as exc:
            return [], [(rows[0], f"{type(exc).__name__}: {exc}")]
        return rows, []

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.client is not None:
            await self.client.close()


class OutboxRelay:
    def __init__(self, ctx: Context, static: list[Subscriber] | None = None) -> None:
        # the relay's own commits (delivery bookkeeping) wake nobody: a Context without the hook; and its
        # batches wait for a pool connection ahead of requests, or under load the lag follows the queue
        self.ctx = dataclasses.replace(ctx, after_commit=None, pool_first=True)
        self._service_ctx = ctx
        self.signal = OutboxSignal(self.ctx, self.wake_all)
        settings = ctx.settings
        self.static = static if static is not None else parse_subscribers(settings.subscribers)
        self.jetstream: JetStreamSink | None = None
        if settings.events_nats:
            self.jetstream = JetStreamSink(
                settings.nats_servers(),
                settings.nats_stream,
                duplicate_window=settings.nats_duplicate_window,
                on_ready=self._jetstream_back,
                credentials=settings.nats_credentials(),
            )
            self.static = [*self.static, jetstream_subscriber(settings.nats_stream)]
        self.loops: dict[Subscriber, _SubscriberLoop] = {}
        self.stats = RelayStats()
        self._listener: asyncpg.Connection | None = None
        self._listener_lost = asyncio.Event()
        self._manager: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._refresh = asyncio.Event()  # a subscription was written: re-read them now, not at the next refresh
        self._subscribers_back: set[str] = set()  # names of the subscriptions written since the last refresh
        self._forget_after = FORGET_START  # where this relay's pass over the delivery records goes on
        self._publish_after = PUBLISH_START  # where its pass over the unpublished rows goes on

    async def subscribers(self) -> list[Subscriber]:
        async with self.ctx.connection() as conn:
            dynamic = await load_dynamic(conn, self.ctx.sql)
        static_names = {s.name for s in self.static}
        return self.static + [s for s in dynamic if s.name not in static_names]

    def subscription_pairs(self) -> tuple[list[str], list[str]]:
        """(subscriber name, LIKE pattern) pairs of every current subscriber, as two arrays for SQL."""
        subs = list(self.loops)
        return [s.name for s in subs for _ in s.like_patterns()], [p for s in subs for p in s.like_patterns()]

    async def publish_done(self) -> int:
        """Sweep: mark published the rows all their subscribers have (and those nobody subscribes to); the number
        published. Then delete the delivery records nothing reads (of removed subscribers, of published rows)."""
        if not self.loops:
            await self.sync_loops(start_tasks=False)
        total = await self.publish_complete()
        await self.forget_stale_deliveries()
        return total

    async def publish_complete(self) -> int:
        """Mark published the unpublished rows every matching subscriber has; the number published. As
        forget_stale_deliveries, the sweeps make passes over the unpublished rows in seq order, each going on
        from where the last stopped, a batch per transaction, and a further batch only while at least half the
        last one was published: a sweep examines at most twice the rows it publishes plus one batch, where a search of
        the whole backlog read every row a subscriber still awaits (and the others' records of them) at every
        sweep. A row committed late behind the pass (a lower seq) is found by the next pass."""
        names, patterns = self.subscription_pairs()
        batch = self.ctx.settings.outbox_batch_size
        total = 0
        while True:
            async with self.ctx.transaction() as conn:
                await conn.execute(self.ctx.sql["outbox.sweep_start"])
                step = await conn.fetchrow(
                    self.ctx.sql["outbox.publish_done"], names, patterns, self._publish_after, batch
                )
            assert step is not None
            total += int(step["published"])
            if step["examined"] < batch:
                self._publish_after = PUBLISH_START  # the end of the backlog: the next sweep begins a new pass
                return total
            self._publish_after = step["last_seq"]
            if step["published"] * 2 < step["examined"]:
                return total

    async def forget_stale_deliveries(self) -> int:
        """Delete the delivery records nothing reads (of removed subscribers, of published rows); the number
        deleted. The sweeps make passes over the table in key order, each sweep going on from where the last
        stopped, a batch of records per transaction, and a further batch (FORGET_BATCHES at most) only while
        at least half the last one was stale: a sweep reads at most twice what it deletes plus one batch,
        whatever the live delivery state (a delivered record per row and subscriber while another subscriber
        is down), where a search of the whole table for stale records read all of it at every sweep."""
        names = [s.name for s in self.loops]
        batch = self.ctx.settings.outbox_batch_size
        total = 0
        for _ in range(FORGET_BATCHES):
            async with self.ctx.transaction() as conn:
                step = await conn.fetchrow(
                    self.ctx.sql["outbox.forget_stale_deliveries"], names, *self._forget_after, batch
                )
            assert step is not None
            total += step["forgotten"]
            if step["examined"] < batch:
                self._forget_after = FORGET_START  # the end of the table: the next sweep begins a new pass
                break
            self._forget_after = (step["last_subscriber"], step["last_event_id"])
            if step["forgotten"] * 2 < step["examined"]:
                break
        return total

    async def sync_loops(self, *, start_tasks: bool = True) -> None:
        wanted = set(await self.subscribers())
        for sub in list(self.loops):
            if sub not in wanted:
                await self.loops.pop(sub).close()
        for sub in wanted - set(self.loops):
            loop = _SubscriberLoop(self, sub)
            if start_tasks:
                loop.task = asyncio.create_task(loop.run(), name=f"outbox-relay:{sub.name}")
            self.loops[sub] = loop

    def wake_all(self) -> None:
        self.stats.wakeups += 1
        for loop in self.loops.values():
            loop.wake.set()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        if isinstance(payload, str) and payload.startswith(SUBSCRIPTION_CHANGED):
            self._subscribers_back.add(payload.removeprefix(SUBSCRIPTION_CHANGED))
            self._refresh.set()
        elif payload != self.signal.token:  # this process's own commits woke it already
            self.wake_all()

    def _jetstream_back(self) -> None:
        """The JetStream sink can publish again (connected, reconnected, its stream made again)."""
        for loop in self.loops.values():
            if loop.jetstream is not None:
                loop.resume()

    async def _manage(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh.wait(), SUBSCRIPTIONS_REFRESH)
            self._refresh.clear()
            back, self._subscribers_back = self._subscribers_back, set()
            try:
                await self.sync_loops()
                # a subscriber that re-registers is back (or moved: a loop of its own, just made): it gets its
                # events now, not after its failed head's backoff
                for loop in self.loops.values():
                    if loop.subscriber.name in back:
                        loop.resume()
                await self.publish_done()
            except asyncio.CancelledError:
                raise
            except Exception:
                self._subscribers_back |= back  # kept for the next refresh: they are still back
                log.exception("outbox relay could not refresh its subscribers")

    async def _listen(self) -> None:
        """Take a connection of its own (for as long as it lives) and LISTEN on it."""
        conn = await self.ctx.pool.acquire()
        try:
            self._listener_lost.clear()
            conn.add_termination_listener(self._on_listener_terminated)
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except BaseException:
            self.ctx.pool.release_now(conn, unusable=True)
            raise
        self._listener = conn
        self.stats.listening = True

    def _on_listener_terminated(self, _conn: Any) -> None:
        self._listener_lost.set()

    def _drop_listener(self) -> None:
        listener, self._listener = self._listener, None
        self.stats.listening = False
        if listener is not None:
            self.ctx.pool.release_now(listener, unusable=True)

    async def _listener_alive(self) -> bool:
        """Wait LISTEN_CHECK_INTERVAL (or until the connection reports its end); False once it is gone."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listener_lost.wait(), LISTEN_CHECK_INTERVAL)
        listener = self._listener
        if self._listener_lost.is_set() or listener is None or listener.is_closed():
            return False
        try:
            await listener.fetchval(self.ctx.sql["outbox.listener_alive"], timeout=LISTEN_CHECK_TIMEOUT)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
            return False
        return True

    async def _keep_listening(self) -> None:
        """Watch the LISTEN connection; after any loss, poll-only until it is opened again (with backoff)."""
        while True:
            while await self._listener_alive():
                pass
            self._drop_listener()
            self.stats.listen_losses += 1
            log.warning("outbox relay lost its LISTEN connection: poll-only until it is back")
            self.wake_all()  # a last sweep: what committed just before the loss
            delay = LISTEN_RETRY_MIN
            while self._listener is None:
                await asyncio.sleep(delay)
                try:
                    await self._listen()
                except Exception as exc:
                    delay = min(LISTEN_RETRY_MAX, delay * 2)
                    log.debug("outbox relay cannot LISTEN yet", error=repr(exc), retry_in_s=delay)
            log.info("outbox relay listening again", losses=self.stats.listen_losses)
            self.wake_all()  # what committed while we were not listening

    async def start(self) -> None:
        if self.jetstream is not None:
            self.jetstream.start()  # connects in the background: NATS down does not stop the relay
        await self.sync_loops()
        # LISTEN needs a connection of its own for as long as the relay runs.
        await self._listen()
        self._keeper = asyncio.create_task(self._keep_listening(), name="outbox-relay-listener")
        self._service_ctx.after_commit = self.signal
        self._manager = asyncio.create_task(self._manage(), name="outbox-relay-manager")
        log.info("outbox relay started", subscribers=[s.name for s in self.loops])

    async def stop(self) -> None:
        if self._service_ctx.after_commit is self.signal:
            self._service_ctx.after_commit = None
        await self.signal.stop()
        for task in (self._manager, self._keeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.stats.listening = False
        for loop in list(self.loops.values()):
            await loop.close()
        self.loops.clear()
        if self.jetstream is not None:
            await self.jetstream.close()
        if self._listener is not None:
            listener, self._listener = self._listener, None
            listener.remove_termination_listener(self._on_listener_terminated)
            try:
                await listener.remove_listener(NOTIFY_CHANNEL, self._on_notify)
            except BaseException as exc:
                # maybe still LISTENing or mid-statement (the pool does no session reset, and a cancelled
                # stop must not leak the pool slot): close it rather than hand it to a handler
                self.ctx.pool.release_now(listener, unusable=True)
                if not isinstance(exc, Exception):
                    raise
                log.warning("outbox relay could not UNLISTEN, its connection is closed", error=str(exc))
            else:
                await self.ctx.pool.release(listener)

    async def run_once(self) -> int:
        """Deliver everything due to every subscriber now (tests; the running relay does it on NOTIFY and poll)."""
        if not self.loops:
            await self.sync_loops(start_tasks=False)
        total = 0
        for loop in self.loops.values():
            while (n := await loop.deliver_batch()) > 0:
                total += n
        await self.publish_done()
        return total


async def retry_dead(ctx: Context) -> int:
    """Re-drive every dead delivery; the number of outbox rows put back in the queue."""
    async with ctx.transaction() as conn:
        status = await conn.execute(ctx.sql["outbox.retry_dead"])
    return int(status.split()[-1])
