-- name: replica.primary_position
-- The primary's current WAL position, in bytes (the read replica's lag is measured against it).
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint;

-- name: replica.replay_position
-- On the read replica: whether it is a standby, and how far it has replayed the primary's WAL (bytes).
SELECT pg_is_in_recovery() AS in_recovery, pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint AS replayed;
