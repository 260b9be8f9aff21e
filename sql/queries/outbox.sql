-- name: outbox.enqueue
-- One event row, written in the caller's transaction (Context.transaction wakes the relay after commit).
INSERT INTO booking_events_outbox (id, aggregate_type, aggregate_id, event_type, payload)
VALUES ($1, $2, $3, $4, $5);

-- name: outbox.claim_for_subscriber
-- The next events a subscriber should get: per aggregate only the oldest it has not received (a failed
-- or dead one holds back the later events of its own aggregate only), due for (re)delivery, in seq order;
-- each row also says how many undelivered rows the claim looked at (`backlog`).
-- $1 subscriber, $2 LIKE patterns of its event types, $3 batch size, $4 scan window, $5 the subscriber's
-- mark: every unmarked row up to that seq it wants, it has (relay.py, _SubscriberLoop.delivered_to). The window
-- is the oldest $4 undelivered rows after $5 (an index scan on seq) of the aggregates not held back; from 0,
-- it also read every row the subscriber has that another one still awaits (unpublished), at every claim: with
-- 6,000 awaited by a subscriber down, each claim of a healthy one read 20,001 rows and more after each batch.
-- An aggregate is held back while its head's delivery (its oldest undelivered row's record, the only
-- undelivered rows with one) is dead or backing off, and all its rows are skipped, so the window's heads are all due and a batch fills even when the
-- oldest rows are mostly held back. Heads found in the window are true heads: an aggregate's oldest undelivered
-- event is always older than its later ones, and both are skipped or both are not.
-- Rows queued behind a held-back head are marked (held_back, migration 0051), once, and the window scans only
-- unmarked rows: skipped one by one, a dead head with 5,000 events behind it cost every claim 5,000 row reads.
-- The marked rows of aggregates this subscriber does not hold back (another subscriber does, or no longer
-- anyone: a backoff over, a dead one re-driven) are found by aggregate, each aggregate's oldest it has not
-- received taking part in the heads with the window's rows.
WITH RECURSIVE held AS (
    -- the subscriber's failed deliveries not yet due (idx_outbox_deliveries_pending: its undelivered records
    -- only, never the delivered history), an outbox primary-key lookup each
    SELECT coalesce(array_agg(DISTINCT o.aggregate_id), '{}') AS aggregates
    FROM outbox_deliveries d
    JOIN booking_events_outbox o ON o.id = d.event_id
    WHERE d.subscriber = $1
      AND d.delivered_at IS NULL
      AND (d.dead OR d.next_attempt_at > now())
      AND NOT o.published
      AND o.event_type LIKE ANY ($2::text[])
), backlog AS (
    -- an index scan on seq (idx_booking_events_outbox_free) with one primary-key lookup of the row's delivery
    -- per row (LATERAL ... LIMIT 1 is never made a join), stopped after $4 rows: cost follows the window (and
    -- the held-back rows not marked yet, read once before the claim marks them), not the delivery history. As a
    -- NOT EXISTS and a LEFT JOIN, a fresh table (no statistics: 0.5% of the deliveries taken for this
    -- subscriber's) was planned as a scan of all this subscriber's deliveries for every row of the window, each
    -- batch slower than the last; and `delivered IS NOT TRUE` is estimated as half the rows (IS NULL as 0.5%,
    -- which planned a scan and sort of the whole backlog instead of the window).
    SELECT o.id, o.aggregate_id, o.seq, d.attempts
    FROM booking_events_outbox o
    LEFT JOIN LATERAL (
        SELECT d.attempts, d.delivered_at IS NOT NULL AS delivered
        FROM outbox_deliveries d
        WHERE d.subscriber = $1 AND d.event_id = o.id
        LIMIT 1
    ) d ON TRUE
    WHERE NOT o.published
      AND NOT o.held_back
      AND o.seq > $5
      AND o.event_type LIKE ANY ($2::text[])
      AND o.aggregate_id <> ALL ((SELECT aggregates FROM held)::uuid[])
      AND d.delivered IS NOT TRUE
    ORDER BY o.seq
    LIMIT $4
), held_low AS (
    -- the oldest unmarked row of each aggregate held back (the marking below may skip some): the subscriber's
    -- mark stays below them (idx_booking_events_outbox_free_aggregate, one descent each)
    SELECT min(f.seq) AS seq
    FROM unnest((SELECT aggregates FROM held)::uuid[]) AS h(aggregate_id)
    CROSS JOIN LATERAL (
        SELECT q.seq FROM booking_events_outbox q
        WHERE q.aggregate_id = h.aggregate_id AND NOT q.published AND NOT q.held_back AND q.seq > $5
        ORDER BY q.seq
        LIMIT 1
    ) f
), marked (aggregate_id) AS (
    -- the aggregates with marked rows, one index descent each (idx_booking_events_outbox_held_back)
    (SELECT o.aggregate_id FROM booking_events_outbox o
     WHERE NOT o.published AND o.held_back ORDER BY o.aggregate_id LIMIT 1)
    UNION ALL
    SELECT (SELECT o.aggregate_id FROM booking_events_outbox o
            WHERE NOT o.published AND o.held_back AND o.aggregate_id > m.aggregate_id
            ORDER BY o.aggregate_id LIMIT 1)
    FROM marked m
    WHERE m.aggregate_id IS NOT NULL
), released AS (
    -- of each marked aggregate not held back for this subscriber, the oldest marked row it has not received
    SELECT r.id, r.aggregate_id, r.seq, r.attempts
    FROM marked m
    CROSS JOIN LATERAL (
        SELECT o.id, o.aggregate_id, o.seq, d.attempts
        FROM booking_events_outbox o
        LEFT JOIN LATERAL (
            SELECT d.attempts, d.delivered_at IS NOT NULL AS delivered
            FROM outbox_deliveries d
            WHERE d.subscriber = $1 AND d.event_id = o.id
            LIMIT 1
        ) d ON TRUE
        WHERE o.aggregate_id = m.aggregate_id
          AND NOT o.published
          AND o.held_back
          AND o.event_type LIKE ANY ($2::text[])
          AND d.delivered IS NOT TRUE
        ORDER BY o.seq
        LIMIT 1
    ) r
    WHERE m.aggregate_id IS NOT NULL
      AND m.aggregate_id <> ALL ((SELECT aggregates FROM held)::uuid[])
), marking AS (
    -- the rows of the aggregates held back that are not marked yet (idx_booking_events_outbox_free_aggregate:
    -- a lookup per held-back aggregate, then those rows only); SKIP LOCKED: a hint, worth no wait
    UPDATE booking_events_outbox o
    SET held_back = TRUE
    WHERE o.id IN (
        SELECT q.id
        FROM booking_events_outbox q
        WHERE q.aggregate_id = ANY ((SELECT aggregates FROM held)::uuid[])
          AND NOT q.published
          AND NOT q.held_back
        FOR NO KEY UPDATE SKIP LOCKED
    )
), candidates AS (
    SELECT id, aggregate_id, seq, attempts FROM backlog
    UNION ALL
    SELECT id, aggregate_id, seq, attempts FROM released
), due AS (
    -- limited before the rows are read back: joined first, every head of the window was looked up
    SELECT id, seq, attempts
    FROM (
        SELECT DISTINCT ON (aggregate_id) id, seq, attempts
        FROM candidates
        ORDER BY aggregate_id, seq
    ) heads
    ORDER BY seq
    LIMIT $3
)
SELECT o.id, o.aggregate_id, o.event_type, o.payload, o.trace_context, o.seq, coalesce(h.attempts, 0) AS attempts,
       (SELECT count(*) FROM candidates) AS backlog,  -- more than the rows claimed: another batch may find some
       -- the lowest seq after $5 of an unmarked row it lacks (NULL: none); the loop's mark stays below it
       least((SELECT min(seq) FROM backlog), (SELECT seq FROM held_low)) AS lacking
FROM due h
JOIN booking_events_outbox o ON o.id = h.id
ORDER BY h.seq;

-- name: outbox.mark_delivered
-- Record a batch's deliveries, in one statement (one round trip per batch). $1 subscriber, $2 event ids
-- delivered to it, $3 every subscriber's names and $4 their LIKE patterns (pairs), $5 the highest seq delivered,
-- $6 the seq after which the batch's claim scanned (the subscriber's mark).
-- A row every matching subscriber now has (`complete`; the NOT EXISTS cannot see this statement's own
-- inserts, so the subscriber itself counts as having it) is marked published and its delivery records go:
-- the claim reads only unpublished rows, so they would only make its lookups (and the table) grow with the
-- history. Only a row another subscriber still awaits gets this subscriber's record. And the rows after $6 up
-- to $5 that no subscriber wants are published now (publish_done would, seconds later): left unpublished, every
-- claim until then scanned them again. From seq 0, that range held every row another subscriber (down) still
-- awaits, read at every batch (6,000 and more); those before $6 no claim scans, and the sweep publishes them.
-- The rows are found by $2, one primary-key lookup each (joined to an insert's
-- RETURNING, the update was planned as a hash of the whole unpublished backlog).
WITH delivered AS (
    SELECT o.id, NOT EXISTS (
        SELECT 1
        FROM unnest($3::text[], $4::text[]) AS s(name, pattern)
        WHERE s.name <> $1
          AND o.event_type LIKE s.pattern
          AND NOT EXISTS (
            SELECT 1 FROM outbox_deliveries d
            WHERE d.event_id = o.id AND d.subscriber = s.name AND d.delivered_at IS NOT NULL
          )
    ) AS complete
    FROM booking_events_outbox o
    WHERE o.id = ANY ($2::uuid[])
), recorded AS (
    INSERT INTO outbox_deliveries (event_id, subscriber, attempts, delivered_at)
    SELECT id, $1, 1, now() FROM delivered WHERE NOT complete
    ON CONFLICT (subscriber, event_id) DO UPDATE
    SET delivered_at = now(), attempts = outbox_deliveries.attempts + 1, last_error = NULL
), forgotten AS (
    DELETE FROM outbox_deliveries d
    USING delivered x
    WHERE x.complete AND d.event_id = x.id
), unwanted AS (
    SELECT o.id
    FROM booking_events_outbox o
    WHERE NOT o.published
      AND o.seq > $6
      AND o.seq <= $5
      AND NOT EXISTS (SELECT 1 FROM unnest($4::text[]) AS s(pattern) WHERE o.event_type LIKE s.pattern)
    FOR UPDATE SKIP LOCKED
)
-- published_at: when this statement ran, under the subscriber's batch lock, so a later batch's rows are
-- stamped later (now(), the transaction's start, can precede the commit of the batch before it)
UPDATE booking_events_outbox o
SET published = TRUE, published_at = statement_timestamp()
WHERE o.id IN (SELECT id FROM delivered WHERE complete UNION ALL SELECT id FROM unwanted)
  AND NOT o.published;

-- name: outbox.mark_failed
-- One failed attempt: back off, or give up (dead) after the last allowed attempt.
-- $1 subscriber, $2 event id, $3 error text, $4 delay seconds, $5 max attempts.
INSERT INTO outbox_deliveries (event_id, subscriber, attempts, next_attempt_at, last_error, dead)
VALUES ($2, $1, 1, now() + make_interval(secs => $4), $3, 1 >= $5)
ON CONFLICT (subscriber, event_id) DO UPDATE
SET attempts = outbox_deliveries.attempts + 1,
    next_attempt_at = now() + make_interval(secs => $4),
    last_error = $3,
    dead = outbox_deliveries.attempts + 1 >= $5
RETURNING attempts, dead;

-- name: outbox.retry_now
-- The subscriber is back (re-registered, moved, NATS reconnected): its failed deliveries backing off are due
-- now; dead ones stay dead (`booking-rpc outbox retry`). $1 subscriber. Its undelivered records only
-- (idx_outbox_deliveries_pending).
UPDATE outbox_deliveries
SET next_attempt_at = now()
WHERE subscriber = $1 AND delivered_at IS NULL AND NOT dead AND next_attempt_at > now();

-- name: outbox.note_failure
-- Keep the row-level counters of the seed's outbox meaningful for operators.
UPDATE booking_events_outbox
SET attempts = attempts + 1, last_error = $2, dead = dead OR $3
WHERE id = $1;

-- name: outbox.publish_done
-- Sweep: mark published the rows every matching subscriber has received (those mark_delivered could not: two
-- subscribers' batches of a row committed at once, each seeing no record of the other's; a subscriber removed
-- or its patterns narrowed); rows no subscriber wants are published too. A dead delivery keeps its row
-- unpublished, so it keeps holding back its aggregate; a published row's delivery records go (as in
-- mark_delivered). $1 subscriber names, $2 their LIKE patterns (pairs).
-- One step of a pass over the unpublished rows in seq order: the $4 rows after seq $3 (an index range scan of
-- idx_booking_events_outbox_backlog, a primary-key lookup of a record per row and matching subscriber), the
-- complete among them published; returns how many were examined and published, and the last seq examined,
-- where the next step starts. Looking for complete rows anywhere (LIMIT over a filter) read the whole backlog
-- whenever fewer were complete than the limit, which is every sweep while a subscriber is down: every row it
-- awaits and the others' records of them (a sweep read 12,999 rows, its forget step's 1,000 among them, with
-- 6,000 awaited), in every replica, every few seconds. SKIP LOCKED on the complete ones only: replicas sweeping at once publish different rows, and
-- none waits on a batch marking its rows.
WITH examined AS (
    SELECT o.id, o.seq, NOT EXISTS (
        SELECT 1
        FROM unnest($1::text[], $2::text[]) AS s(name, pattern)
        -- LATERAL ... LIMIT 1: as a NOT EXISTS it was planned as a hash of every delivered record
        LEFT JOIN LATERAL (
            SELECT 1 AS received
            FROM outbox_deliveries d
            WHERE d.subscriber = s.name AND d.event_id = o.id AND d.delivered_at IS NOT NULL
            LIMIT 1
        ) r ON TRUE
        WHERE o.event_type LIKE s.pattern AND r.received IS NULL
    ) AS complete
    FROM booking_events_outbox o
    WHERE NOT o.published AND o.seq > $3
    ORDER BY o.seq
    LIMIT $4
), candidates AS (
    -- a primary-key lookup each; a row published since (by a batch) is skipped
    SELECT o.id
    FROM booking_events_outbox o
    WHERE o.id = ANY (ARRAY(SELECT id FROM examined WHERE complete))
      AND NOT o.published
    FOR UPDATE SKIP LOCKED
), forgotten AS (
    DELETE FROM outbox_deliveries d WHERE d.event_id = ANY (ARRAY(SELECT id FROM candidates))
), marked AS (
    UPDATE booking_events_outbox o
    SET published = TRUE, published_at = statement_timestamp()
    WHERE o.id = ANY (ARRAY(SELECT id FROM candidates))
    RETURNING 1
)
SELECT (SELECT count(*) FROM examined) AS examined,
       (SELECT count(*) FROM marked) AS published,
       (SELECT max(seq) FROM examined) AS last_seq;

