"""The ``segboard`` command line.

Settings come from ``SEGBOARD_*`` variables or ``SEGBOARD_SETTINGS_FILE`` (see
:mod:`worker.settings`). Every expected error prints one line, ``segboard: error: ...``, and
exits with code 2; no traceback.

Examples:
    segboard db upgrade
    segboard up                                   # Redis, SQLite, a CPU worker, the web app
    segboard worker --gpus 0,1
    segboard submit configs/baseline.yaml --folds 5 --seeds 0,1 --priority 5
    segboard runs --status running
    segboard cancel 12
    segboard logs 12 --follow
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worker import cli_accounts

__all__ = ["main", "build_parser", "CliError"]

EXIT_ERROR = 2


class CliError(Exception):
    """An expected problem; its message is printed as one line."""


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return "; ".join(lines) if lines else "unknown error"


# ------------------------------------------------------------------ shared plumbing


def _settings(args: argparse.Namespace) -> Any:
    from worker.settings import get_settings

    overrides: dict[str, Any] = {}
    for name in ("database_url", "redis_url"):
        value = getattr(args, name, None)
        if value:
            overrides[name] = value
    return get_settings(**overrides)


def _factory(settings: Any) -> Any:
    from worker.db.session import make_engine, make_session_factory

    return make_session_factory(make_engine(settings))


def _broker_url(settings: Any) -> str | None:
    if settings.redis_url:
        return str(settings.redis_url)
    from worker.queue.embedded import embedded_broker_url

    return embedded_broker_url(settings)


def _submit(settings: Any, factory: Any, work: Any, *, queued: Any) -> tuple[Any, str]:
    """Commit ``work(session)``, then publish what it queued; say where the messages went."""
    from worker.services.outbox import Published, celery_sender, commit_then_publish

    url = _broker_url(settings)
    app = None
    if url is not None:
        from worker.queue.celery_app import make_celery

        app = make_celery(settings, broker_url=url)
    try:
        result, sent = commit_then_publish(factory, work, queued=queued,
                                           send=None if app is None else celery_sender(app, factory))
    finally:
        if app is not None:
            app.close()
    wanted = queued(result)
    return result, _where(sent if wanted else Published(0), len(wanted.run_ids) + len(wanted.job_ids))


def _where(sent: Any, wanted: int) -> str:
    if sent.problem:
        return sent.problem
    if sent.sent < wanted:  # a running reaper publishes queued runs it finds, possibly before this call
        return f"published {sent.sent} message(s); the reaper had already published the other {wanted - sent.sent}"
    return f"published {sent.sent} message(s)"


def _fmt_time(ts: Any) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S") if ts is not None else "-"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


# ------------------------------------------------------------------ commands


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from worker.db.migrate import current, upgrade

    settings = _settings(args)
    upgrade(str(settings.database_url))
    print(f"database {settings.database_url} is at revision {current(str(settings.database_url))}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from worker.queue.embedded import run_up

    return run_up(_settings(args), gpus=args.gpus, ddp=args.ddp, webapp=not args.no_webapp, port=args.port,
                  host=args.host)


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.artifacts import Artifacts
    from worker.execution.process import parse_devices, run_worker

    settings = _settings(args)
    try:
        devices = parse_devices(args.gpus, ddp=args.ddp)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    url = _broker_url(settings)
    if url is None:
        raise CliError("no Redis to take jobs from: set SEGBOARD_REDIS_URL, pass --redis-url, or start `segboard up`")
    Artifacts.from_settings(settings).check()  # an unreachable artifact root: say so before taking jobs
    return run_worker(settings, devices=devices, broker_url=url, loglevel=args.loglevel)


def cmd_reaper(args: argparse.Namespace) -> int:
    from worker.queue.celery_app import make_celery
    from worker.queue.reaper import Reaper

    settings = _settings(args)
    url = _broker_url(settings)
    if url is None:
        raise CliError("no Redis to publish to: set SEGBOARD_REDIS_URL or pass --redis-url")
    reaper = Reaper(make_celery(settings, broker_url=url), _factory(settings), settings)
    if args.once:
        report = reaper.run_once()
        print(f"published runs {list(report.runs)} and jobs {list(report.jobs)}")
        return 0
    import signal

    signal.signal(signal.SIGTERM, lambda *_: reaper.stop())
    try:
        reaper.loop()
    except KeyboardInterrupt:
        reaper.stop()
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from segcore.config import load_config
    from worker.services.confinement import data_roots
    from worker.services.experiments import create_experiment
    from worker.services.outbox import Queued

    config = load_config(args.config)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise CliError(f"--seeds {args.seeds!r} must be integers separated by commas, e.g. 0,1,2") from None
    grid = None
    if args.grid:
        axis, _, values = args.grid.partition("=")
        if not values:
            raise CliError("--grid must look like model.encoder=resnet18,resnet34")
        grid = {"axis": axis.strip(), "values": [_scalar(v) for v in values.split(",")]}
    settings, actor = cli_accounts.acting_settings(args)
    exp, where = _submit(
        settings, _factory(settings),
        lambda s: create_experiment(s, actor=actor, name=args.name, config=config, n_folds=args.folds,
                                    seeds=seeds or [0], grid=grid, priority=args.priority, tags=args.tag or [],
                                    note=args.note or "", roots=data_roots(settings)),
        queued=lambda e: Queued.of(run_ids=e.run_ids),
    )
    print(f"experiment {exp.id}: queued runs {', '.join(map(str, exp.run_ids))} ({where})")
    return 0


def _scalar(text: str) -> Any:
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_runs(args: argparse.Namespace) -> int:
    from worker.db.session import session_scope
    from worker.services.runs import list_runs

    settings = _settings(args)
    with session_scope(_factory(settings)) as s:
        runs = list_runs(s, status=args.status, limit=args.limit, order="newest")
    rows = []
    for r in runs:
        epoch = f"{r.current_epoch or 0}/{r.total_epochs or '?'}"
        score = f"{r.monitor_metric}={r.monitor_value:.4f}" if r.monitor_value is not None else "-"
        cancelling = " (cancelling)" if r.cancel_requested and r.status.value == "running" else ""
        rows.append([str(r.id), r.status.value + cancelling,
                     r.name[:40], epoch, score, r.worker_name or "-", str(r.priority), _fmt_time(r.queued_at)])
    print(_table(rows, ["id", "status", "name", "epoch", "best", "worker", "prio", "queued"]))
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from worker.db.session import session_scope
    from worker.services.jobs import list_jobs

    settings = _settings(args)
    with session_scope(_factory(settings)) as s:
        jobs = list_jobs(s, status=args.status, kind=args.kind, limit=args.limit)
    rows = [[str(j.id), j.kind.value, j.status.value + (" (cancelling)" if j.cancel_requested and
                                                         j.status.value == "running" else ""),
             json.dumps(j.target, separators=(",", ":"))[:40], j.worker_name or "-", str(j.priority),
             _fmt_time(j.queued_at), (_one_line(j.error_message)[:60] if j.error_message else "-")] for j in jobs]
    print(_table(rows, ["id", "kind", "status", "target", "worker", "prio", "queued", "error"]))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from worker.db.session import session_scope
    from worker.services.lifecycle import request_cancel

    settings, actor = cli_accounts.acting_settings(args)
    with session_scope(_factory(settings)) as s:
        status = request_cancel(s, run_id=args.run, actor=actor)
    if status.value == "cancelled":
        print(f"run {args.run} cancelled")
    else:
        print(f"run {args.run}: cancel requested; its worker stops it within seconds")
    return 0


def cmd_requeue(args: argparse.Namespace) -> int:
    from worker.services.lifecycle import requeue
    from worker.services.outbox import Queued

    settings, actor = cli_accounts.acting_settings(args)
    _, where = _submit(settings, _factory(settings), lambda s: requeue(s, run_id=args.run, actor=actor),
                       queued=lambda _: Queued(run_ids=(args.run,)))
    print(f"run {args.run} requeued ({where})")
    return 0


def cmd_priority(args: argparse.Namespace) -> int:
    from worker.services.lifecycle import set_job_priority, set_priority
    from worker.services.outbox import Queued

    def change(s: Any) -> bool:
        if args.job:
            return set_job_priority(s, job_id=args.id, priority=args.priority, actor=actor)
        return set_priority(s, run_id=args.id, priority=args.priority, actor=actor)

    def queued(again: bool) -> Queued:
        if not again:
            return Queued()
        return Queued(job_ids=(args.id,)) if args.job else Queued(run_ids=(args.id,))

    settings, actor = cli_accounts.acting_settings(args)
    again, where = _submit(settings, _factory(settings), change, queued=queued)
    where = f" ({where})" if again else ""
    print(f"{'job' if args.job else 'run'} {args.id} priority {args.priority}{where}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from worker.db.models import RunStatus
    from worker.db.session import session_scope
    from worker.services.runs import get_run, run_logs

    settings = _settings(args)
    factory = _factory(settings)
    last = 0
    while True:
        with session_scope(factory) as s:
            lines = run_logs(s, run_id=args.run, after_id=last, limit=1000)
            status = get_run(s, run_id=args.run).status
        for line in lines:
            print(f"{_fmt_time(line.ts)} {line.level.value:7s} {line.message}", flush=True)
            last = line.id
        if not args.follow or (RunStatus(status).is_terminal and not lines):
            return 0
        time.sleep(1.0)


def cmd_workers(args: argparse.Namespace) -> int:
    from worker.db.session import session_scope
    from worker.services.workers import list_workers

    settings = _settings(args)
    with session_scope(_factory(settings)) as s:
        nodes = list_workers(s, stale_after_s=max(30.0, 3 * settings.heartbeat_s))
    rows = [
        [n.name, n.status.value, ",".join(map(str, n.devices)), str(n.current_run_id or "-"), _fmt_time(n.last_seen_at)]
        for n in nodes
    ]
    print(_table(rows, ["name", "status", "devices", "run", "last seen"]))
    return 0


def cmd_dataset_validate(args: argparse.Namespace) -> int:
    from pydantic import TypeAdapter, ValidationError

    from segcore.config import DatasetSource, format_validation_error
    from segcore.data.validation import validate_dataset
    from worker.artifacts import Artifacts, is_url

    remote = is_url(args.path)
    source: dict[str, Any] = {"format": args.format, "root": args.path if remote else str(Path(args.path).expanduser())}
    for opt in args.option or []:
        key, _, value = opt.partition("=")
        if not value:
            raise CliError(f"--option {opt!r} must look like name=value (e.g. masks=labels)")
        source[key.strip()] = _scalar(value)
    try:
        src = TypeAdapter(DatasetSource).validate_python(source)
    except ValidationError as exc:
        raise CliError("invalid dataset source: " + _one_line(format_validation_error(exc))) from exc
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    if remote:  # an s3:// (or other fsspec) folder is mirrored first, with the settings' storage options
        src, _ = Artifacts.from_settings(_settings(args)).local_source(src, None)
    report = validate_dataset(src, classes=classes, task=args.task, check_pixels=not args.quick)
    text = report.to_text() if hasattr(report, "to_text") else str(report)
    print(text)
    if not report.ok:
        raise CliError(f"dataset {args.path} has errors (listed above); fix them and validate again")
    return 0


# ------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``segboard``."""
    from segcore.config import TaskType

    p = argparse.ArgumentParser(
        prog="segboard", description="SegBoard: training queue and leaderboard for segmentation teams"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def services(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--database-url",
                        help="SQLAlchemy URL (default: SEGBOARD_DATABASE_URL or SQLite under the home)")
        sp.add_argument("--redis-url",
                        help="Redis URL (default: SEGBOARD_REDIS_URL, or the embedded Redis of `segboard up`)")

    db = sub.add_parser("db", help="database maintenance")
    dbsub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up_ = dbsub.add_parser("upgrade", help="apply the migrations")
    services(up_)
    up_.set_defaults(func=cmd_db_upgrade)

    up = sub.add_parser("up", help="start Redis, the database, a worker, the reaper and the web app on this machine")
    services(up)
    up.add_argument("--gpus", default=None, help="GPU indices for the worker, e.g. 0,1 (default: one CPU worker)")
    up.add_argument("--ddp", action="store_true", help="train each run on all --gpus at once (DDP)")
    up.add_argument("--port", type=int, default=8501, help="web app port")
    up.add_argument("--host", default="127.0.0.1", help="web app address (default 127.0.0.1; any other needs accounts)")
    up.add_argument("--no-webapp", action="store_true", help="do not start the web app")
    up.set_defaults(func=cmd_up)

    w = sub.add_parser("worker", help="run a worker: one training process per GPU, or one CPU process")
    services(w)
    w.add_argument("--gpus", default=None, help="GPU indices, e.g. 0,1; 'cpu' or nothing for one CPU worker")
    w.add_argument("--ddp", action="store_true",
                   help="one training process that trains each run on all --gpus at once (DDP)")
    w.add_argument("--loglevel", default=None, help="DEBUG, INFO, WARNING or ERROR")
    w.set_defaults(func=cmd_worker)

    r = sub.add_parser("reaper", help="requeue runs whose worker died and republish lost messages")
    services(r)
    r.add_argument("--once", action="store_true", help="one pass, then exit")
    r.set_defaults(func=cmd_reaper)

    s = sub.add_parser("submit", help="validate a config and queue its runs")
    services(s)
    s.add_argument("config", help="experiment config (YAML or JSON)")
    s.add_argument("--folds", type=int, default=1, help="k-fold cross-validation: one run per fold")
    s.add_argument("--seeds", default="0", help="seeds, e.g. 0,1,2: one run per seed (per fold)")
    s.add_argument("--priority", type=int, default=0, help="0 (default) .. 9: higher runs first")
    s.add_argument("--grid", help="ablation axis, e.g. model.encoder=resnet18,resnet34")
    s.add_argument("--name", help="experiment name (default: the config's name)")
    s.add_argument("--tag", action="append", help="a tag (repeatable)")
    s.add_argument("--note", help="free text")
    s.set_defaults(func=cmd_submit)

    rs = sub.add_parser("runs", help="list runs")
    services(rs)
    rs.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    rs.add_argument("--limit", type=int, default=50)
    rs.set_defaults(func=cmd_runs)

    js = sub.add_parser("jobs", help="list prediction, evaluation, ensemble, pseudo-label and submission jobs")
    services(js)
    js.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    js.add_argument("--kind", choices=["predict", "evaluate", "ensemble", "pseudo", "submission", "dataset_import"])
    js.add_argument("--limit", type=int, default=50)
    js.set_defaults(func=cmd_jobs)

    for name, fn, text in (("cancel", cmd_cancel, "cancel a queued or running run"),
                           ("requeue", cmd_requeue,
                            "queue a failed or cancelled run again (resumes from its checkpoint)")):
        c = sub.add_parser(name, help=text)
        services(c)
        c.add_argument("run", type=int, help="run id")
        c.set_defaults(func=fn)

    pr = sub.add_parser("priority", help="change a run's (or, with --job, a job's) priority")
    services(pr)
    pr.add_argument("id", type=int, help="the run id (the job id with --job)")
    pr.add_argument("priority", type=int, help="0 .. 9, higher runs first")
    pr.add_argument("--job", action="store_true", help="the id is a job's (prediction, ensemble, ...)")
    pr.set_defaults(func=cmd_priority)

    lg = sub.add_parser("logs", help="print a run's log")
    services(lg)
    lg.add_argument("run", type=int)
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    lg.set_defaults(func=cmd_logs)

    wk = sub.add_parser("workers", help="list workers: name, devices, current run, last seen")
    services(wk)
    wk.set_defaults(func=cmd_workers)

    ds = sub.add_parser("dataset", help="dataset tools")
    dssub = ds.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
    dv = dssub.add_parser("validate", help="check every file of a dataset and list the problems")
    dv.add_argument("path", help="dataset folder, or an fsspec URL (s3://bucket/data: mirrored locally first)")
    dv.add_argument("--format", required=True, choices=["coco", "mask_folder", "multilabel_json"])
    dv.add_argument("--classes", help="expected class names in index order, comma-separated")
    dv.add_argument("--task", default=TaskType.MULTICLASS.value, choices=[t.value for t in TaskType])
    dv.add_argument("--option", action="append", help="source option name=value, e.g. masks=labels (repeatable)")
    dv.add_argument("--quick", action="store_true", help="read file headers only, do not decode every pixel")
    dv.set_defaults(func=cmd_dataset_validate)

    from worker.cli_maintenance import add_parsers

    add_parsers(sub, services)
    cli_accounts.add_parsers(sub, services)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``segboard``; returns the exit code (2 for an expected error, printed as one line)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - expected errors become one line; the rest too, with the type
        print(f"segboard: error: {_describe(exc)}", file=sys.stderr)
        return EXIT_ERROR


def _describe(exc: BaseException) -> str:
    from segcore.errors import SegcoreError
    from worker.errors import ServiceError

    if isinstance(exc, (CliError, ServiceError, SegcoreError)):
        return _one_line(str(exc))
    try:
        import sqlalchemy.exc as sa_exc

        if isinstance(exc, sa_exc.DBAPIError):
            detail = _one_line(str(exc.orig))
            if "no such table" in detail or "does not exist" in detail and "relation" in detail:
                return f"the database has no SegBoard tables ({detail}); run `segboard db upgrade` first"
            return f"cannot use the database: {detail} (check SEGBOARD_DATABASE_URL and that the server is running)"
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, (ValueError, OSError, FileNotFoundError)):
        return _one_line(str(exc))
    return f"{type(exc).__name__}: {_one_line(str(exc))}"


if __name__ == "__main__":
    sys.exit(main())
