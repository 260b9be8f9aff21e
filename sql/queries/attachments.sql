-- Attachment metadata of bookings (the files live in object storage).

-- name: attachments.insert
-- $1 booking, $2 file name, $3 URL, $4 type, $5 description, $6 size, $7 public.
INSERT INTO booking_attachments (booking_id, file_name, file_url, file_type, description, file_size, is_public)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id, booking_id, file_name, file_url, file_type, description, file_size, is_public, uploaded_at,
          created_at;

-- name: attachments.by_booking
-- Booking $1's attachments, oldest first.
SELECT id, booking_id, file_name, file_url, file_type, description, file_size, is_public, uploaded_at,
       created_at
FROM booking_attachments
WHERE booking_id = $1
ORDER BY created_at, id;

-- name: attachments.booking_owner
-- Who may see booking $1's attachments: its user and clinic.
SELECT id, user_id, clinic_id FROM bookings WHERE id = $1;
