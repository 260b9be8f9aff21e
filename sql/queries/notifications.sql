-- A user's notifications (in-app inbox rows; delivery is another job's business).

-- name: notifications.insert
-- $1 user, $2 booking (or NULL), $3 type, $4 title, $5 content, $6 metadata.
INSERT INTO notifications (user_id, booking_id, type, title, content, metadata)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id;

-- name: notifications.find
-- User $1's notifications, newest first; only unread when $2; after cursor ($3 created_at, $4 id) or
-- NULLs; $5 rows.
SELECT id, user_id, booking_id, type, title, content, metadata, is_read, read_at, delivery_status, created_at
FROM notifications
WHERE user_id = $1
  AND (NOT $2::bool OR NOT is_read)
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3::timestamptz, $4::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $5::int;

-- name: notifications.unread_count
-- How many of user $1's notifications are unread.
SELECT count(*)::int FROM notifications WHERE user_id = $1 AND NOT is_read;

-- name: notifications.mark_read
-- Mark user $1's notifications $2 (NULL: all) read; someone else's ids are simply not matched.
UPDATE notifications
SET is_read = TRUE, read_at = now()
WHERE user_id = $1 AND NOT is_read AND ($2::uuid[] IS NULL OR id = ANY($2))
RETURNING id;