-- name: outbox.forget_stale_deliveries
-- Sweep: delete delivery records nothing reads any more: those of subscribers no longer configured ($1, the
-- current subscribers' names) and those whose outbox row is published or gone (published rows' records are
-- deleted as they are published since 590436b; older ones, and a row published while another subscriber's
-- record of it was being written, stay otherwise). A record of a current subscriber for an unpublished row is
-- its delivery state (failed, dead, or delivered while others await the row), never deleted.
-- One step of a pass over the table: the $4 records after ($2, $3) in primary-key order (an index range scan
-- and an outbox primary-key lookup each), the stale among them deleted; returns how many were examined and
-- deleted, and the last key examined, where the next step starts. Looking for stale records anywhere (LIMIT over
-- a filter) read every record there is whenever fewer were stale than the limit, which is every sweep of a
-- clean table: all the live state (a delivered record per row and subscriber while another subscriber is
-- down), in every replica, every few seconds. SKIP LOCKED on the stale ones only: replicas sweeping at once
-- delete different records, and none waits on a batch or holds a live record a delivery is updating.
WITH examined AS (
    -- an index range scan of the primary key, and a primary-key lookup of the row of each record
    -- (LATERAL ... LIMIT 1: as a NOT EXISTS it was planned as a hash of every unpublished row)
    -- a subscriber is gone only when this replica's list ($1) and the table both lack it: a replica whose list
    -- predates a new subscription must not delete its records (the loop's mark rests on them)
    SELECT d.ctid, d.subscriber, d.event_id,
           (d.subscriber <> ALL ($1::text[])
            AND NOT EXISTS (SELECT 1 FROM event_subscriptions s WHERE s.name = d.subscriber))
           OR u.id IS NULL AS stale
    FROM outbox_deliveries d
    LEFT JOIN LATERAL (
        SELECT o.id FROM booking_events_outbox o WHERE o.id = d.event_id AND NOT o.published LIMIT 1
    ) u ON TRUE
    WHERE (d.subscriber, d.event_id) > ($2::text, $3::uuid)
    ORDER BY d.subscriber, d.event_id
    LIMIT $4
), stale AS (
    -- by the examined rows' own tuples (a TID scan; joined by key, each was a hash of every record); a record
    -- updated since (so live) is skipped
    SELECT d.ctid
    FROM outbox_deliveries d
    WHERE d.ctid = ANY (ARRAY(SELECT ctid FROM examined WHERE stale))
    FOR UPDATE SKIP LOCKED
), forgotten AS (
    DELETE FROM outbox_deliveries d
    WHERE d.ctid = ANY (ARRAY(SELECT ctid FROM stale))
    RETURNING 1
), last AS (
    SELECT subscriber, event_id FROM examined ORDER BY subscriber DESC, event_id DESC LIMIT 1
)
SELECT (SELECT count(*) FROM examined) AS examined,
       (SELECT count(*) FROM forgotten) AS forgotten,
       (SELECT subscriber FROM last) AS last_subscriber,
       (SELECT event_id FROM last) AS last_event_id;

-- name: outbox.retry_dead
-- `booking-rpc outbox retry`: re-drive every dead delivery (and the rows they held back).
WITH revived AS (
    UPDATE outbox_deliveries
    SET dead = FALSE, attempts = 0, next_attempt_at = now(), last_error = NULL
    WHERE dead
    RETURNING event_id
)
UPDATE booking_events_outbox o
SET dead = FALSE, published = FALSE, published_at = NULL
WHERE o.id IN (SELECT event_id FROM revived);

-- name: outbox.stats
-- For metrics: backlog size, age of the oldest undelivered event, dead deliveries.
SELECT
    (SELECT count(*) FROM booking_events_outbox WHERE NOT published) AS pending,
    (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)
       FROM booking_events_outbox WHERE NOT published) AS oldest_age_seconds,
    (SELECT count(*) FROM outbox_deliveries WHERE dead) AS dead;

