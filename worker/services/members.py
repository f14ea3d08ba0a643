"""Team members and their roles: the acting person of every write (logins live in :mod:`accounts`)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.models import Member, MemberRole
from worker.errors import Conflict, InvalidInput, NotFound
from worker.schemas import MemberRead
from worker.services import access
from worker.services._common import check_actor, check_name, get_or_raise
from worker.services.audit import record_event

__all__ = ["create_member", "get_member", "get_member_by_name", "list_members", "set_member_role"]


def create_member(
    session: Session,
    *,
    actor: int | None,
    name: str,
    email: str | None = None,
    role: MemberRole | str | None = None,
) -> MemberRead:
    """Add a team member (admins only, except for the first member of an empty team).

    Args:
        role: admin, member or viewer; by default member, and admin for the first member (who
            sets the team up).

    Raises:
        PermissionDenied: the actor is not an admin.
        InvalidInput: empty name, malformed email or unknown role.
        Conflict: the name or email is taken.
    """
    check_actor(session, actor)
    first = session.scalar(sa.select(Member.id).limit(1)) is None
    if not first:
        access.require_admin(session, actor, "add members")
    if role is None:
        role = MemberRole.ADMIN if first else MemberRole.MEMBER
    name = (name or "").strip()
    if not name:
        raise InvalidInput("a member needs a name; type one")
    name = check_name(name, what="a member's name")
    if len(name) > 100:
        raise InvalidInput(f"member names are at most 100 characters, got {len(name)}")
    if email is not None:
        email = email.strip() or None
        if email is not None and ("@" not in email or email.startswith("@") or email.endswith("@")):
            raise InvalidInput(f"email {email!r} is not an address like name@example.org")
    try:
        role = MemberRole(role)
    except ValueError:
        raise InvalidInput(f"unknown role {role!r}; use one of {', '.join(r.value for r in MemberRole)}") from None
    if session.scalar(sa.select(Member.id).where(Member.name == name)) is not None:
        raise Conflict(f"a member named {name!r} exists already; choose another name")
    if email is not None and session.scalar(sa.select(Member.id).where(Member.email == email)) is not None:
        raise Conflict(f"the email {email!r} belongs to another member already")
    member = Member(name=name, email=email, role=role)
    session.add(member)
    session.flush()
    record_event(
        session, actor=actor, action="member.create", object_kind="member", object_id=member.id,
        detail={"name": name, "role": role.value},
    )
    return MemberRead.model_validate(member)


def get_member(session: Session, *, member_id: int) -> MemberRead:
    """One member.

    Raises:
        NotFound: no member has this id.
    """
    return MemberRead.model_validate(get_or_raise(session, Member, member_id, "member"))


def get_member_by_name(session: Session, *, name: str) -> MemberRead:
    """The member called ``name``.

    Raises:
        NotFound: nobody has this name.
    """
    member = session.scalar(sa.select(Member).where(Member.name == name))
    if member is None:
        raise NotFound("member", name, "create the member first (segboard member add, or the sidebar)")
    return MemberRead.model_validate(member)


def list_members(session: Session) -> list[MemberRead]:
    """Every member, by name."""
    return [MemberRead.model_validate(m) for m in session.scalars(sa.select(Member).order_by(Member.name))]


def set_member_role(session: Session, *, actor: int | None, member_id: int, role: MemberRole | str) -> MemberRead:
    """Change a member's role.

    Raises:
        InvalidInput: unknown role.
        NotFound: no such member.
        PermissionDenied: the actor is not an admin.
        Conflict: the change would leave the team without an admin.
    """
    check_actor(session, actor)
    access.require_admin(session, actor, "change roles")
    member = get_or_raise(session, Member, member_id, "member")
    try:
        new = MemberRole(role)
    except ValueError:
        raise InvalidInput(f"unknown role {role!r}; use one of {', '.join(r.value for r in MemberRole)}") from None
    old = member.role
    if old is MemberRole.ADMIN and new is not MemberRole.ADMIN:
        admins = session.scalar(sa.select(sa.func.count(Member.id)).where(Member.role == MemberRole.ADMIN)) or 0
        if admins <= 1:
            raise Conflict(f"{member.name} is the only admin; make another member admin first")
    member.role = new
    session.flush()
    record_event(
        session, actor=actor, action="member.set_role", object_kind="member", object_id=member.id,
        detail={"old": old.value, "new": new.value},
    )
    return MemberRead.model_validate(member)
