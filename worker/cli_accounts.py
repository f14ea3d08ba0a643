"""``segboard user ...`` and ``segboard token ...``, and who acts for the other write commands.

The user and token commands are an admin's, run on the server: whoever can reach the database
is past every check already, so they act as the system (``actor=None``). The queue's write
commands (submit, cancel, requeue, priority) act as the member of an API token, from ``--token``
or ``SEGBOARD_TOKEN``; with accounts configured they refuse to run without one.

Examples:
    segboard user add ada --role admin --password-stdin < password.txt
    segboard token create --member ada --name laptop --expires-days 90
    SEGBOARD_TOKEN=sbt_... segboard submit configs/baseline.yaml
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "TOKEN_ENV",
    "WRITE_COMMANDS",
    "add_parsers",
    "add_token_option",
    "acting_member",
    "acting_settings",
    "read_password",
]

TOKEN_ENV = "SEGBOARD_TOKEN"
# The commands of worker.cli that change something as a member; add_parsers gives them --token.
WRITE_COMMANDS = ("submit", "cancel", "requeue", "priority")


def add_token_option(parser: argparse.ArgumentParser) -> None:
    """Give a write command the ``--token`` option."""
    parser.add_argument("--token", help=f"API token of the member acting (default: ${TOKEN_ENV}); "
                                        "an admin creates one with `segboard token create`")


def acting_member(args: argparse.Namespace, settings: Any) -> int | None:
    """The member id of the API token in ``--token`` or ``SEGBOARD_TOKEN``.

    Without a token: None (the single user) when no accounts are configured, else an error.

    Raises:
        CliError: accounts are configured and no token was given.
        AuthenticationFailed: the token is unknown, revoked or expired.
    """
    from worker.cli import CliError, _factory
    from worker.db.session import session_scope
    from worker.services.accounts import authenticate_token

    token = (getattr(args, "token", None) or os.environ.get(TOKEN_ENV) or "").strip()
    if not token:
        if settings.accounts_enabled:
            raise CliError(f"this SegBoard has accounts (auth={settings.auth}): set {TOKEN_ENV} or pass --token with "
                           "your API token; an admin creates one with `segboard token create --member NAME`")
        return None
    with session_scope(_factory(settings)) as s:
        return authenticate_token(s, token=token).id


def acting_settings(args: argparse.Namespace) -> tuple[Any, int | None]:
    """The settings of a write command and the member acting (see :func:`acting_member`)."""
    from worker.cli import _settings

    settings = _settings(args)
    return settings, acting_member(args, settings)


def read_password(from_stdin: bool) -> str:
    """A new password: the first line of stdin, or asked twice on the terminal.

    Raises:
        CliError: stdin is empty, or the two answers differ.
    """
    from worker.cli import CliError

    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise CliError("no password on stdin; pipe it in, e.g. `segboard user passwd ada --password-stdin < file`")
        return line
    first = getpass.getpass("New password: ")
    if getpass.getpass("Again: ") != first:
        raise CliError("the two passwords differ; run the command again")
    return first


def _session(args: argparse.Namespace) -> Any:
    from worker.cli import _factory, _settings
    from worker.db.session import session_scope

    return session_scope(_factory(_settings(args)))


def _member_id(s: Any, name: str) -> int:
    from worker.services.members import get_member_by_name

    return get_member_by_name(s, name=name).id


def _fmt(ts: Any) -> str:
    from worker.cli import _fmt_time

    return _fmt_time(ts)


# ------------------------------------------------------------------ user


def cmd_user_add(args: argparse.Namespace) -> int:
    """Add a member, with a password from stdin when asked."""
    from worker.services import accounts, members

    password = read_password(True) if args.password_stdin else None
    with _session(args) as s:
        m = members.create_member(s, actor=None, name=args.name, email=args.email, role=args.role)
        if password is not None:
            accounts.set_password(s, actor=None, member_id=m.id, password=password)
    hint = "" if password else f"; no password yet: `segboard user passwd {m.name}` sets one"
    print(f"member {m.name} added (id {m.id}, role {m.role.value}){hint}")
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    """Set a member's password; their web logins end."""
    from worker.services import accounts

    password = read_password(args.password_stdin)
    with _session(args) as s:
        accounts.set_password(s, actor=None, member_id=_member_id(s, args.name), password=password)
    print(f"password of {args.name} set; their existing logins have ended")
    return 0


def cmd_user_role(args: argparse.Namespace) -> int:
    """Change a member's role."""
    from worker.services import members

    with _session(args) as s:
        m = members.set_member_role(s, actor=None, member_id=_member_id(s, args.name), role=args.role)
    print(f"{m.name} is now {m.role.value}")
    return 0


