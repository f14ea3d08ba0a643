"""``segboard doctor`` (and the other maintenance commands): parsers and commands.

Kept apart from :mod:`worker.cli` so that module stays about the queue; :func:`add_parsers` is
called by :func:`worker.cli.build_parser`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

__all__ = ["add_parsers", "cmd_doctor"]


def cmd_doctor(args: argparse.Namespace) -> int:
    """Report (or with ``--fix`` repair) what is inconsistent between the database and the artifact root.

    Returns 0 when nothing is left to report, 1 otherwise.
    """
    from worker.cli import _factory, _settings
    from worker.db.session import session_scope
    from worker.services import doctor

    settings = _settings(args)
    root = str(settings.artifact_root)
    with session_scope(_factory(settings)) as s:
        if args.fix:
            report = doctor.repair(s, artifact_root=root)
        else:
            report = doctor.examine(s, artifact_root=root)
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


def add_parsers(sub: Any, services: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the maintenance commands to ``segboard``'s sub-parsers."""
    dr = sub.add_parser("doctor", help="check the database against the artifact root (--fix repairs)")
    services(dr)
    dr.add_argument("--fix", action="store_true",
                    help="requeue runs with dead leases, move unknown folders aside, remove dead writers' temp files")
    dr.add_argument("--json", action="store_true", help="print the report as JSON")
    dr.set_defaults(func=cmd_doctor)
