-- Reviews of completed bookings (one per booking).

-- name: reviews.insert
-- $1 booking, $2 user, $3 clinic, $4 service, $5 rating, $6 comment, $7 attachments, $8 ratings_breakdown.
-- A second review of the booking: unique violation uq_reviews_booking.
INSERT INTO reviews (booking_id, user_id, clinic_id, service_id, rating, comment, attachments,
                     ratings_breakdown, is_verified, is_published)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, TRUE, TRUE)
RETURNING id, booking_id, user_id, clinic_id, service_id, rating, comment, attachments, ratings_breakdown,
          is_verified, is_published, created_at;

-- name: reviews.get_by_booking
-- Booking $1's review, if any.
SELECT id, booking_id, user_id, clinic_id, service_id, rating, comment, attachments, ratings_breakdown,
       is_verified, is_published, created_at
FROM reviews
WHERE booking_id = $1;
