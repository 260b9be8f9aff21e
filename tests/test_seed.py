"""The demo data: created through the real handlers, and the same after a second run."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import sys
from pathlib import Path

from booking_rpc.context import Context
from booking_rpc.seed import PET_ID, USER_ID, instructions, seed_demo
from booking_rpc.server.server import Server

README = Path(__file__).resolve().parents[1] / "README.md"
TABLES = ("clinics", "users", "pets", "services", "slots")


async def counts(ctx: Context) -> dict[str, int]:
    async with ctx.connection() as conn:
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}


async def test_seed_demo_is_idempotent(app_ctx: Context) -> None:
    today = dt.date(2026, 11, 24)
    first = await seed_demo(app_ctx, days=10, today=today)
    after_first = await counts(app_ctx)
    assert after_first["clinics"] == 3 and after_first["services"] == 5 and after_first["slots"] > 100
    assert first.slots_created == after_first["slots"]
    second = await seed_demo(app_ctx, days=10, today=today)
    assert second.slots_created == 0
    assert await counts(app_ctx) == after_first
    text = instructions(second)
    assert "booking-rpc call booking.slots.find" in text and first.clinics[0]["clinic_id"] in text
    async with app_ctx.connection() as conn:
        zone = await conn.fetchval("SELECT timezone FROM clinics WHERE name = 'Tierarzt Berlin Mitte'")
    assert zone == "Europe/Berlin"


async def run(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_walkthrough_seed_prints_runs_as_pasted(db_url: str, app_ctx: Context, app_server: Server) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "BOOKING_RPC_PORT": str(app_server.port),  # where `booking-rpc call` sends by default
        "BOOKING_RPC_LOG_FORMAT": "json",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # booking-rpc, as when activated
    }
    code, walkthrough, logs = await run(sys.executable, "-m", "booking_rpc", "seed", "--demo", "--days", "10", env=env)
    assert code == 0, logs
    assert '"event"' not in walkthrough and '"event"' in logs  # log lines on stderr, stdout only the output
    assert re.search(r"<[a-z][^<>]*>", walkthrough) is None  # no placeholder (<its lock_id>) left to fill in

    readme = await asyncio.to_thread(README.read_text, encoding="utf-8")
    assert walkthrough[walkthrough.index("field() {") :] in readme  # the README shows what seed prints

    code, replies, errors = await run("bash", "-e", "-c", walkthrough, env=env)  # -e: any failed call stops it
    assert code == 0, errors + replies
    assert errors == ""
    async with app_ctx.connection() as conn:
        bookings = await conn.fetch(
            "SELECT id, status FROM bookings WHERE user_id = $1 AND pet_id = $2", USER_ID, PET_ID
        )
        reviewed = await conn.fetchval("SELECT booking_id FROM reviews WHERE user_id = $1", USER_ID)
    assert sorted(b["status"] for b in bookings) == ["cancelled", "completed"]
    assert reviewed == next(b["id"] for b in bookings if b["status"] == "completed")
    assert f'"booking_id": "{reviewed}"' in replies  # the review's reply was shown
