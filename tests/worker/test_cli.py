"""The ``segboard`` command line: every subcommand, and errors as one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.cli import build_parser, main
from worker.queue.dispatch import waiting_in_broker

from .queue_fixtures import REPO, child_env, make_settings, q_dataset, q_system_redis_url, tiny_config  # noqa: F401

SUBCOMMANDS = ["db", "up", "worker", "reaper", "submit", "runs", "jobs", "cancel", "requeue", "priority", "logs",
               "workers", "dataset", "doctor", "backup", "restore", "user", "token", "weights", "sweep", "notify",
               "du", "delete", "gc", "pin", "unpin"]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """SEGBOARD_* variables for a SQLite database in tmp_path and no broker."""
    settings = make_settings(tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'cli.db'}", redis_url=None)
    for key, value in child_env(settings).items():
        if key.startswith("SEGBOARD_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("SEGBOARD_REDIS_URL", raising=False)
    return settings


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _config_file(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_parser_has_every_subcommand() -> None:
    parser = build_parser()
    choices = next(a for a in parser._actions if a.dest == "command").choices
    assert sorted(choices) == sorted(SUBCOMMANDS)
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([name, "--help"])
        assert exc.value.code == 0


def test_submit_list_cancel_requeue_logs(env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         q_dataset: dict[str, Any]) -> None:
    code, out, _ = run(capsys, "db", "upgrade")
    assert code == 0 and "revision" in out
    cfg = _config_file(tmp_path, tiny_config(q_dataset))
    code, out, err = run(capsys, "submit", cfg, "--folds", "2", "--seeds", "0,1", "--priority", "3", "--tag", "cli")
    assert code == 0, err
    assert "queued runs 1, 2, 3, 4" in out and "no broker" in out
    code, out, _ = run(capsys, "runs", "--status", "queued")
    assert code == 0 and len(out.strip().splitlines()) == 5 and "fold" in out
    code, out, _ = run(capsys, "priority", "2", "9")
    assert code == 0 and "run 2 priority 9" in out
    code, _, err = run(capsys, "priority", "2", "10")
    assert code == 2 and "priority must be an integer from 0 (lowest) to 9 (highest), got 10" in err
    code, _, err = run(capsys, "priority", "1", "5", "--job")
    assert code == 2 and "job 1 does not exist; check the id with `segboard jobs`" in err
    from worker.db.session import make_engine, make_session_factory, session_scope
    from worker.services.jobs import create_job

    with session_scope(make_session_factory(make_engine(env))) as s:
        job = create_job(s, actor=None, kind="predict", target={"run_ids": [3]}, params={"split": "test"})
    code, out, err = run(capsys, "priority", str(job.id), "6", "--job")
    assert code == 0 and f"job {job.id} priority 6" in out, err
    code, out, _ = run(capsys, "jobs", "--status", "queued")
    header, row = out.strip().splitlines()
    assert header.split() == ["id", "kind", "status", "target", "worker", "prio", "queued", "error"]
    assert row.split()[:4] == [str(job.id), "predict", "queued", '{"run_ids":[3]}'] and row.split()[5] == "6"
    assert row.split()[-1] == "-" and "unknown error" not in out  # a job that did not fail has no error
    code, out, _ = run(capsys, "cancel", "1")
    assert code == 0 and "run 1 cancelled" in out
    code, out, _ = run(capsys, "requeue", "1")
    assert code == 0 and "run 1 requeued" in out
    code, out, _ = run(capsys, "logs", "1")
    assert code == 0 and "cancelled before it started" in out and "requeued" in out
    code, out, _ = run(capsys, "workers")
    assert code == 0 and out.split() == ["name", "status", "devices", "run", "last", "seen"]
    code, out, _ = run(capsys, "runs")
    assert code == 0 and "queued" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cancel", "999"], "run 999 does not exist"),
        (["requeue", "999"], "run 999 does not exist"),
        (["logs", "999"], "run 999 does not exist"),
        (["submit", "/nonexistent/exp.yaml"], "cannot read config file"),
        (["submit", "CFG", "--seeds", "a,b"], "--seeds"),
        (["worker", "--gpus", "zero"], "not a GPU index"),
        (["worker", "--redis-url", "redis://127.0.0.1:1/0"], "cannot reach the artifact root s3://bucket/segboard"),
    ],
)
def test_errors_are_one_line_with_exit_2(env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    run(capsys, "db", "upgrade")
    if args[0] == "worker" and "--redis-url" in args:
        monkeypatch.setenv("SEGBOARD_ARTIFACT_ROOT", "s3://bucket/segboard")  # no S3 server listens there
        monkeypatch.setenv("SEGBOARD_STORAGE_OPTIONS", '{"endpoint_url": "http://127.0.0.1:1", "key": "k", '
                           '"secret": "s", "config_kwargs": {"retries": {"max_attempts": 1}}}')
    args = [_config_file(tmp_path, tiny_config({"format": "coco", "root": "/x"})) if a == "CFG" else a for a in args]
    code, out, err = run(capsys, *args)
    assert code == 2
    assert err.startswith("segboard: error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_invalid_config_is_rejected_naming_the_field_and_never_queued(
    env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "db", "upgrade")
    bad = tiny_config({"format": "coco", "root": "/x"})
    bad["training"]["epochs"] = 0
    bad["model"]["arch"] = "NoSuchNet"
    code, _, err = run(capsys, "submit", _config_file(tmp_path, bad))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "training.epochs" in err and "model.arch" in err and "Unet" in err
    code, out, _ = run(capsys, "runs")
    assert code == 0 and len(out.strip().splitlines()) == 1  # the header only


def test_missing_database_schema_says_to_upgrade(env: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "runs")
    assert code == 2 and "segboard db upgrade" in err and len(err.strip().splitlines()) == 1


def test_dataset_validate(env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          q_dataset: dict[str, Any]) -> None:
    code, out, err = run(capsys, "dataset", "validate", q_dataset["root"], "--format", "coco")
    assert code == 0, err
    code, _, err = run(capsys, "dataset", "validate", str(tmp_path / "missing"), "--format", "coco")
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_submit_publishes_to_redis_and_errors_exit_2_as_a_process(
    tmp_path: Path, q_system_redis_url: str, q_dataset: dict[str, Any]
) -> None:
    settings = make_settings(tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'p.db'}",
                             redis_url=q_system_redis_url)
    env = child_env(settings)

    def segboard(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "worker.cli", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=60)

    assert segboard("db", "upgrade").returncode == 0
    done = segboard("submit", _config_file(tmp_path, tiny_config(q_dataset)), "--seeds", "0,1")
    assert done.returncode == 0 and "published 2 message(s)" in done.stdout, done.stderr
    from worker.queue.celery_app import make_celery

    app = make_celery(settings)
    assert {("run", 1), ("run", 2)} <= waiting_in_broker(app)
    with app.connection_for_write() as conn:  # leave nothing behind in the shared server
        conn.default_channel.client.delete(*[settings.queue_name] + [f"{settings.queue_name}:{i}" for i in range(10)])
    app.close()
    bad = segboard("cancel", "42")
    assert bad.returncode == 2 and "run 42 does not exist" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
