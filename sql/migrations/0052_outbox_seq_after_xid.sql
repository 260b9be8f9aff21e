-- booking_events_outbox.seq is taken after the writing transaction has its xid (pg_current_xact_id() first:
-- a CASE evaluates its condition before its result). Why: a relay's claim starts after the seq below which
-- its subscriber has every row (relay.py, _SubscriberLoop.delivered_to), and it may move that mark only past
-- seqs no open transaction can still commit: a seq read from the sequence is past them once a snapshot's
-- xmin has passed the xmax of a snapshot taken after the read, which holds only if every holder of a seq
-- had its xid before it took the seq. A transaction whose first write is its event row took the seq first.
-- The sequence keeps CACHE 1: a backend's cached seqs would be taken after the sequence was read.
ALTER TABLE booking_events_outbox
ALTER COLUMN seq SET DEFAULT (
    CASE WHEN pg_current_xact_id() IS NOT NULL THEN nextval('booking_events_outbox_seq_seq'::regclass) END
);
