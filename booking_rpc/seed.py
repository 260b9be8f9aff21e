"""`booking-rpc seed --demo`: a few clinics, services and a month of slots, through the real handlers.

Idempotent (fixed ids; caches take only newer data; slot generation adds nothing twice), so it can run on
every start of a laptop demo. Prints the ids and a walkthrough of `booking-rpc call` commands that runs as
pasted into bash (hold, confirm, find, cancel, complete as clinic staff, review).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

from booking_rpc.context import Context

NS = uuid.UUID("6a1d7c0e-5b7e-4d8e-9a55-0c1d2e3f4a5b")
ADMIN = {"id": str(uuid.uuid5(NS, "admin")), "role": "admin"}
USER_ID = uuid.uuid5(NS, "user:demo")
PET_ID = uuid.uuid5(NS, "pet:mochi")
STAFF_ID = uuid.uuid5(NS, "staff:demo")  # acts as staff of the first clinic in the walkthrough
EPOCH = "2026-01-01T00:00:00Z"  # the caches' updated_at: a later real event replaces the demo data

CLINICS = [
    ("Happy Paws Jakarta", "Asia/Jakarta", [("General check-up", "150000.00", 30), ("Vaccination", "250000.00", 30)]),
    ("Tierarzt Berlin Mitte", "Europe/Berlin", [("Grooming", "400000.00", 60), ("Dental cleaning", "900000.00", 60)]),
    ("Brooklyn Pet Clinic", "America/New_York", [("Check-up", "300000.00", 30)]),
]


@dataclass
class DemoData:
    clinics: list[dict[str, Any]]
    slots_created: int


async def _call(ctx: Context, pattern: str, data: dict[str, Any]) -> Any:
    from booking_rpc.app import service_router

    route = service_router().lookup(pattern)
    assert route is not None, pattern
    return await route.invoke(data, ctx)


async def seed_demo(ctx: Context, *, days: int = 30, today: dt.date | None = None) -> DemoData:
    start = (today or dt.date.today()) + dt.timedelta(days=1)
    await _call(
        ctx,
        "user.updated",
        {
            "user_id": str(USER_ID),
            "email": "demo@example.com",
            "full_name": "Demo Owner",
            "phone_number": "+6200000000",
            "updated_at": EPOCH,
        },
    )
    await _call(
        ctx,
        "pet.updated",
        {
            "pet_id": str(PET_ID),
            "name": "Mochi",
            "species": "cat",
            "breed": "Ragdoll",
            "owner_id": str(USER_ID),
            "updated_at": EPOCH,
        },
    )
    clinics: list[dict[str, Any]] = []
    created = 0
    for name, zone, services in CLINICS:
        clinic_id = uuid.uuid5(NS, f"clinic:{name}")
        await _call(
            ctx,
            "clinic.updated",
            {
                "clinic_id": str(clinic_id),
                "name": name,
                "address": f"{name} street 1",
                "phone_number": "+00",
                "timezone": zone,
                "updated_at": EPOCH,
            },
        )
        entry: dict[str, Any] = {"clinic_id": str(clinic_id), "name": name, "timezone": zone, "services": []}
        for service_name, price, minutes in services:
            service_id = uuid.uuid5(NS, f"service:{name}:{service_name}")
            await _call(
                ctx,
                "booking.services.upsert",
                {
                    "actor": ADMIN,
                    "id": str(service_id),
                    "clinic_id": str(clinic_id),
                    "name": service_name,
                    "price": price,
                    "duration_minutes": minutes,
                },
            )
            reply = await _call(
                ctx,
                "booking.slots.generate",
                {
                    "actor": ADMIN,
                    "service_id": str(service_id),
                    "date_from": start.isoformat(),
                    "date_to": (start + dt.timedelta(days=days - 1)).isoformat(),
                    "weekdays": [1, 2, 3, 4, 5],
                    "windows": [{"start": "09:00", "end": "12:00"}, {"start": "13:00", "end": "17:00"}],
                    "capacity": 2,
                },
            )
            created += reply.created
            entry["services"].append({"service_id": str(service_id), "name": service_name, "price": price})
        clinics.append(entry)
    return DemoData(clinics, created)


# A JSON field of a reply, for the walkthrough's shell variables (`field "$reply" items.0.id`): python3 is there
# wherever booking-rpc runs, jq often is not.
FIELD_FUNCTION = """field() { python3 -c 'import json, sys
v = json.loads(sys.argv[1])
for k in sys.argv[2].split("."): v = v[int(k)] if isinstance(v, list) else v[k]
print(v)' "$1" "$2"; }"""


def _step(comment: str, variable: str, pattern: str, payload: str) -> list[str]:
    """One call whose reply lands in $variable and is shown; the payload is a heredoc so $vars expand."""
    return [
        f"# {comment}",
        f"{variable}=$(booking-rpc call {pattern} - <<EOF",
        payload,
        "EOF",
        f'); echo "${variable}"',
    ]


def instructions(data: DemoData) -> str:
    """What `seed --demo` prints: the ids, then a walkthrough that runs as pasted into bash (every line a
    comment or a command): a free slot, hold, confirm, find, cancel; a second booking completed by the clinic's
    staff and reviewed by its owner."""
    clinic, service = data.clinics[0], data.clinics[0]["services"][0]
    user = json.dumps({"id": str(USER_ID), "role": "user"})
    staff = json.dumps({"id": str(STAFF_ID), "role": "clinic_staff", "clinic_id": clinic["clinic_id"]})
    # dates as the shell sees them when pasted (GNU date), so a saved walkthrough does not go stale
    find = (
        f'{{"service_id": "{service["service_id"]}", "date_from": "$(date -d tomorrow +%F)", '
        '"date_to": "$(date -d +8days +%F)", "only_available": true, "limit": 1}'
    )
    ids = f'"user_id": "{USER_ID}", "pet_id": "{PET_ID}", "service_id": "{service["service_id"]}"'

    def hold(heading: str) -> list[str]:
        return [
            *_step(
                f"{heading}: hold the slot (one unit, for BOOKING_RPC_HOLD_TTL_SECONDS; a retry with the same "
                "idempotency_key holds it once)",
                "hold",
                "booking.reservation.create",
                f'{{"actor": $user, {ids}, "slot_id": "$slot_id", "idempotency_key": "demo-$(date +%s%N)"}}',
            ),
            *_step(
                "   confirm the hold with its lock_id: a booking, paid",
                "booking",
                "booking.reservation.confirm",
                '{"actor": $user, "reservation_id": "$(field "$hold" id)", "lock_id": "$(field "$hold" lock_id)", '
                f'"user_id": "{USER_ID}", "payment": {{"method": "card", "external_reference": '
                '"demo-pay-$(date +%s%N)", "status": "success"}}',
            ),
            'booking_id=$(field "$booking" id)',
        ]

    lines = [f"# demo data ready: {len(data.clinics)} clinics, {data.slots_created} new slots"]
    for c in data.clinics:
        lines.append(f"#   {c['name']} ({c['timezone']}) clinic_id={c['clinic_id']}")
        lines += [f"#     {s['name']}: service_id={s['service_id']} price={s['price']}" for s in c["services"]]
    lines += [
        f"#   demo user_id={USER_ID} pet_id={PET_ID}; staff of {clinic['name']}: id={STAFF_ID}",
        "#",
        "# Walkthrough: paste into bash, with booking-rpc on PATH (source .venv/bin/activate) and the service",
        "# running (booking-rpc serve; another port: BOOKING_RPC_PORT=...).",
        FIELD_FUNCTION,
        f"user='{user}'",
        f"staff='{staff}'",
        *_step(
            f"a free slot of {service['name']} at {clinic['name']} in the coming week",
            "slots",
            "booking.slots.find",
            find,
        ),
        'slot_id=$(field "$slots" items.0.id)',
        *hold("1st booking"),
        *_step(
            "   the user's upcoming bookings",
            "mine",
            "booking.booking.find",
            '{"actor": $user, "upcoming_only": true}',
        ),
        *_step(
            "   cancel it (the refund follows the cancellation policy)",
            "cancelled",
            "booking.booking.cancel",
            '{"actor": $user, "booking_id": "$booking_id", "reason": "plans changed"}',
        ),
        *hold("2nd booking"),
        *_step(
            "   the clinic's staff (clinic_id in the actor) start the visit",
            "visit",
            "booking.booking.update",
            '{"actor": $staff, "booking_id": "$booking_id", "status": "in-progress"}',
        ),
        *_step(
            "   ... and complete it",
            "completed",
            "booking.booking.update",
            '{"actor": $staff, "booking_id": "$booking_id", "status": "completed"}',
        ),
        *_step(
            "   the owner reviews the completed visit",
            "review",
            "booking.review.create",
            '{"actor": $user, "booking_id": "$booking_id", "rating": 5, "comment": "Mochi loved it"}',
        ),
    ]
    return "\n".join(lines)
