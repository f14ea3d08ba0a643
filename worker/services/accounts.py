"""Accounts: passwords, web logins, OpenID Connect identities and API tokens (docs/access.md).

Secrets never reach the database: passwords are stored as argon2 hashes (argon2-cffi), and a
login's cookie value or an API token only as its SHA-256. Tokens come from
``secrets.token_urlsafe(32)``; an API token starts with ``sbt_`` so that a leaked one is easy to
recognise. Every function takes ``now`` where time matters, so tests drive the clock.

Who may do what: a member manages their own password, logins and tokens; an admin (or the
system, ``actor=None``) those of anyone; linking an OIDC identity is an admin's.

Example:
    >>> me = authenticate_password(session, name="ada", password=pw)  # doctest: +SKIP
    >>> token = start_login(session, member_id=me.id)  # doctest: +SKIP
    >>> resolve_login(session, token=token, idle_minutes=720, max_days=30).name  # doctest: +SKIP
    'ada'
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import secrets
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.orm import Session

from worker.db.base import utcnow
from worker.db.models import ApiToken, LoginMethod, LoginSession, Member, MemberRole
from worker.errors import AuthenticationFailed, Conflict, InvalidInput, PermissionDenied
from worker.schemas import ApiTokenRead, MemberRead
from worker.services import access
from worker.services._common import get_or_raise
from worker.services.audit import record_event

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "MAX_PASSWORD_LENGTH",
    "TOKEN_PREFIX",
    "set_password",
    "authenticate_password",
    "start_login",
    "resolve_login",
    "end_login",
    "revoke_logins",
    "resolve_oidc_login",
    "link_oidc",
    "create_token",
    "list_tokens",
    "revoke_token",
    "authenticate_token",
    "hash_token",
]

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
TOKEN_PREFIX = "sbt_"
# How many characters of an API token lists show (the "sbt_" and 8 random ones).
_SHOWN = len(TOKEN_PREFIX) + 8
# last_seen_at / last_used_at move at most this often, to spare a write per request.
_TOUCH_EVERY = dt.timedelta(minutes=1)
_WRONG_LOGIN = "wrong name or password"
_BAD_TOKEN = "the API token is unknown, revoked or expired; create a new one with `segboard token create`"


@functools.lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    return PasswordHasher()


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash to verify against for unknown names, so that the time taken does not tell them apart."""
    return _hasher().hash(secrets.token_urlsafe(16))


