"""``segboard user`` and ``segboard token``, and write commands acting as the member of an API token."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from worker.cli import main
from worker.db.models import AuditEvent, Experiment, Member
from worker.db.session import make_engine, make_session_factory, session_scope
from worker.services import accounts

from .queue_fixtures import child_env, make_settings, q_dataset, tiny_config  # noqa: F401

PW = "a long enough password"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """SEGBOARD_* variables for a migrated SQLite database in tmp_path, local accounts and no broker."""
    settings = make_settings(tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'cli.db'}", redis_url=None)
    for key, value in child_env(settings).items():
        if key.startswith("SEGBOARD_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("SEGBOARD_REDIS_URL", raising=False)
    monkeypatch.delenv("SEGBOARD_TOKEN", raising=False)
    monkeypatch.setenv("SEGBOARD_AUTH", "local")
    assert main(["db", "upgrade"]) == 0
    return settings


def run(capsys: pytest.CaptureFixture[str], *args: str, stdin: str | None = None,
        monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[int, str, str]:
    capsys.readouterr()
    if stdin is not None and monkeypatch is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _scope(settings: Any) -> Any:
    return session_scope(make_session_factory(make_engine(settings)))


def test_user_commands(env: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run(capsys, "user", "add", "ada", "--role", "admin", "--password-stdin", stdin=PW + "\n",
                         monkeypatch=monkeypatch)
    assert code == 0 and "member ada added" in out and "role admin" in out, err
    code, out, _ = run(capsys, "user", "add", "bob", "--email", "bob@example.org")
    assert code == 0 and "no password yet" in out
    with _scope(env) as s:
        assert accounts.authenticate_password(s, name="ada", password=PW).name == "ada"
        assert PW not in s.scalar(sa.select(Member.password_hash).where(Member.name == "ada"))
    code, out, _ = run(capsys, "user", "passwd", "bob", "--password-stdin", stdin=PW + "!\n", monkeypatch=monkeypatch)
    assert code == 0 and "password of bob set" in out
    code, out, _ = run(capsys, "user", "role", "bob", "viewer")
    assert code == 0 and "bob is now viewer" in out
    code, out, _ = run(capsys, "user", "link-oidc", "bob", "corp|bob")
    assert code == 0 and "OIDC" in out
    code, out, _ = run(capsys, "user", "revoke-logins", "bob")
    assert code == 0 and "ended 0 login(s) of bob" in out
    code, out, _ = run(capsys, "user", "list")
    header, *rows = out.strip().splitlines()
    assert header.split() == ["id", "name", "role", "email", "password", "oidc", "created"]
    assert rows[0].split()[1:6] == ["ada", "admin", "-", "yes", "no"]
    assert rows[1].split()[1:6] == ["bob", "viewer", "bob@example.org", "yes", "yes"]
    with _scope(env) as s:
        assert accounts.authenticate_password(s, name="bob", password=PW + "!").role.value == "viewer"
    # asked twice on the terminal: answers that differ are refused; a short one gets the rule
    answers = iter(["first answer 123", "second answer 456"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    code, _, err = run(capsys, "user", "passwd", "bob")
    assert code == 2 and "the two passwords differ" in err
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "short")
    code, _, err = run(capsys, "user", "passwd", "bob")
    assert code == 2 and "at least 10 characters" in err and "short" not in err
    code, _, err = run(capsys, "user", "passwd", "nobody", "--password-stdin", stdin=PW, monkeypatch=monkeypatch)
    assert code == 2 and "member 'nobody' does not exist" in err


def test_a_token_acts_as_its_member_and_a_revoked_one_is_refused(
    env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    q_dataset: dict[str, Any],  # noqa: F811
) -> None:
    assert main(["user", "add", "ada", "--role", "admin"]) == 0
    assert main(["user", "add", "bob", "--role", "member"]) == 0
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(q_dataset)))
    # accounts are on: no token, no write
    code, _, err = run(capsys, "submit", str(cfg))
    assert code == 2 and "SEGBOARD_TOKEN" in err and "segboard token create" in err and len(err.splitlines()) == 1
    code, out, err = run(capsys, "token", "create", "--member", "bob", "--name", "laptop", "--expires-days", "30")
    assert code == 0 and "will not be shown again" in err
    token = out.strip()
    assert token.startswith("sbt_") and "\n" not in token
    code, out, _ = run(capsys, "token", "list", "--member", "bob")
    assert code == 0 and token[:12] in out and token not in out and "laptop" in out and "active" in out
    monkeypatch.setenv("SEGBOARD_TOKEN", token)
    code, out, err = run(capsys, "submit", str(cfg))
    assert code == 0, err
    with _scope(env) as s:
        bob = s.scalar(sa.select(Member.id).where(Member.name == "bob"))
        exp = s.scalars(sa.select(Experiment)).one()
        assert exp.owner_id == bob
        event = s.scalars(sa.select(AuditEvent).where(AuditEvent.action == "experiment.create")).one()
        assert event.actor_id == bob
    run_id = out.split("queued runs ")[1].split()[0].strip(",")
    code, out, err = run(capsys, "cancel", run_id)
    assert code == 0, err
    code, _, err = run(capsys, "priority", run_id, "3")
    assert code == 0, err
    with _scope(env) as s:
        acted = {e.action: e.actor_id for e in s.scalars(sa.select(AuditEvent).where(AuditEvent.object_kind == "run"))}
        assert acted == {"run.cancel": bob, "run.set_priority": bob}
    # --token wins over the variable; a wrong one is refused with the same message as a revoked one
    code, _, err = run(capsys, "requeue", run_id, "--token", "sbt_not-a-token")
    assert code == 2 and "unknown, revoked or expired" in err
    with _scope(env) as s:
        token_id = str(accounts.list_tokens(s, actor=None, member_id=bob)[0].id)
    code, out, _ = run(capsys, "token", "revoke", token_id)
    assert code == 0 and f"token {token_id} revoked" in out
    code, _, err = run(capsys, "submit", str(cfg))
    assert code == 2 and "unknown, revoked or expired" in err
    with _scope(env) as s:
        assert s.scalar(sa.select(sa.func.count(Experiment.id))) == 1


def test_single_user_mode_needs_no_token(env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch,
                                         q_dataset: dict[str, Any]) -> None:  # noqa: F811
    monkeypatch.setenv("SEGBOARD_AUTH", "none")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(q_dataset)))
    code, _, err = run(capsys, "submit", str(cfg))
    assert code == 0, err
    with _scope(env) as s:
        assert s.scalars(sa.select(Experiment)).one().owner_id is None
