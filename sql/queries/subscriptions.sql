-- name: subscriptions.upsert
-- Create or replace the subscriber named $1 (re-registering after a move is the same call).
INSERT INTO event_subscriptions AS s (name, host, port, patterns, codec)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (name) DO UPDATE
SET host = EXCLUDED.host, port = EXCLUDED.port, patterns = EXCLUDED.patterns, codec = EXCLUDED.codec
RETURNING s.id, s.name, s.host, s.port, s.patterns, s.codec, s.created_at;

-- name: subscriptions.delete
DELETE FROM event_subscriptions WHERE name = $1 RETURNING name;

-- name: subscriptions.find
SELECT id, name, host, port, patterns, codec, created_at FROM event_subscriptions ORDER BY name;
