"""``segboard doctor``, ``backup``, ``restore`` (and ``weights``, from :mod:`worker.cli_weights`): parsers, commands.

Kept apart from :mod:`worker.cli` so that module stays about the queue; :func:`add_parsers` is
called by :func:`worker.cli.build_parser`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

__all__ = ["add_parsers", "cmd_doctor", "cmd_backup", "cmd_restore"]


def cmd_doctor(args: argparse.Namespace) -> int:
    """Report (or with ``--fix`` repair) what is inconsistent between the database and the artifact root.

    Returns 0 when nothing is left to report, 1 otherwise.
    """
    from worker.artifacts import Artifacts
    from worker.cli import _factory, _settings
    from worker.db.session import session_scope
    from worker.services import doctor

    settings = _settings(args)
    root = str(settings.artifact_root)
    arts = Artifacts.from_settings(settings)
    with session_scope(_factory(settings)) as s:
        if args.fix:
            report = doctor.repair(s, artifact_root=root, artifacts=arts)
        else:
            report = doctor.examine(s, artifact_root=root, artifacts=arts)
    if args.json:
        print(json.dumps({
            "healthy": report.healthy,
            "findings": [{"problem": f.problem.value, "subject": f.subject, "detail": f.detail,
                          "fixable": f.problem.fixable} for f in report.findings],
            "fixed": [{"problem": f.problem.value, "subject": f.subject, "detail": f.detail} for f in report.fixed],
            "skipped": list(report.skipped),
        }, indent=2))
        return 0 if report.healthy else 1
    for f in report.fixed:
        print(f"fixed  {f.problem.value:14} {f.subject}: {f.detail}")
    for f in report.findings:
        hint = " (doctor --fix repairs it)" if f.problem.fixable else ""
        print(f"found  {f.problem.value:14} {f.subject}: {f.detail}{hint}")
    for line in report.skipped:
        print(f"skipped {line}")
    print("healthy" if report.healthy else f"{len(report.findings)} problem(s) left")
    return 0 if report.healthy else 1


def cmd_backup(args: argparse.Namespace) -> int:
    """Back the database and the artifact manifests up into a new folder."""
    from worker.backup import backup
    from worker.cli import _settings

    report = backup(_settings(args), args.dest)
    print(f"backed up the {report.database} database (revision {report.revision}) and {report.manifests} "
          f"artifact manifest(s) into {report.folder}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Replace the database with a backup; put back missing manifests."""
    from worker.backup import restore
    from worker.cli import CliError, _settings
    from worker.queue.embedded import embedded_broker_url

    settings = _settings(args)
    if embedded_broker_url(settings) is not None and not args.force:
        raise CliError("`segboard up` is running on this home: stop it (and every worker) before a restore, "
                       "or pass --force")
    report = restore(settings, args.src)
    print(f"restored the {report.database} database from {report.folder} (now at revision {report.revision}); "
          f"put back {report.manifests} missing artifact manifest(s)")
    return 0


def add_parsers(sub: Any, services: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the maintenance commands to ``segboard``'s sub-parsers."""
    dr = sub.add_parser("doctor", help="check the database against the artifact root (--fix repairs)")
    services(dr)
    dr.add_argument("--fix", action="store_true",
                    help="requeue runs with dead leases, move unknown folders aside, remove dead writers' temp files")
    dr.add_argument("--json", action="store_true", help="print the report as JSON")
    dr.set_defaults(func=cmd_doctor)

    bk = sub.add_parser("backup", help="back the database (consistent while running) and artifact manifests up")
    services(bk)
    bk.add_argument("dest", help="a new folder")
    bk.set_defaults(func=cmd_backup)

    rs = sub.add_parser("restore", help="replace the database with a backup made by `segboard backup`")
    services(rs)
    rs.add_argument("src", help="the backup folder")
    rs.add_argument("--force", action="store_true", help="restore even though `segboard up` is running")
    rs.set_defaults(func=cmd_restore)

    from worker import cli_weights  # `segboard weights`: this machine's pretrained-weights cache

    cli_weights.add_parsers(sub)
    from worker import cli_sweeps  # `segboard sweep`: searches with a budget of trials

    cli_sweeps.add_parsers(sub, services)
    from worker import cli_storage  # `segboard du`, `delete`, `gc`, `pin`, `unpin`: docs/storage.md

    cli_storage.add_parsers(sub, services)
    from worker import cli_notifications  # `segboard notify`: webhooks told when work ends

    cli_notifications.add_parsers(sub, services)
