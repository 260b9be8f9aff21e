"""Human-friendly booking reference codes: short, unambiguous when read aloud or typed.

The alphabet is Crockford-style: digits 2-9 and letters without I, L, O, U (no 0/O, 1/I/L confusion, no
accidental words via U). 8 symbols of 30 give ~39 bits from `secrets`; the insert is retried on the rare
collision (the column is UNIQUE). Formatted as `BK-XXXX-XXXX`.
"""

from __future__ import annotations

import secrets

ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
LENGTH = 8
PREFIX = "BK-"
MAX_ATTEMPTS = 8


def new_reference_code() -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    return f"{PREFIX}{body[:4]}-{body[4:]}"


def normalize(code: str) -> str:
    """What a person typed → the stored form (trimmed, upper case)."""
    return code.strip().upper()


def is_valid(code: str) -> bool:
    if not code.startswith(PREFIX):
        return False
    body = code[len(PREFIX) :]
    if len(body) != LENGTH + 1 or body[4] != "-":
        return False
    return all(c in ALPHABET for c in body[:4] + body[5:])