def cmd_user_link_oidc(args: argparse.Namespace) -> int:
    """Link an OIDC identity (the ID token's sub) to a member."""
    from worker.services import accounts

    with _session(args) as s:
        m = accounts.link_oidc(s, actor=None, member_id=_member_id(s, args.name), subject=args.subject)
    print(f"{m.name} now logs in through OIDC with that subject")
    return 0


def cmd_user_revoke_logins(args: argparse.Namespace) -> int:
    """End every web login of a member."""
    from worker.services import accounts

    with _session(args) as s:
        n = accounts.revoke_logins(s, actor=None, member_id=_member_id(s, args.name))
    print(f"ended {n} login(s) of {args.name} (and their OIDC logins)")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    """List the members with their role and how they log in."""
    from worker.cli import _table
    from worker.services.members import list_members

    with _session(args) as s:
        rows = [[str(m.id), m.name, m.role.value, m.email or "-", "yes" if m.has_password else "no",
                 "yes" if m.oidc_linked else "no", _fmt(m.created_at)] for m in list_members(s)]
    print(_table(rows, ["id", "name", "role", "email", "password", "oidc", "created"]))
    return 0


# ------------------------------------------------------------------ token


def cmd_token_create(args: argparse.Namespace) -> int:
    """Create an API token and print it once."""
    from worker.services import accounts

    with _session(args) as s:
        tok, plain = accounts.create_token(s, actor=None, member_id=_member_id(s, args.member), name=args.name,
                                           expires_days=args.expires_days)
    print(plain)
    expires = f", expires {_fmt(tok.expires_at)}" if tok.expires_at else ""
    print(f"token {tok.id} ({tok.name}) acts as {args.member}{expires}. It will not be shown again: store it now, "
          f"e.g. in {TOKEN_ENV}", file=sys.stderr)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    """List API tokens (never the tokens themselves)."""
    from worker.cli import _table
    from worker.services import accounts
    from worker.services.members import list_members

    with _session(args) as s:
        member_id = _member_id(s, args.member) if args.member else None
        names = {m.id: m.name for m in list_members(s)}
        rows = [[str(t.id), names.get(t.member_id, "?"), t.name, t.prefix + "...", _fmt(t.created_at),
                 _fmt(t.last_used_at), _fmt(t.expires_at), "revoked" if t.revoked_at else "active"]
                for t in accounts.list_tokens(s, actor=None, member_id=member_id)]
    print(_table(rows, ["id", "member", "name", "token", "created", "last used", "expires", "state"]))
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    """Revoke an API token."""
    from worker.services import accounts

    with _session(args) as s:
        accounts.revoke_token(s, actor=None, token_id=args.id)
    print(f"token {args.id} revoked")
    return 0


# ------------------------------------------------------------------ parsers


def add_parsers(sub: Any, services: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``user`` and ``token`` to ``segboard``'s sub-parsers, and ``--token`` to its write commands."""
    for name in WRITE_COMMANDS:
        add_token_option(sub.choices[name])
    roles = ["admin", "member", "viewer"]
    user = sub.add_parser("user", help="members: add, set passwords and roles, link OIDC identities (admin, on the "
                                       "server)")
    us = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")

    def action(parent: Any, name: str, func: Callable[[argparse.Namespace], int], text: str,
               *positional: str) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=text)
        services(p)
        for arg in positional:
            p.add_argument(arg.lower(), metavar=arg)
        p.set_defaults(func=func)
        return p

    add = action(us, "add", cmd_user_add, "add a member", "NAME")
    add.add_argument("--email")
    add.add_argument("--role", choices=roles, default=None,
                     help="default: member (admin for the first member)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    pw = action(us, "passwd", cmd_user_passwd, "set a member's password (ends their logins)", "NAME")
    pw.add_argument("--password-stdin", action="store_true", help="read it from stdin instead of asking twice")
    role = action(us, "role", cmd_user_role, "change a member's role", "NAME")
    role.add_argument("role", choices=roles)
    action(us, "link-oidc", cmd_user_link_oidc, "link an OIDC identity (the ID token's sub claim) to a member",
           "NAME", "SUBJECT")
    action(us, "revoke-logins", cmd_user_revoke_logins, "end every web login of a member", "NAME")
    action(us, "list", cmd_user_list, "list the members")

    token = sub.add_parser("token", help="API tokens for the CLI and the Python client (admin, on the server)")
    ts = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = action(ts, "create", cmd_token_create, "create a token and print it once")
    create.add_argument("--member", required=True, help="the member the token acts as")
    create.add_argument("--name", default="cli", help="what it is for, e.g. the machine (default: cli)")
    create.add_argument("--expires-days", type=int, default=None, help="default: never")
    lst = action(ts, "list", cmd_token_list, "list tokens (their first characters only)")
    lst.add_argument("--member", help="only this member's")
    rv = action(ts, "revoke", cmd_token_revoke, "revoke a token")
    rv.add_argument("id", type=int, help="the token id (see `segboard token list`)")
