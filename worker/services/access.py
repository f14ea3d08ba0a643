"""Who may do what: the role rules every write in the service layer checks (docs/access.md).

The web app, the CLI, the jobs and the HTTP API all reach the database through the service layer,
so the rules live here once:

- **admin**: members, settings, tokens of anyone, and every run, experiment, dataset and score;
- **member**: creates experiments, datasets, ensembles, pseudo-label rounds and scores, and changes
  or cancels their own; may use anyone's finished runs as ensemble members or teachers;
- **viewer**: reads everything, writes nothing.

``actor=None`` is the system (a job, the reaper, an admin command run on the server with database
access); it passes every check. A denied action raises :class:`~worker.errors.PermissionDenied`
with one line that names the action, the rule and who may do it.

Example:
    >>> require_member(session, actor, "queue an experiment")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.models import Member, MemberRole, Run, RunStatus
from worker.errors import InvalidInput, PermissionDenied
from worker.services._common import get_or_raise

__all__ = [
    "role_of",
    "require_member",
    "require_admin",
    "require_owner",
    "is_admin",
    "check_priority_allowed",
    "check_active_run_limit",
]

_ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)


def role_of(session: Session, actor: int | None) -> MemberRole | None:
    """The actor's role; None for the system.

    Raises:
        NotFound: no member has this id.
    """
    if actor is None:
        return None
    member = get_or_raise(session, Member, actor, "member", "log in again: your account no longer exists")
    return member.role


def is_admin(session: Session, actor: int | None) -> bool:
    """Whether ``actor`` is the system or an admin."""
    role = role_of(session, actor)
    return role is None or role is MemberRole.ADMIN


def require_member(session: Session, actor: int | None, action: str) -> None:
    """Refuse ``action`` to viewers (members, admins and the system pass).

    Raises:
        PermissionDenied: the actor is a viewer.
    """
    if role_of(session, actor) is MemberRole.VIEWER:
        raise PermissionDenied(f"viewers cannot {action}; ask an admin to give you the member role")


def require_admin(session: Session, actor: int | None, action: str) -> None:
    """Refuse ``action`` to anyone but admins (and the system).

    Raises:
        PermissionDenied: the actor is a member or a viewer.
    """
    role = role_of(session, actor)
    if role is not None and role is not MemberRole.ADMIN:
        raise PermissionDenied(f"only admins can {action}; ask an admin")


def require_owner(session: Session, actor: int | None, owner_id: int | None, action: str) -> None:
    """Refuse ``action`` on an object owned by ``owner_id`` unless the actor owns it or is an admin.

    An object with no owner (made by the system) is an admin's to change.

    Raises:
        PermissionDenied: a viewer, or a member acting on someone else's object.
    """
    role = role_of(session, actor)
    if role is None or role is MemberRole.ADMIN:
        return
    if role is MemberRole.VIEWER:
        raise PermissionDenied(f"viewers cannot {action}; ask an admin to give you the member role")
    if owner_id != actor:
        owner = session.get(Member, owner_id) if owner_id is not None else None
        whose = f"{owner.name}'s" if owner is not None else "the system's"
        raise PermissionDenied(f"you cannot {action}: it is {whose}; only its owner or an admin can")


def _settings() -> Any:
    from worker.settings import get_settings

    return get_settings()


def check_priority_allowed(
    session: Session, actor: int | None, priority: int, *, max_member_priority: int | None = None
) -> None:
    """Refuse a queue priority above ``max_member_priority`` to anyone but admins.

    ``max_member_priority`` defaults to the ``member_max_priority`` setting of this process.

    Raises:
        PermissionDenied: a member asked for a higher priority than members may set.
    """
    if is_admin(session, actor):
        return
    if max_member_priority is None:
        max_member_priority = int(_settings().member_max_priority)
    if priority > max_member_priority:
        raise PermissionDenied(
            f"members may set priorities up to {max_member_priority}, not {priority}; "
            "ask an admin to raise it (or to change member_max_priority)"
        )


_FROM_SETTINGS: Any = object()


def check_active_run_limit(
    session: Session, actor: int | None, adding: int, *, limit: int | None = _FROM_SETTINGS
) -> None:
    """Refuse queueing ``adding`` runs that would take the actor past ``limit`` queued or running runs.

    Admins and the system are exempt; None means no limit; by default the
    ``max_active_runs_per_member`` setting of this process.

    Raises:
        PermissionDenied: the member would have more than ``limit`` active runs.
    """
    if adding < 0:
        raise InvalidInput(f"adding must be >= 0, got {adding}")
    if is_admin(session, actor):
        return
    if limit is _FROM_SETTINGS:
        limit = _settings().max_active_runs_per_member
    if limit is None:
        return
    active = session.scalar(
        sa.select(sa.func.count(Run.id)).where(Run.owner_id == actor, Run.status.in_(_ACTIVE))
    ) or 0
    if active + adding > limit:
        raise PermissionDenied(
            f"this would give you {active + adding} queued or running runs; the limit per member is {limit} "
            f"(you have {active}); wait for some to finish, cancel some, or ask an admin to raise "
            "max_active_runs_per_member"
        )
