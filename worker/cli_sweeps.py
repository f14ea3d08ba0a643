"""``segboard sweep create|list|show|advance|cancel``: searches over config values with a budget (docs/sweeps.md).

Kept apart from :mod:`worker.cli`; :func:`add_parsers` is called by :func:`worker.cli_maintenance.add_parsers`.
A spec names its base config as a path (relative to the spec file) or inline, and its dataset by
name or id.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_parsers", "read_spec", "cmd_sweep_create", "cmd_sweep_list", "cmd_sweep_show"]


def read_spec(path: str | Path, resolve_dataset: Callable[[str], int]) -> dict[str, Any]:
    """A sweep spec from a YAML file: ``config`` read from its file when it is a path, ``dataset`` (a
    name or id) turned into ``dataset_id``.

    Raises:
        CliError: the file cannot be read or is not a mapping.
    """
    import yaml

    from segcore.config import load_config
    from worker.cli import CliError

    spec_path = Path(path)
    try:
        spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CliError(f"cannot read the sweep spec {spec_path}: {type(exc).__name__}; "
                       "check the path and the YAML") from None
    if not isinstance(spec, dict):
        raise CliError(f"{spec_path} is not a sweep spec: it must be a mapping with name, config, search and budget")
    config = spec.get("config")
    if isinstance(config, str):
        config_path = Path(config) if Path(config).is_absolute() else spec_path.parent / config
        spec["config"] = load_config(config_path).to_dict()
    dataset = spec.pop("dataset", None)
    if dataset is not None and "dataset_id" not in spec:
        spec["dataset_id"] = dataset if isinstance(dataset, int) else resolve_dataset(str(dataset))
    return spec


def cmd_sweep_create(args: argparse.Namespace) -> int:
    """Create a sweep and queue its first trials."""
    from worker import cli_accounts
    from worker.cli import _factory, _submit
    from worker.db.session import session_scope
    from worker.services import datasets, sweeps
    from worker.services.confinement import data_roots
    from worker.services.outbox import Queued

    settings, actor = cli_accounts.acting_settings(args)
    factory = _factory(settings)

    def resolve(name: str) -> int:
        with session_scope(factory) as s:
            return datasets.get_dataset_by_name(s, name=name).id

    spec = read_spec(args.spec, resolve)
    sweep, where = _submit(
        settings, factory, lambda s: sweeps.create_sweep(s, actor=actor, spec=spec, roots=data_roots(settings)),
        queued=lambda w: Queued.of(run_ids=w.queued_run_ids),
    )
    print(f"sweep {sweep.id} ({sweep.name}): study {sweep.study_name}, budget {sweep.budget}, "
          f"queued runs {', '.join(map(str, sweep.queued_run_ids)) or 'none'} ({where})")
    if sweep.message:
        print(sweep.message)
    return 0


def _best(sweep: Any) -> str:
    return f"{sweep.best_value:.4f} (trial {sweep.best_trial})" if sweep.best_value is not None else "-"


def cmd_sweep_list(args: argparse.Namespace) -> int:
    """Print the sweeps: id, name, status, trials ended of the budget, best score."""
    from worker.cli import _factory, _settings, _table
    from worker.db.session import session_scope
    from worker.services import sweeps

    with session_scope(_factory(_settings(args))) as s:
        rows = sweeps.list_sweeps(s, limit=args.limit)
    if args.json:
        print(json.dumps([r.model_dump(mode="json", exclude={"trials", "spec"}) for r in rows], indent=2))
        return 0
    if not rows:
        print("no sweeps yet; create one with `segboard sweep create SPEC.yaml` (docs/sweeps.md)")
        return 0
    table = [[str(r.id), r.name, r.status.value, f"{sum(t.state is not None for t in r.trials)}/{r.budget}",
              f"{r.metric} ({r.direction[:3]})", _best(r)] for r in rows]
    print(_table(table, ["id", "name", "status", "ended", "metric", "best"]))
    return 0


def cmd_sweep_show(args: argparse.Namespace) -> int:
    """Print one sweep and its trials (parameters, run, state, score)."""
    from worker.cli import _factory, _settings, _table
    from worker.db.session import session_scope
    from worker.services import sweeps

    with session_scope(_factory(_settings(args))) as s:
        sweep = sweeps.get_sweep(s, sweep_id=args.id)
    if args.json:
        print(json.dumps(sweep.model_dump(mode="json"), indent=2))
        return 0
    print(f"sweep {sweep.id} ({sweep.name}): {sweep.status.value}, {len(sweep.trials)} of {sweep.budget} trials "
          f"asked, {sweep.parallelism} at once; {sweep.direction} {sweep.metric}; best {_best(sweep)}")
    print(f"Optuna study {sweep.study_name} (in the platform's database)")
    if sweep.message:
        print(sweep.message)
    names = list(sweep.spec.get("search", {}))
    rows = [[str(t.number), *(_short(t.params.get(n)) for n in names), str(t.run_id or "-"),
             t.state or (t.run_status.value if t.run_status else "-"),
             f"{t.value:.4f}" if t.value is not None else "-"] for t in sweep.trials]
    print(_table(rows, ["trial", *names, "run", "state", sweep.metric]))
    return 0


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 30 else text[:27] + "..."


def _change(args: argparse.Namespace, verb: str) -> int:
    from worker import cli_accounts
    from worker.cli import _factory, _submit
    from worker.services import sweeps
    from worker.services.confinement import data_roots
    from worker.services.outbox import Queued

    settings, actor = cli_accounts.acting_settings(args)
    if verb == "advance":
        def work(s: Any) -> Any:
            return sweeps.advance_sweep(s, actor=actor, sweep_id=args.id, roots=data_roots(settings))
    else:
        def work(s: Any) -> Any:
            return sweeps.cancel_sweep(s, actor=actor, sweep_id=args.id)
    sweep, where = _submit(settings, _factory(settings), work, queued=lambda w: Queued.of(run_ids=w.queued_run_ids))
    queued = ", ".join(map(str, sweep.queued_run_ids)) or "none"
    print(f"sweep {sweep.id} ({sweep.name}): {sweep.status.value}; queued runs {queued} ({where})")
    if sweep.message:
        print(sweep.message)
    return 0


def add_parsers(sub: Any, services: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``sweep create|list|show|advance|cancel`` to ``segboard``'s sub-parsers."""
    from worker.cli_accounts import add_token_option

    sw = sub.add_parser("sweep", help="searches over config values with a budget of trials (Optuna)")
    ssub = sw.add_subparsers(dest="sweep_command", required=True, metavar="ACTION")
    cr = ssub.add_parser("create", help="create a sweep from a YAML spec and queue its first trials")
    services(cr)
    add_token_option(cr)
    cr.add_argument("spec", help="the sweep spec (YAML; see docs/sweeps.md)")
    cr.set_defaults(func=cmd_sweep_create)
    ls = ssub.add_parser("list", help="list sweeps")
    services(ls)
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=cmd_sweep_list)
    sh = ssub.add_parser("show", help="a sweep's trials: parameters, run, state and score")
    services(sh)
    sh.add_argument("id", type=int)
    sh.add_argument("--json", action="store_true", help="print JSON")
    sh.set_defaults(func=cmd_sweep_show)
    for verb, text in (("advance", "tell the study about ended trials and queue trials while budget remains"),
                       ("cancel", "queue no more trials and cancel the sweep's queued and running runs")):
        p = ssub.add_parser(verb, help=text)
        services(p)
        add_token_option(p)
        p.add_argument("id", type=int)
        p.set_defaults(func=lambda a, v=verb: _change(a, v))