-- name: outbox.subscriptions
-- Dynamic subscribers (booking.subscriptions.create), re-read periodically by every replica.
SELECT name, host, port, patterns, codec FROM event_subscriptions ORDER BY name;

-- name: outbox.batch_start
-- A batch's first statement (one round trip): one relay at a time serves a subscriber (replicas take the
-- others), the lock held until the batch commits; the sequence's last seq and this statement's snapshot's
-- xmin and xmax, from which the loop learns the seqs no open transaction can still commit (relay.py,
-- _SubscriberLoop.settle); and this transaction's settings. The claim's best plan
-- depends on its parameters (window size, patterns): a cached generic plan sorted the whole backlog and made
-- every batch slower as the backlog grew, so it is planned per execution. And the batch's commit does not
-- wait for its WAL flush: a crash can lose only the record of deliveries just made, and those events are
-- sent again (delivery is at least once), while every batch's fsync would compete with the writers' commits.
-- And plain index scans only: the relay's statements read the unpublished rows (partial indexes, in seq order)
-- and look rows up by key. On a table that grew since its last ANALYZE (a new database, the first minute
-- after a deploy: autovacuum analyzes once a minute at best) the planner took the outbox for small and
-- read all of it every batch, or bitmap-scanned the partial index, whose entries of rows published since the
-- last VACUUM it then visited again every batch (an index scan marks them dead once, and skips them after):
-- costs growing with the delivery history (bench/flows.py, EXPLAIN ANALYZE).
SELECT pg_try_advisory_xact_lock(hashtext('booking_outbox:' || $1)) AS locked,
       (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM booking_events_outbox_seq_seq) AS last_seq,
       pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax,
       set_config('plan_cache_mode', 'force_custom_plan', true) AS plan_cache_mode,
       set_config('synchronous_commit', 'off', true) AS synchronous_commit,
       set_config('enable_seqscan', 'off', true) AS enable_seqscan,
       set_config('enable_bitmapscan', 'off', true) AS enable_bitmapscan;

-- name: outbox.sweep_start
-- A sweep step's first statement: plain index scans only, as in outbox.batch_start. On a table that grew since
-- its last ANALYZE the planner took the outbox for small, and publish_done's step read every unpublished row
-- (a scan and sort of the table) instead of its batch's range of idx_booking_events_outbox_backlog: 7,500 rows
-- a sweep instead of 2,000 with 6,000 awaited, until autovacuum analyzed the table.
SELECT set_config('enable_seqscan', 'off', true) AS enable_seqscan,
       set_config('enable_bitmapscan', 'off', true) AS enable_bitmapscan;

-- name: outbox.listener_alive
-- A round trip on the relay's LISTEN connection: it answers while the connection lives.
SELECT 1

-- name: outbox.notify
-- Wake the relays of other processes (replicas): sent on its own, never inside a writer's transaction.
-- $1 the sender's token, so a relay can tell its own process's notifications from others'.
SELECT pg_notify('booking_outbox', $1);
