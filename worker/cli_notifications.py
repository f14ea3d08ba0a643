"""``segboard notify ...``: webhooks told when runs, groups, sweeps, ensembles, rounds and submissions end.

Kept apart from :mod:`worker.cli`; :func:`add_parsers` is called by
:func:`worker.cli_maintenance.add_parsers`. The commands that change hooks act as the member of
``--token`` / ``SEGBOARD_TOKEN`` (see :mod:`worker.cli_accounts`); ``send-pending`` is the server's,
like ``segboard reaper``. A hook's URL is read once and never printed again (docs/notifications.md).

Examples:
    segboard notify add --format slack --url-stdin < slack-url.txt
    segboard notify add --format discord --experiment 12 --url https://discord.com/api/webhooks/...
    segboard notify list
    segboard notify test 3
    segboard notify send-pending
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["add_parsers"]


def _session(args: argparse.Namespace) -> Any:
    from worker.cli import _factory, _settings
    from worker.db.session import session_scope

    return session_scope(_factory(_settings(args)))


def _scope(s: Any, args: argparse.Namespace) -> dict[str, Any]:
    from worker.services.members import get_member_by_name

    out: dict[str, Any] = {}
    if getattr(args, "member", None):
        out["member_id"] = get_member_by_name(s, name=args.member).id
    if getattr(args, "experiment", None) is not None:
        out["experiment_id"] = args.experiment
    return out


def _url(args: argparse.Namespace) -> str:
    from worker.cli import CliError

    if args.url_stdin:
        line = sys.stdin.readline().strip()
        if not line:
            raise CliError("no URL on stdin; pipe it in: `segboard notify add --format slack --url-stdin < url.txt`")
        return line
    if not args.url:
        raise CliError("give the webhook URL with --url-stdin (kept out of the shell history) or --url")
    return str(args.url)


def _hook_line(h: Any) -> str:
    scope = f"member {h.member_id}" if h.member_id is not None else f"experiment {h.experiment_id}"
    state = "enabled" if h.enabled else "paused"
    name = f" {h.name!r}" if h.name else ""
    return f"{h.id:>4}  {h.payload_format.value:8} {scope:16} {','.join(h.events):18} {state:8} {h.url_display}{name}"


def cmd_add(args: argparse.Namespace) -> int:
    """Add a hook (the acting member's own, a member's, or an experiment's)."""
    from worker.cli_accounts import acting_settings
    from worker.services import notifications

    url = _url(args)
    _, actor = acting_settings(args)
    events = [e for e in (args.events or "").split(",") if e.strip()] or None
    with _session(args) as s:
        hook = notifications.add_hook(s, actor=actor, url=url, payload_format=args.format, name=args.name or "",
                                      events=events, **_scope(s, args))
    print(f"added notification hook {hook.id} ({hook.payload_format.value}) to {hook.url_display}; "
          f"try it with `segboard notify test {hook.id}`")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """List the hooks the acting member manages (an admin, or no accounts: all)."""
    from worker.cli_accounts import acting_settings
    from worker.services import notifications

    _, actor = acting_settings(args)
    with _session(args) as s:
        hooks = notifications.list_hooks(s, actor=actor, **_scope(s, args))
    if args.json:
        print(json.dumps([h.model_dump(mode="json") for h in hooks], indent=2))
    elif not hooks:
        print("no notification hooks; add one with `segboard notify add --format slack --url-stdin`")
    else:
        print("\n".join(_hook_line(h) for h in hooks))
    return 0


def _change(action: str) -> Callable[[argparse.Namespace], int]:
    def cmd(args: argparse.Namespace) -> int:
        from worker.cli_accounts import acting_settings
        from worker.services import notifications

        _, actor = acting_settings(args)
        with _session(args) as s:
            if action == "remove":
                notifications.remove_hook(s, actor=actor, hook_id=args.hook)
            else:
                notifications.set_hook_enabled(s, actor=actor, hook_id=args.hook, enabled=action == "enable")
        print(f"notification hook {args.hook}: {'removed' if action == 'remove' else action + 'd'}")
        return 0

    cmd.__doc__ = f"{action.capitalize()} a hook."
    return cmd


def cmd_test(args: argparse.Namespace) -> int:
    """Queue a test message to a hook and send it now; print what the endpoint answered."""
    from worker.cli import CliError, _factory
    from worker.cli_accounts import acting_settings
    from worker.db.session import session_scope
    from worker.services import notifications

    settings, actor = acting_settings(args)
    factory = _factory(settings)
    with session_scope(factory) as s:
        delivery = notifications.queue_test(s, actor=actor, hook_id=args.hook)
    notifications.send_pending(factory, settings=settings, delivery_ids=[delivery.id])
    with session_scope(factory) as s:
        after = notifications.list_deliveries(s, actor=actor, hook_id=args.hook, limit=20)
    row = next((d for d in after if d.id == delivery.id), None)
    if row is not None and row.status.value == "sent":
        print(f"test message {delivery.id} delivered to hook {args.hook}")
        return 0
    error = row.last_error if row is not None else "the hook was removed"
    more = " (the sender retries it)" if row is not None and row.status.value == "pending" else ""
    raise CliError(f"test message {delivery.id} to hook {args.hook} was not accepted: {error}{more}")


def cmd_send_pending(args: argparse.Namespace) -> int:
    """One pass of the sender, as the reaper makes every interval."""
    from worker.cli import _factory, _settings
    from worker.services import notifications

    settings = _settings(args)
    report = notifications.send_pending(_factory(settings), settings=settings, limit=args.limit)
    print(f"sent {report.sent}, to retry {report.retrying}, given up {report.gave_up}")
    return 0


def cmd_deliveries(args: argparse.Namespace) -> int:
    """The latest deliveries of the hooks the acting member manages."""
    from worker.cli import _fmt_time
    from worker.cli_accounts import acting_settings
    from worker.services import notifications

    _, actor = acting_settings(args)
    with _session(args) as s:
        rows = notifications.list_deliveries(s, actor=actor, hook_id=args.hook, status=args.status, limit=args.limit)
    if args.json:
        print(json.dumps([d.model_dump(mode="json") for d in rows], indent=2))
        return 0
    for d in rows:
        print(f"{d.id:>5}  hook {d.hook_id:<4} {d.status.value:8} {d.attempts} attempt(s)  "
              f"{_fmt_time(d.created_at)}  {d.text}" + (f"\n       last error: {d.last_error}" if d.last_error else ""))
    if not rows:
        print("no deliveries yet")
    return 0


def add_parsers(sub: Any, services: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``notify add|list|enable|disable|remove|test|deliveries|send-pending`` to ``segboard``."""
    from worker.cli_accounts import add_token_option
    from worker.services.notifications import EVENTS

    nt = sub.add_parser("notify", help="webhooks (Slack, Discord) told when runs, groups, ensembles ... end")
    nsub = nt.add_subparsers(dest="notify_command", required=True, metavar="ACTION")

    def parser(name: str, text: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = nsub.add_parser(name, help=text)
        services(p)
        add_token_option(p)
        p.set_defaults(func=func)
        return p

    ad = parser("add", "add a webhook for your objects (or --member's, or --experiment's runs and groups)", cmd_add)
    where = ad.add_mutually_exclusive_group(required=True)
    where.add_argument("--url-stdin", action="store_true", help="read the URL from stdin (kept out of shell history)")
    where.add_argument("--url", help="the webhook URL (a secret: it is never shown again)")
    ad.add_argument("--format", required=True, choices=["slack", "discord"], help="the JSON the endpoint expects")
    scope = ad.add_mutually_exclusive_group()
    scope.add_argument("--member", help="the member whose objects it reports (default: you)")
    scope.add_argument("--experiment", type=int, help="report this experiment's runs and groups instead")
    ad.add_argument("--name", help="a label for lists")
    ad.add_argument("--events", help=f"comma-separated, from {','.join(EVENTS)} (default: all)")

    ls = parser("list", "list the hooks you manage (URLs masked)", cmd_list)
    ls.add_argument("--member", help="only this member's hooks")
    ls.add_argument("--experiment", type=int, help="only this experiment's hooks")
    ls.add_argument("--json", action="store_true", help="print JSON")

    for action, text in (("enable", "resume a paused hook"), ("disable", "pause a hook (what waits, waits)"),
                         ("remove", "delete a hook and its deliveries")):
        parser(action, text, _change(action)).add_argument("hook", type=int, help="hook id (`segboard notify list`)")
    parser("test", "send a test message to a hook now", cmd_test).add_argument("hook", type=int, help="hook id")

    dl = parser("deliveries", "the latest messages, their attempts and last errors", cmd_deliveries)
    dl.add_argument("--hook", type=int, help="only this hook's")
    dl.add_argument("--status", choices=["pending", "sent", "failed"])
    dl.add_argument("--limit", type=int, default=20)
    dl.add_argument("--json", action="store_true", help="print JSON")

    sp = parser("send-pending", "post the due messages once (the reaper does so every pass)", cmd_send_pending)
    sp.add_argument("--limit", type=int, default=100, help="at most this many attempts")
