"""Who may do what. The gateway authenticates; we only check the `actor` it sends."""

from __future__ import annotations

from uuid import UUID

from booking_rpc.errors import RpcError
from booking_rpc.models.common import Actor, Role


def require_actor(actor: Actor | None) -> Actor:
    if actor is None:
        raise RpcError("UNAUTHENTICATED", "This pattern needs an authenticated actor")
    return actor


def is_privileged(actor: Actor) -> bool:
    """Admins and other platform services act on anyone's behalf."""
    return actor.role in (Role.ADMIN, Role.SERVICE)


def require_self(actor: Actor | None, user_id: UUID) -> Actor:
    """A user acts only for themselves; admins and services for anyone."""
    who = require_actor(actor)
    if who.role == Role.USER and who.id != user_id:
        raise RpcError("FORBIDDEN", "A user may act only on their own behalf")
    if who.role == Role.CLINIC_STAFF:
        raise RpcError("FORBIDDEN", "Clinic staff cannot act on a user's behalf here")
    return who


def is_staff_of(actor: Actor, clinic_id: UUID) -> bool:
    return actor.role == Role.CLINIC_STAFF and actor.clinic_id == clinic_id


def require_clinic_staff(actor: Actor | None, clinic_id: UUID) -> Actor:
    """Staff of that clinic, or an admin/service."""
    who = require_actor(actor)
    if is_privileged(who) or is_staff_of(who, clinic_id):
        return who
    raise RpcError("FORBIDDEN", "Only staff of this clinic or an admin may do this")
