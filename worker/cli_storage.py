"""``segboard du``, ``delete``, ``gc``, ``pin`` and ``unpin``: what the artifacts cost, and freeing it.

Kept apart from :mod:`worker.cli`; :func:`add_parsers` is called from
:func:`worker.cli_maintenance.add_parsers`. See ``docs/storage.md``.

Examples:
    segboard du --by experiment
    segboard delete experiment 3             # prints what goes, asks, then deletes
    segboard delete run 12 --cascade --yes   # with the ensembles and submissions made from it
    segboard gc --dry-run && segboard gc
    segboard pin run 12
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["add_parsers", "cmd_du", "cmd_delete", "cmd_gc", "cmd_pin"]

KINDS = ("run", "group", "experiment")


def _size(n: int) -> str:
    from worker.services.disk import format_bytes

    return format_bytes(n)


def cmd_du(args: argparse.Namespace) -> int:
    """Print the disk use per run, group, experiment or dataset, biggest first, with the total."""
    from worker.artifacts import Artifacts
    from worker.cli import _factory, _settings, _table
    from worker.db.session import session_scope
    from worker.services.disk import disk_use

    settings = _settings(args)
    with session_scope(_factory(settings)) as s:
        report = disk_use(s, by=args.by, artifacts=Artifacts.from_settings(settings))
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
        return 0
    rows = [[r.kind, "-" if r.id is None else str(r.id), r.name, r.detail, "pinned" if r.pinned else "",
             str(r.files), _size(r.bytes)] for r in report.rows]
    rows.append(["total", "", report.root, "", "", str(report.total_files), _size(report.total_bytes)])
    print(_table(rows, ["kind", "id", "name", "detail", "pin", "files", "size"]))
    return 0


def _print_plan(plan: Any) -> None:
    print(f"deleting {plan.kind} {plan.id} {plan.name!r}{' with its dependants' if plan.cascade else ''} "
          f"removes {len(plan.objects)} object(s) and {_size(plan.bytes)}:")
    for o in plan.objects:
        print(f"  {o.kind} {o.id} {o.name!r} ({o.why}){' [pinned]' if o.pinned else ''}: {_size(o.bytes)}")
    if plan.dependants and not plan.cascade:
        print("used by (the delete is refused unless --cascade removes them too):")
        for d in plan.dependants:
            print(f"  {d.kind} {d.id} {d.name!r}: {d.why} {d.uses}")
    for b in plan.blockers:
        print(f"blocked: {b}")


def cmd_delete(args: argparse.Namespace) -> int:
    """Show what deleting a run, group or experiment removes; delete it after a confirmation (or ``--yes``)."""
    from worker.artifacts import Artifacts
    from worker.cli import CliError, _factory
    from worker.cli_accounts import acting_settings
    from worker.db.session import session_scope
    from worker.services import deletion

    settings, actor = acting_settings(args)
    arts = Artifacts.from_settings(settings)
    factory = _factory(settings)
    with session_scope(factory) as s:
        plan = deletion.plan_delete(s, kind=args.kind, object_id=args.id, cascade=args.cascade, artifacts=arts)
    _print_plan(plan)
    if args.dry_run or not plan.allowed:
        return 0 if plan.allowed else 1
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError("nothing deleted: pass --yes to delete without a question (or --dry-run to only look)")
        if input("Delete all of this for good? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    with session_scope(factory) as s:
        done = deletion.delete(s, actor=actor, kind=args.kind, object_id=args.id, cascade=args.cascade,
                               artifacts=arts)
    print(f"deleted {len(done.objects)} object(s); freed {_size(done.bytes)}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    """List (``--dry-run``) or remove what the retention policy of the settings removes."""
    from worker.artifacts import Artifacts
    from worker.cli import _factory
    from worker.cli_accounts import acting_settings
    from worker.db.session import session_scope
    from worker.services import retention

    if args.dry_run:
        from worker.cli import _settings

        settings, actor = _settings(args), None
    else:
        settings, actor = acting_settings(args)
    arts = Artifacts.from_settings(settings)
    policy = retention.RetentionPolicy.from_settings(settings)
    with session_scope(_factory(settings)) as s:
        if args.dry_run:
            plan = retention.plan_gc(s, artifacts=arts, policy=policy)
        else:
            plan = retention.run_gc(s, actor=actor, artifacts=arts, policy=policy)
    if args.json:
        print(json.dumps(plan.model_dump(mode="json"), indent=2))
        return 0
    verb = "removed" if plan.applied else "would remove"
    for item in plan.items:
        print(f"{verb} {item.kind} {item.id} {item.what.replace('_', ' ')} ({_size(item.bytes)}): {item.location}")
    for line in plan.kept:
        print(f"kept   {line}")
    days = "keep" if policy.test_store_days is None else f"{policy.test_store_days} days"
    print(f"policy: drop last checkpoints {'yes' if policy.drop_last_checkpoint else 'no'}, test stores {days}; "
          f"{'freed' if plan.applied else 'would free'} {_size(plan.bytes)} in {len(plan.items)} item(s)"
          + ("" if plan.applied or not plan.items else "; run `segboard gc` to do it"))
    return 0


def cmd_pin(args: argparse.Namespace) -> int:
    """Pin or unpin a run, group or experiment."""
    from worker.cli import _factory
    from worker.cli_accounts import acting_settings
    from worker.db.session import session_scope
    from worker.services.retention import set_pinned

    settings, actor = acting_settings(args)
    pinned = args.command == "pin"
    with session_scope(_factory(settings)) as s:
        set_pinned(s, actor=actor, kind=args.kind, object_id=args.id, pinned=pinned)
    print(f"{args.kind} {args.id} {'pinned: no retention policy touches it' if pinned else 'unpinned'}")
    return 0


def add_parsers(sub: Any, services: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``du``, ``delete``, ``gc``, ``pin`` and ``unpin`` to ``segboard``'s sub-parsers."""
    from worker.cli_accounts import add_token_option

    du = sub.add_parser("du", help="disk use of the artifacts per run, group, experiment or dataset, with a total")
    services(du)
    du.add_argument("--by", choices=["run", "group", "experiment", "dataset"], default="experiment")
    du.add_argument("--json", action="store_true", help="print the report as JSON")
    du.set_defaults(func=cmd_du)

    dl = sub.add_parser("delete", help="delete a run, group or experiment with its artifacts")
    services(dl)
    add_token_option(dl)
    dl.add_argument("kind", choices=KINDS)
    dl.add_argument("id", type=int)
    dl.add_argument("--cascade", action="store_true",
                    help="also delete the ensembles, pseudo-label rounds and submissions that use it")
    dl.add_argument("--dry-run", action="store_true", help="only print what would go")
    dl.add_argument("--yes", "-y", action="store_true", help="do not ask for a confirmation")
    dl.set_defaults(func=cmd_delete)

    gc = sub.add_parser("gc", help="apply the retention policy of the settings (--dry-run lists what would go)")
    services(gc)
    add_token_option(gc)
    gc.add_argument("--dry-run", action="store_true", help="list what would go and the bytes freed; change nothing")
    gc.add_argument("--json", action="store_true", help="print the plan as JSON")
    gc.set_defaults(func=cmd_gc)

    for name, text in (("pin", "pin a run, group or experiment: no retention policy touches it"),
                       ("unpin", "unpin a run, group or experiment")):
        p = sub.add_parser(name, help=text)
        services(p)
        add_token_option(p)
        p.add_argument("kind", choices=KINDS)
        p.add_argument("id", type=int)
        p.set_defaults(func=cmd_pin)