def hash_token(token: str) -> str:
    """The SHA-256 hex digest under which a login or API token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return utcnow()
    return now if now.tzinfo is not None else now.replace(tzinfo=dt.timezone.utc)


def _aware(ts: dt.datetime) -> dt.datetime:
    """A stored time, made timezone-aware (rows not yet read back keep what was assigned)."""
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=dt.timezone.utc)


def _require_self_or_admin(session: Session, actor: int | None, member_id: int, action: str) -> Member:
    member = get_or_raise(session, Member, member_id, "member")
    if actor is not None and actor != member_id:
        access.role_of(session, actor)  # an unknown actor is NotFound, not a denial
        if not access.is_admin(session, actor):
            raise PermissionDenied(f"you cannot {action} of {member.name}: only they or an admin can")
    return member


# ------------------------------------------------------------------ passwords


def set_password(
    session: Session, *, actor: int | None, member_id: int, password: str, now: dt.datetime | None = None
) -> None:
    """Set a member's password; their existing logins end (and OIDC logins issued before now).

    Raises:
        PermissionDenied: the actor is neither the member nor an admin.
        InvalidInput: the password is shorter than 10 or longer than 1024 characters.
        NotFound: no such member.
    """
    member = _require_self_or_admin(session, actor, member_id, "set the password")
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"a password needs at least {MIN_PASSWORD_LENGTH} characters; choose a longer one")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"a password has at most {MAX_PASSWORD_LENGTH} characters; choose a shorter one")
    member.password_hash = _hasher().hash(password)
    member.credentials_changed_at = _now(now)
    ended = _delete_logins(session, member_id)
    session.flush()
    record_event(session, actor=actor, action="member.set_password", object_kind="member", object_id=member_id,
                 detail={"logins_ended": ended})


def authenticate_password(session: Session, *, name: str, password: str) -> MemberRead:
    """The member whose name and password these are.

    Raises:
        AuthenticationFailed: unknown name, no password set, or a wrong password (one message for all).
    """
    member = session.scalar(sa.select(Member).where(Member.name == (name or "").strip()))
    if member is None or member.password_hash is None:
        try:  # the same work as for a known name
            _hasher().verify(_dummy_hash(), password or "")
        except (VerificationError, InvalidHashError):
            pass
        raise AuthenticationFailed(_WRONG_LOGIN)
    try:
        _hasher().verify(member.password_hash, password or "")
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        raise AuthenticationFailed(_WRONG_LOGIN) from None
    if _hasher().check_needs_rehash(member.password_hash):
        member.password_hash = _hasher().hash(password)
        session.flush()
    return MemberRead.model_validate(member)


# ------------------------------------------------------------------ web logins


def start_login(session: Session, *, member_id: int, method: str = "password", now: dt.datetime | None = None) -> str:
    """Start a web login for a member who just proved who they are; returns the cookie's token.

    Raises:
        NotFound: no such member.
        InvalidInput: an unknown method.
    """
    get_or_raise(session, Member, member_id, "member")
    try:
        how = LoginMethod(method)
    except ValueError:
        raise InvalidInput(f"unknown login method {method!r}; use password or oidc") from None
    token = secrets.token_urlsafe(32)
    now = _now(now)
    session.add(LoginSession(token_hash=hash_token(token), member_id=member_id, method=how, created_at=now,
                             last_seen_at=now))
    session.flush()
    record_event(session, actor=member_id, action="member.login", object_kind="member", object_id=member_id,
                 detail={"method": how.value})
    return token


def _expired(row: LoginSession, now: dt.datetime, idle_minutes: int, max_days: int) -> bool:
    return (now - _aware(row.last_seen_at) > dt.timedelta(minutes=idle_minutes)
            or now - _aware(row.created_at) > dt.timedelta(days=max_days))


def _touch(row: LoginSession, now: dt.datetime) -> None:
    if now - _aware(row.last_seen_at) >= _TOUCH_EVERY:
        row.last_seen_at = now


def resolve_login(
    session: Session, *, token: str, idle_minutes: int, max_days: int, now: dt.datetime | None = None
) -> MemberRead | None:
    """The member a login cookie belongs to; None when unknown or expired (the expired login is deleted).

    Args:
        idle_minutes: The login ends after this long without a request.
        max_days: The login ends this long after it began.
    """
    if not token:
        return None
    row = session.scalar(sa.select(LoginSession).where(LoginSession.token_hash == hash_token(token)))
    if row is None:
        return None
    now = _now(now)
    if _expired(row, now, idle_minutes, max_days):
        session.delete(row)
        session.flush()
        return None
    _touch(row, now)
    session.flush()
    return MemberRead.model_validate(session.get(Member, row.member_id))


def end_login(session: Session, *, token: str) -> None:
    """Log out: forget the login of this cookie token (an unknown token is ignored)."""
    row = session.scalar(sa.select(LoginSession).where(LoginSession.token_hash == hash_token(token or "")))
    if row is None:
        return
    member_id = row.member_id
    session.delete(row)
    session.flush()
    record_event(session, actor=member_id, action="member.logout", object_kind="member", object_id=member_id)


def _delete_logins(session: Session, member_id: int) -> int:
    result = session.execute(sa.delete(LoginSession).where(LoginSession.member_id == member_id))
    return int(getattr(result, "rowcount", 0) or 0)


def revoke_logins(session: Session, *, actor: int | None, member_id: int, now: dt.datetime | None = None) -> int:
    """End every web login of a member (OIDC ones included); returns how many there were.

    Raises:
        PermissionDenied: the actor is neither the member nor an admin.
        NotFound: no such member.
    """
    member = _require_self_or_admin(session, actor, member_id, "end the logins")
    ended = _delete_logins(session, member_id)
    member.credentials_changed_at = _now(now)  # OIDC logins issued before now stay ended
    session.flush()
    record_event(session, actor=actor, action="member.revoke_logins", object_kind="member", object_id=member_id,
                 detail={"logins_ended": ended})
    return ended


# ------------------------------------------------------------------ OpenID Connect


def _as_time(value: dt.datetime | int | float) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return _aware(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(float(value), tz=dt.timezone.utc)
    raise InvalidInput(f"issued_at must be a time or the token's iat seconds, got {type(value).__name__}")


_RANK = {MemberRole.VIEWER: 0, MemberRole.MEMBER: 1, MemberRole.ADMIN: 2}


def _first_role(claims: Mapping[str, Any], role_claim: str | None, role_map: Mapping[str, str]) -> MemberRole:
    """viewer, or the highest role the configured claim maps to (the claim may be a list of groups)."""
    if not role_claim or not role_map:
        return MemberRole.VIEWER
    value = claims.get(role_claim)
    values = value if isinstance(value, (list, tuple)) else [value]
    roles = [MemberRole(role_map[v]) for v in values if isinstance(v, str) and v in role_map]
    return max(roles, key=_RANK.__getitem__, default=MemberRole.VIEWER)


def _unique_name(session: Session, claims: Mapping[str, Any], subject: str) -> str:
    raw = next((str(claims[k]) for k in ("preferred_username", "name", "email")
                if isinstance(claims.get(k), str) and str(claims[k]).strip()), f"user-{subject}")
    base = re.sub(r"[\x00-\x1f\x7f]+", "", raw).strip()[:90] or "user"
    name, n = base, 1
    while session.scalar(sa.select(Member.id).where(Member.name == name)) is not None:
        n += 1
        name = f"{base}-{n}"
    return name


def _create_oidc_member(session: Session, subject: str, claims: Mapping[str, Any], role_claim: str | None,
                        role_map: Mapping[str, str]) -> Member:
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    if email is not None and (len(email) > 254 or "@" not in email
                              or session.scalar(sa.select(Member.id).where(Member.email == email)) is not None):
        email = None  # another member has it (an admin links the identity to that member instead)
    member = Member(name=_unique_name(session, claims, subject), email=email, oidc_subject=subject,
                    role=_first_role(claims, role_claim, role_map))
    session.add(member)
    session.flush()
    record_event(session, actor=member.id, action="member.oidc_create", object_kind="member", object_id=member.id,
                 detail={"name": member.name, "role": member.role.value})
    return member


def resolve_oidc_login(
    session: Session,
    *,
    subject: str,
    issued_at: dt.datetime | int | float,
    claims: Mapping[str, Any],
    role_claim: str | None,
    role_map: Mapping[str, str],
    idle_minutes: int,
    max_days: int,
    now: dt.datetime | None = None,
) -> MemberRead | None:
    """The member of an OIDC login (``sub`` and ``iat`` of the ID token); a first login creates a viewer.

    Each login (subject, issued_at) keeps one login_sessions row, so idle expiry and the maximum
    age apply as to password logins. An expired login stays ended: its row is kept until the
    maximum age has passed, so the same ID token cannot start it again.

    Args:
        claims: The ID token's claims; ``preferred_username``, ``name`` or ``email`` name a new member.
        role_claim: The claim whose value picks a new member's role through ``role_map``.

    Returns:
        The member; None when the login expired or was issued before the member's credentials
        changed (their logins were revoked).

    Raises:
        AuthenticationFailed: no subject.
    """
    subject = (subject or "").strip()
    if not subject or len(subject) > 255:
        raise AuthenticationFailed("the identity provider sent no usable subject (sub); log in again")
    issued, now = _as_time(issued_at), _now(now)
    member = session.scalar(sa.select(Member).where(Member.oidc_subject == subject))
    if member is None:
        member = _create_oidc_member(session, subject, claims, role_claim, role_map)
    key = hash_token(f"oidc\x00{subject}\x00{int(issued.timestamp())}")
    row = session.scalar(sa.select(LoginSession).where(LoginSession.token_hash == key))
    changed = member.credentials_changed_at
    if now - issued > dt.timedelta(days=max_days) or (
        changed is not None and issued < _aware(changed).replace(microsecond=0)
    ):
        if row is not None:
            session.delete(row)
            session.flush()
        return None
    if row is None:
        row = LoginSession(token_hash=key, member_id=member.id, method=LoginMethod.OIDC, created_at=issued,
                           last_seen_at=now)
        session.add(row)
        session.flush()
        record_event(session, actor=member.id, action="member.login", object_kind="member", object_id=member.id,
                     detail={"method": LoginMethod.OIDC.value})
    elif _expired(row, now, idle_minutes, max_days):
        return None
    _touch(row, now)
    session.flush()
    return MemberRead.model_validate(member)


def link_oidc(session: Session, *, actor: int | None, member_id: int, subject: str) -> MemberRead:
    """Link an OIDC identity (its ``sub``) to an existing member, whose next OIDC login is then theirs.

    Raises:
        PermissionDenied: the actor is not an admin.
        InvalidInput: an empty subject.
        Conflict: the subject is linked to another member.
        NotFound: no such member.
    """
    access.require_admin(session, actor, "link OIDC identities")
    member = get_or_raise(session, Member, member_id, "member")
    subject = (subject or "").strip()
    if not subject or len(subject) > 255:
        raise InvalidInput("the OIDC subject is empty or longer than 255 characters; copy the 'sub' claim exactly")
    other = session.scalar(sa.select(Member).where(Member.oidc_subject == subject, Member.id != member_id))
    if other is not None:
        raise Conflict(f"this OIDC identity is linked to {other.name} already; an admin can link it to one member")
    member.oidc_subject = subject
    session.flush()
    record_event(session, actor=actor, action="member.link_oidc", object_kind="member", object_id=member_id)
    return MemberRead.model_validate(member)


# ------------------------------------------------------------------ API tokens


def create_token(
    session: Session,
    *,
    actor: int | None,
    member_id: int,
    name: str,
    expires_days: int | None = None,
    now: dt.datetime | None = None,
) -> tuple[ApiTokenRead, str]:
    """Create an API token that acts as ``member_id``; the plaintext is returned this once only.

    Viewers may create tokens for themselves (they can only read with them).

    Raises:
        PermissionDenied: the actor is neither the member nor an admin.
        InvalidInput: an empty or long name, or ``expires_days`` outside 1..3650.
        NotFound: no such member.
    """
    _require_self_or_admin(session, actor, member_id, "create API tokens")
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput("an API token needs a name of 1 to 100 characters, e.g. the machine it is for")
    if expires_days is not None and (isinstance(expires_days, bool) or not isinstance(expires_days, int)
                                     or not 1 <= expires_days <= 3650):
        raise InvalidInput(f"expires_days must be a whole number of days from 1 to 3650, got {expires_days!r}")
    now = _now(now)
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(member_id=member_id, name=name, token_hash=hash_token(plain), prefix=plain[:_SHOWN],
                   created_at=now, expires_at=now + dt.timedelta(days=expires_days) if expires_days else None)
    session.add(row)
    session.flush()
    record_event(session, actor=actor, action="token.create", object_kind="api_token", object_id=row.id,
                 detail={"member_id": member_id, "name": name, "expires_days": expires_days})
    return ApiTokenRead.model_validate(row), plain


def list_tokens(session: Session, *, actor: int | None, member_id: int | None = None) -> list[ApiTokenRead]:
    """API tokens, newest first: the actor's own, or (admins) anyone's; ``member_id`` narrows to one member.

    Raises:
        PermissionDenied: a non-admin asked for another member's tokens.
    """
    q = sa.select(ApiToken).order_by(ApiToken.id.desc())
    if member_id is not None:
        _require_self_or_admin(session, actor, member_id, "list the API tokens")
        q = q.where(ApiToken.member_id == member_id)
    elif not access.is_admin(session, actor):
        q = q.where(ApiToken.member_id == actor)
    return [ApiTokenRead.model_validate(t) for t in session.scalars(q)]


def revoke_token(session: Session, *, actor: int | None, token_id: int, now: dt.datetime | None = None) -> None:
    """Revoke an API token at once (revoking it again changes nothing).

    Raises:
        PermissionDenied: the actor neither owns the token nor is an admin.
        NotFound: no such token.
    """
    row = get_or_raise(session, ApiToken, token_id, "API token", "list them with `segboard token list`")
    _require_self_or_admin(session, actor, row.member_id, "revoke the API tokens")
    if row.revoked_at is not None:
        return
    row.revoked_at = _now(now)
    session.flush()
    record_event(session, actor=actor, action="token.revoke", object_kind="api_token", object_id=row.id,
                 detail={"member_id": row.member_id, "name": row.name})


def authenticate_token(session: Session, *, token: str, now: dt.datetime | None = None) -> MemberRead:
    """The member an API token acts as.

    Raises:
        AuthenticationFailed: the token is unknown, revoked or expired (one message for all).
    """
    if not token or len(token) > 512:
        raise AuthenticationFailed(_BAD_TOKEN)
    row = session.scalar(sa.select(ApiToken).where(ApiToken.token_hash == hash_token(token.strip())))
    now = _now(now)
    if row is None or row.revoked_at is not None or (row.expires_at is not None and _aware(row.expires_at) <= now):
        raise AuthenticationFailed(_BAD_TOKEN)
    if row.last_used_at is None or now - _aware(row.last_used_at) >= _TOUCH_EVERY:
        row.last_used_at = now
        session.flush()
    return MemberRead.model_validate(session.get(Member, row.member_id))
