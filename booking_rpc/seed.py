"""`booking-rpc seed --demo`: a few clinics, services and a month of slots, through the real handlers.

Idempotent (fixed ids; caches take only newer data; slot generation adds nothing twice), so it can run on
every start of a laptop demo. Prints ids and ready-to-run `booking-rpc call` commands.
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


def instructions(data: DemoData, *, today: dt.date | None = None) -> str:
    start = (today or dt.date.today()) + dt.timedelta(days=1)
    service = data.clinics[0]["services"][0]
    actor = {"id": str(USER_ID), "role": "user"}
    find = {
        "service_id": service["service_id"],
        "date_from": start.isoformat(),
        "date_to": (start + dt.timedelta(days=7)).isoformat(),
        "only_available": True,
        "limit": 5,
    }
    hold = {
        "actor": actor,
        "user_id": str(USER_ID),
        "pet_id": str(PET_ID),
        "service_id": service["service_id"],
        "slot_id": "<a slot id from slots.find>",
        "idempotency_key": "demo-1",
    }
    confirm = {
        "actor": actor,
        "reservation_id": "<id from reservation.create>",
        "lock_id": "<its lock_id>",
        "user_id": str(USER_ID),
        "payment": {"method": "card", "external_reference": "demo-pay-1", "status": "success"},
    }
    lines = [f"demo data ready: {len(data.clinics)} clinics, {data.slots_created} new slots", ""]
    for c in data.clinics:
        lines.append(f"  {c['name']} ({c['timezone']}) clinic_id={c['clinic_id']}")
        lines += [f"    {s['name']}: service_id={s['service_id']} price={s['price']}" for s in c["services"]]
    lines += [
        "",
        f"  demo user_id={USER_ID} pet_id={PET_ID}",
        "",
        "try:",
        f"  booking-rpc call booking.slots.find '{json.dumps(find)}'",
        f"  booking-rpc call booking.reservation.create '{json.dumps(hold)}'",
        f"  booking-rpc call booking.reservation.confirm '{json.dumps(confirm)}'",
    ]
    return "\n".join(lines)
