"""Accounts: password hashing, web logins with idle and maximum age, OIDC identities, API tokens, and who may
manage whose credentials."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from worker.db.models import ApiToken, AuditEvent, LoginSession, Member, MemberRole
from worker.errors import AuthenticationFailed, Conflict, InvalidInput, PermissionDenied
from worker.services import accounts

T0 = dt.datetime(2027, 3, 1, 9, 0, tzinfo=dt.timezone.utc)
PW = "correct horse battery"
OIDC = {"role_claim": None, "role_map": {}, "idle_minutes": 30, "max_days": 1}


def _member(s: Any, name: str, role: MemberRole = MemberRole.MEMBER) -> int:
    m = Member(name=name, role=role)
    s.add(m)
    s.flush()
    return m.id


@pytest.fixture
def team(session: Any) -> dict[str, int]:
    ids = {"admin": _member(session, "ada", MemberRole.ADMIN), "bob": _member(session, "bob"),
           "cy": _member(session, "cy"), "viewer": _member(session, "vic", MemberRole.VIEWER)}
    session.commit()
    return ids


def _at(minutes: float = 0, days: float = 0) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes, days=days)


# ------------------------------------------------------------------ passwords


def test_the_stored_hash_is_argon2_and_not_the_password(session: Any, team: dict[str, int]) -> None:
    accounts.set_password(session, actor=team["bob"], member_id=team["bob"], password=PW)
    stored = session.get(Member, team["bob"]).password_hash
    assert stored.startswith("$argon2") and PW not in stored
    me = accounts.authenticate_password(session, name="bob", password=PW)
    assert me.id == team["bob"] and me.has_password and not me.oidc_linked
    assert "password_hash" not in me.model_dump() and "oidc_subject" not in me.model_dump()
    event = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "member.set_password")).one()
    assert PW not in str(event.detail) and event.actor_id == team["bob"]


def test_wrong_password_unknown_name_and_no_password_give_one_message(session: Any, team: dict[str, int]) -> None:
    accounts.set_password(session, actor=None, member_id=team["bob"], password=PW)
    messages = set()
    for name, password in (("bob", PW + "x"), ("nobody", PW), ("cy", PW)):  # cy has no password
        with pytest.raises(AuthenticationFailed) as err:
            accounts.authenticate_password(session, name=name, password=password)
        messages.add(str(err.value))
    assert messages == {"wrong name or password"}


def test_password_length_is_bounded_and_not_echoed(session: Any, team: dict[str, int]) -> None:
    for bad in ("short pw", "x" * 1025):
        with pytest.raises(InvalidInput) as err:
            accounts.set_password(session, actor=None, member_id=team["bob"], password=bad)
        assert bad not in str(err.value)
    assert session.get(Member, team["bob"]).password_hash is None


def test_an_outdated_hash_is_replaced_at_the_next_login(session: Any, team: dict[str, int]) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PW)
    session.get(Member, team["bob"]).password_hash = weak
    session.flush()
    accounts.authenticate_password(session, name="bob", password=PW)
    stored = session.get(Member, team["bob"]).password_hash
    assert stored != weak and not PasswordHasher().check_needs_rehash(stored)


# ------------------------------------------------------------------ web logins


def test_idle_expiry_and_maximum_age_with_an_injected_clock(any_session: Any) -> None:
    s = any_session
    bob = _member(s, "bob")
    limits = {"idle_minutes": 30, "max_days": 1}
    token = accounts.start_login(s, member_id=bob, now=T0)
    assert s.scalar(sa.select(LoginSession.token_hash)) == accounts.hash_token(token) != token
    assert accounts.resolve_login(s, token=token, now=_at(20), **limits).id == bob
    assert accounts.resolve_login(s, token=token, now=_at(51), **limits) is None  # 31 idle minutes
    assert s.scalar(sa.select(sa.func.count(LoginSession.id))) == 0  # the expired row is gone
    # used every 25 minutes, a login still ends a day after it began
    token = accounts.start_login(s, member_id=bob, now=T0)
    minute = 0
    while minute + 25 <= 24 * 60:
        minute += 25
        assert accounts.resolve_login(s, token=token, now=_at(minute), **limits) is not None, minute
    assert accounts.resolve_login(s, token=token, now=_at(minute + 25), **limits) is None
    assert accounts.resolve_login(s, token="not-a-token", now=T0, **limits) is None


def test_last_seen_moves_at_most_once_a_minute(any_session: Any) -> None:
    s = any_session
    token = accounts.start_login(s, member_id=_member(s, "bob"), now=T0)
    accounts.resolve_login(s, token=token, idle_minutes=30, max_days=1, now=T0 + dt.timedelta(seconds=30))
    assert s.scalar(sa.select(LoginSession.last_seen_at)) == T0
    accounts.resolve_login(s, token=token, idle_minutes=30, max_days=1, now=_at(2))
    assert s.scalar(sa.select(LoginSession.last_seen_at)) == _at(2)


def test_logout_and_a_password_change_end_logins(any_session: Any) -> None:
    s = any_session
    bob, cy = _member(s, "bob"), _member(s, "cy")
    first, second = (accounts.start_login(s, member_id=bob, now=T0) for _ in range(2))
    other = accounts.start_login(s, member_id=cy, now=T0)
    accounts.end_login(s, token=first)
    assert accounts.resolve_login(s, token=first, idle_minutes=30, max_days=1, now=_at(1)) is None
    accounts.end_login(s, token="unknown")  # ignored
    accounts.set_password(s, actor=bob, member_id=bob, password=PW)
    assert accounts.resolve_login(s, token=second, idle_minutes=30, max_days=1, now=_at(1)) is None
    assert accounts.resolve_login(s, token=other, idle_minutes=30, max_days=1, now=_at(1)).id == cy


def test_revoke_logins_is_for_the_member_or_an_admin(session: Any, team: dict[str, int]) -> None:
    for _ in range(2):
        accounts.start_login(session, member_id=team["bob"])
    with pytest.raises(PermissionDenied, match="only they or an admin"):
        accounts.revoke_logins(session, actor=team["cy"], member_id=team["bob"])
    assert accounts.revoke_logins(session, actor=team["admin"], member_id=team["bob"]) == 2
    assert accounts.revoke_logins(session, actor=team["bob"], member_id=team["bob"]) == 0
    assert session.get(Member, team["bob"]).credentials_changed_at is not None


# ------------------------------------------------------------------ API tokens


def test_token_create_authenticate_list_and_revoke(any_session: Any) -> None:
    s = any_session
    bob = _member(s, "bob")
    tok, plain = accounts.create_token(s, actor=bob, member_id=bob, name="laptop", now=T0)
    assert plain.startswith("sbt_") and plain.startswith(tok.prefix) and len(tok.prefix) == 12
    assert s.get(ApiToken, tok.id).token_hash == accounts.hash_token(plain) != plain
    assert "token_hash" not in tok.model_dump()
    assert accounts.authenticate_token(s, token=plain, now=_at(1)).id == bob
    assert s.get(ApiToken, tok.id).last_used_at == _at(1)
    accounts.authenticate_token(s, token=plain, now=_at(1.5))  # within the minute: no write
    assert s.get(ApiToken, tok.id).last_used_at == _at(1)
    accounts.authenticate_token(s, token=plain, now=_at(3))
    assert s.get(ApiToken, tok.id).last_used_at == _at(3)
    assert [t.id for t in accounts.list_tokens(s, actor=bob)] == [tok.id]
    accounts.revoke_token(s, actor=bob, token_id=tok.id, now=_at(4))
    accounts.revoke_token(s, actor=bob, token_id=tok.id)  # again: nothing changes
    assert s.get(ApiToken, tok.id).revoked_at == _at(4)
    for token in (plain, plain[:-1] + ("A" if plain[-1] != "A" else "B"), ""):
        with pytest.raises(AuthenticationFailed, match="unknown, revoked or expired"):
            accounts.authenticate_token(s, token=token, now=_at(5))


def test_a_token_expires(any_session: Any) -> None:
    s = any_session
    bob = _member(s, "bob")
    tok, plain = accounts.create_token(s, actor=None, member_id=bob, name="ci", expires_days=1, now=T0)
    assert tok.expires_at == _at(days=1)
    assert accounts.authenticate_token(s, token=plain, now=_at(days=0.9)).id == bob
    with pytest.raises(AuthenticationFailed):
        accounts.authenticate_token(s, token=plain, now=_at(days=1.1))
    with pytest.raises(InvalidInput, match="expires_days"):
        accounts.create_token(s, actor=None, member_id=bob, name="ci", expires_days=0)


def test_token_rules_by_role(session: Any, team: dict[str, int]) -> None:
    admin, bob, cy, viewer = team["admin"], team["bob"], team["cy"], team["viewer"]
    own, _ = accounts.create_token(session, actor=viewer, member_id=viewer, name="read-only")  # viewers may
    bobs, _ = accounts.create_token(session, actor=admin, member_id=bob, name="for bob")
    with pytest.raises(PermissionDenied):
        accounts.create_token(session, actor=viewer, member_id=bob, name="x")
    with pytest.raises(PermissionDenied):
        accounts.create_token(session, actor=cy, member_id=bob, name="x")
    with pytest.raises(PermissionDenied):
        accounts.list_tokens(session, actor=cy, member_id=bob)
    with pytest.raises(PermissionDenied):
        accounts.revoke_token(session, actor=cy, token_id=bobs.id)
    assert accounts.list_tokens(session, actor=cy) == []
    assert [t.id for t in accounts.list_tokens(session, actor=viewer)] == [own.id]
    assert {t.id for t in accounts.list_tokens(session, actor=admin)} == {own.id, bobs.id}
    assert [t.id for t in accounts.list_tokens(session, actor=admin, member_id=bob)] == [bobs.id]
    accounts.revoke_token(session, actor=admin, token_id=own.id)


# ------------------------------------------------------------------ OIDC


def test_a_first_oidc_login_creates_a_viewer_keyed_by_sub(any_session: Any) -> None:
    s = any_session
    _member(s, "grace")  # the name is taken: the new member gets another
    claims = {"sub": "abc-123", "preferred_username": "grace", "email": "grace@example.org"}
    first = accounts.resolve_oidc_login(s, subject="abc-123", issued_at=T0, claims=claims, now=_at(1), **OIDC)
    assert first.role is MemberRole.VIEWER and first.oidc_linked and not first.has_password
    assert first.name == "grace-2" and first.email == "grace@example.org"
    assert s.get(Member, first.id).oidc_subject == "abc-123"
    event = s.scalars(sa.select(AuditEvent).where(AuditEvent.action == "member.oidc_create")).one()
    assert event.object_id == first.id
    # the same login again, and a later login: the same member, no second one
    again = accounts.resolve_oidc_login(s, subject="abc-123", issued_at=int(T0.timestamp()), claims=claims,
                                        now=_at(2), **OIDC)
    later = accounts.resolve_oidc_login(s, subject="abc-123", issued_at=_at(days=0.5), claims=claims,
                                        now=_at(days=0.5, minutes=1), **OIDC)
    assert again.id == later.id == first.id
    assert s.scalar(sa.select(sa.func.count(Member.id)).where(Member.oidc_subject.is_not(None))) == 1


def test_the_role_map_picks_a_first_login_s_role(session: Any) -> None:
    mapping = {**OIDC, "role_claim": "groups", "role_map": {"ml-leads": "admin", "ml": "member"}}
    lead = accounts.resolve_oidc_login(session, subject="s1", issued_at=T0, now=_at(1),
                                       claims={"name": "Lea", "groups": ["ml", "ml-leads"]}, **mapping)
    dev = accounts.resolve_oidc_login(session, subject="s2", issued_at=T0, now=_at(1),
                                      claims={"email": "dev@example.org", "groups": "ml"}, **mapping)
    guest = accounts.resolve_oidc_login(session, subject="s3", issued_at=T0, now=_at(1),
                                        claims={"groups": ["sales"]}, **mapping)
    assert (lead.role, dev.role, guest.role) == (MemberRole.ADMIN, MemberRole.MEMBER, MemberRole.VIEWER)
    assert (lead.name, dev.name, guest.name) == ("Lea", "dev@example.org", "user-s3")


def test_oidc_logins_expire_and_are_revoked_by_a_credentials_change(any_session: Any) -> None:
    s = any_session
    kw: dict[str, Any] = {"subject": "sub-9", "claims": {"preferred_username": "nia"}, **OIDC}
    nia = accounts.resolve_oidc_login(s, issued_at=T0, now=_at(1), **kw)
    assert accounts.resolve_oidc_login(s, issued_at=T0, now=_at(40), **kw) is None  # idle 39 minutes
    assert accounts.resolve_oidc_login(s, issued_at=T0, now=_at(41), **kw) is None  # and it stays ended
    assert accounts.resolve_oidc_login(s, issued_at=_at(60), now=_at(61), **kw).id == nia.id  # a new login
    assert accounts.resolve_oidc_login(s, issued_at=_at(60), now=_at(60, days=1.1), **kw) is None  # max age
    accounts.resolve_oidc_login(s, issued_at=_at(120), now=_at(121), **kw)
    accounts.revoke_logins(s, actor=nia.id, member_id=nia.id, now=_at(122))
    assert accounts.resolve_oidc_login(s, issued_at=_at(120), now=_at(123), **kw) is None
    assert accounts.resolve_oidc_login(s, issued_at=_at(124), now=_at(125), **kw).id == nia.id
    accounts.set_password(s, actor=None, member_id=nia.id, password=PW, now=_at(126))
    assert accounts.resolve_oidc_login(s, issued_at=_at(124), now=_at(127), **kw) is None
    with pytest.raises(AuthenticationFailed):
        accounts.resolve_oidc_login(s, issued_at=T0, now=_at(1), **{**kw, "subject": " "})


def test_link_oidc_gives_an_existing_member_their_identity(session: Any, team: dict[str, int]) -> None:
    linked = accounts.link_oidc(session, actor=team["admin"], member_id=team["bob"], subject="corp|bob")
    assert linked.oidc_linked and "corp|bob" not in linked.model_dump_json()
    me = accounts.resolve_oidc_login(session, subject="corp|bob", issued_at=T0, claims={"name": "Robert"},
                                     now=_at(1), **OIDC)
    assert me.id == team["bob"] and me.role is MemberRole.MEMBER
    with pytest.raises(Conflict, match="linked to bob already"):
        accounts.link_oidc(session, actor=team["admin"], member_id=team["cy"], subject="corp|bob")
    with pytest.raises(PermissionDenied, match="only admins"):
        accounts.link_oidc(session, actor=team["bob"], member_id=team["bob"], subject="corp|other")
    with pytest.raises(InvalidInput):
        accounts.link_oidc(session, actor=None, member_id=team["cy"], subject="  ")


# ------------------------------------------------------------------ who may do what


@pytest.mark.parametrize("who", ["cy", "viewer"])
def test_admin_or_self_operations_are_refused_to_others(session: Any, team: dict[str, int], who: str) -> None:
    actor, bob = team[who], team["bob"]
    token, _ = accounts.create_token(session, actor=None, member_id=bob, name="bob's")
    refused = [
        lambda: accounts.set_password(session, actor=actor, member_id=bob, password=PW),
        lambda: accounts.revoke_logins(session, actor=actor, member_id=bob),
        lambda: accounts.create_token(session, actor=actor, member_id=bob, name="x"),
        lambda: accounts.list_tokens(session, actor=actor, member_id=bob),
        lambda: accounts.revoke_token(session, actor=actor, token_id=token.id),
        lambda: accounts.link_oidc(session, actor=actor, member_id=bob, subject="s"),
        lambda: accounts.link_oidc(session, actor=actor, member_id=actor, subject="s"),
    ]
    for call in refused:
        with pytest.raises(PermissionDenied):
            call()
    # and each is allowed to the member themself (link_oidc: admins only) and to an admin
    accounts.set_password(session, actor=actor, member_id=actor, password=PW)
    accounts.set_password(session, actor=team["admin"], member_id=bob, password=PW)
    accounts.revoke_token(session, actor=team["admin"], token_id=token.id)
    assert session.get(ApiToken, token.id).revoked_at is not None
