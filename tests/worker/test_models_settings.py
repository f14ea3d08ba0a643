"""Settings: defaults under home, the SEGBOARD_ environment, a settings file, fail-fast validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.settings import Settings, SettingsFileError, get_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("SEGBOARD_"):
            monkeypatch.delenv(key)


def test_defaults_live_under_home(tmp_path):
    s = get_settings(home=tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path / 'segboard.db'}"
    assert s.artifact_root == str(tmp_path / "artifacts")
    assert s.dataset_root == str(tmp_path / "datasets")
    assert s.redis_url is None and s.is_sqlite and s.artifact_root_is_local
    assert (s.heartbeat_s, s.lease_s, s.visibility_timeout_s) == (5, 30, 3600)
    assert not (tmp_path / "artifacts").exists(), "settings must not create anything"


def test_environment_is_read_with_the_prefix_and_overrides_win(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGBOARD_HOME", str(tmp_path))
    monkeypatch.setenv("SEGBOARD_REDIS_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("SEGBOARD_HEARTBEAT_S", "2")
    s = get_settings(lease_s=12)
    assert s.home == tmp_path and s.redis_url == "redis://127.0.0.1:6379/3"
    assert s.heartbeat_s == 2 and s.lease_s == 12


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".json", ".env"])
def test_settings_file_in_each_format_below_the_environment(tmp_path, monkeypatch, suffix):
    values = {"queue_name": "team-a", "artifact_root": "s3://bucket/segboard", "reaper_interval_s": 7}
    path = tmp_path / f"segboard{suffix}"
    if suffix == ".toml":
        path.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items()))
    elif suffix == ".yaml":
        path.write_text("\n".join(f"{k}: {v}" for k, v in values.items()))
    elif suffix == ".json":
        path.write_text(json.dumps(values))
    else:
        path.write_text("\n".join(f"SEGBOARD_{k.upper()}={v}" for k, v in values.items()))
    monkeypatch.setenv("SEGBOARD_QUEUE_NAME", "from-env")
    s = get_settings(settings_file=path, home=tmp_path)
    assert s.queue_name == "from-env"
    assert s.artifact_root == "s3://bucket/segboard" and not s.artifact_root_is_local
    assert s.reaper_interval_s == 7
    assert s.artifact_path("runs", "3") == "s3://bucket/segboard/runs/3"


def test_settings_file_from_the_environment_variable(tmp_path, monkeypatch):
    path = tmp_path / "s.toml"
    path.write_text('queue_name = "q2"\n')
    monkeypatch.setenv("SEGBOARD_SETTINGS_FILE", str(path))
    assert get_settings(home=tmp_path).queue_name == "q2"


def test_unknown_or_missing_settings_file_is_a_clear_error(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('queu_name = "typo"\n')
    with pytest.raises(SettingsFileError, match="unknown settings.*queu_name"):
        get_settings(settings_file=path)
    with pytest.raises(SettingsFileError, match="cannot read"):
        get_settings(settings_file=tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"database_url": "mysql://x/y"}, "database_url.*not supported"),
        ({"redis_url": "http://x"}, "redis_url.*not a Redis URL"),
        ({"heartbeat_s": 20, "lease_s": 30}, "lease_s .* at least twice heartbeat_s"),
        ({"visibility_timeout_s": 10}, "visibility_timeout_s .* must exceed lease_s"),
        ({"heartbeat_s": 0}, "heartbeat_s"),
        ({"log_level": "LOUD"}, "log_level"),
        ({"queue_name": "x", "jobs_queue_name": "x"}, "must differ"),
    ],
)
def test_invalid_settings_fail_fast_naming_the_setting(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        get_settings(home=tmp_path, **overrides)


def test_postgres_and_explicit_urls_are_kept(tmp_path):
    s = get_settings(home=tmp_path, database_url="postgresql://u@db:5432/sb")
    assert s.database_url == "postgresql://u@db:5432/sb" and not s.is_sqlite


def test_settings_class_is_importable_without_side_effects():
    assert "home" in Settings.model_fields and Path("~").expanduser().exists()
