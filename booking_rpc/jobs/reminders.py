"""Due reminders → a notification row for the user and a `booking.reminder.due` event, sent once.

Claimed with FOR UPDATE SKIP LOCKED and marked sent in the same transaction, so two workers (or replicas)
never send one reminder twice, and a crash before commit leaves it pending for the next run.
"""

from __future__ import annotations

from booking_rpc.context import Context
from booking_rpc.events.outbox import enqueue
from booking_rpc.models.common import from_row
from booking_rpc.models.events import ReminderDue

TITLES = {
    "upcoming": "Your appointment is tomorrow",
    "check_in": "It's time to check in",
    "follow_up": "How is your pet doing?",
    "review_request": "Tell us about your visit",
}
NOTIFICATION_TYPE = {"review_request": "review_request"}


async def send_due_reminders(ctx: Context, *, batch_size: int = 200) -> int:
    total = 0
    while True:
        async with ctx.transaction() as conn:
            rows = await conn.fetch(ctx.sql["jobs.claim_due_reminders"], batch_size)
            for r in rows:
                title = TITLES.get(r["reminder_type"], "Reminder")
                service = r["service_name"] or "your appointment"
                await conn.execute(
                    ctx.sql["notifications.insert"],
                    r["user_id"],
                    r["booking_id"],
                    NOTIFICATION_TYPE.get(r["reminder_type"], "reminder"),
                    title,
                    f"{title}: {service} (booking {r['reference_code']})",
                    {"reminder_id": str(r["id"]), "reminder_type": r["reminder_type"]},
                )
                await enqueue(conn, ctx.sql, r["booking_id"], from_row(ReminderDue, r, reminder_id=r["id"]))
                await conn.execute(ctx.sql["jobs.mark_reminder_sent"], r["id"])
        total += len(rows)
        if len(rows) < batch_size:
            return total
