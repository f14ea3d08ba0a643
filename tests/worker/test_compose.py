"""docker-compose files: parsed with yaml (Docker cannot run here); services, healthchecks, required
variables, GPU reservations, and commands that the tested ``segboard`` parser accepts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RE = re.compile(r"\$\{(\w+):-([^}]*)\}")
REQUIRED_RE = re.compile(r"\$\{(\w+):\?([^}]+)\}")


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / name).read_text())


def _with_defaults(text: str) -> str:
    """Interpolate ``${VAR:-default}`` as compose does when VAR is unset."""
    return DEFAULT_RE.sub(lambda m: m.group(2), text)


def _check_segboard_command(command: list[str]) -> None:
    args = [_with_defaults(a) for a in command]
    assert args[0] == "segboard"
    build_parser().parse_args(args[1:])  # SystemExit on anything the CLI does not accept


def test_team_compose_services_and_dependencies() -> None:
    compose = _load("docker-compose.yml")
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "webapp", "reaper", "worker"}
    for name, svc in services.items():
        if name != "migrate":  # a one-shot job
            assert "healthcheck" in svc and svc["healthcheck"]["test"], f"{name} has no healthcheck"
    assert services["migrate"]["command"] == ["segboard", "db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("webapp", "reaper", "worker"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"
    for name in ("migrate", "reaper", "worker"):
        _check_segboard_command(services[name]["command"])
    assert "webapp/app.py" in services["webapp"]["command"]  # the dashboard with its login routes
    assert services["reaper"]["healthcheck"]["test"][1] == "segboard"
    _check_segboard_command(services["reaper"]["healthcheck"]["test"][1:])


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.worker.yml"])
def test_gpu_workers_reserve_nvidia_devices_and_use_the_shared_services(name: str) -> None:
    worker = _load(name)["services"]["worker"]
    _check_segboard_command(worker["command"])
    assert "--gpus" in worker["command"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    env = worker["environment"]
    for var in ("SEGBOARD_DATABASE_URL", "SEGBOARD_REDIS_URL", "SEGBOARD_ARTIFACT_ROOT", "SEGBOARD_WORKER_NAME"):
        assert var in env
    assert any(v.endswith(":/data/artifacts") for v in worker["volumes"])
    assert "inspect ping" in " ".join(worker["healthcheck"]["test"])


@pytest.mark.parametrize(
    ("name", "required"),
    [
        ("docker-compose.yml", {"POSTGRES_PASSWORD", "SEGBOARD_ARTIFACT_DIR", "SEGBOARD_DATASET_DIR", "SEGBOARD_AUTH"}),
        ("docker-compose.worker.yml", {"SEGBOARD_DATABASE_URL", "SEGBOARD_REDIS_URL", "SEGBOARD_ARTIFACT_DIR",
                                       "SEGBOARD_DATASET_DIR", "WORKER_NAME"}),
    ],
)
def test_required_variables_fail_with_a_message(name: str, required: set[str]) -> None:
    text = (REPO / name).read_text()
    found = {m.group(1): m.group(2) for m in REQUIRED_RE.finditer(text)}
    assert set(found) == required
    assert all(msg.startswith("set ") for msg in found.values())


def test_dockerfile_installs_the_cli() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert "requirements/torch.txt" in text and "pip install '.[s3]'" in text
    compose = _load("docker-compose.yml")
    assert compose["x-segboard"]["build"] == "."


def _interpolate(text: str, env: dict[str, str]) -> str:
    """``${VAR:-default}`` and ``${VAR:?message}`` as compose reads them (ValueError with the message)."""

    def required(m: re.Match[str]) -> str:
        if not env.get(m.group(1)):
            raise ValueError(f"required variable {m.group(1)} is missing a value: {m.group(2)}")
        return env[m.group(1)]

    text = REQUIRED_RE.sub(required, text)
    return DEFAULT_RE.sub(lambda m: env.get(m.group(1)) or m.group(2), text)


_BASE_ENV = {"POSTGRES_PASSWORD": "pw", "SEGBOARD_ARTIFACT_DIR": "/srv/a", "SEGBOARD_DATASET_DIR": "/srv/d"}


def _docker_compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str] | None:
    """``docker compose config`` of the team file with exactly ``env``; None where compose is missing."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        return None
    return subprocess.run([docker, "compose", "-f", str(REPO / "docker-compose.yml"), "config"], cwd=REPO,
                          env={"PATH": os.environ.get("PATH", ""), **env}, capture_output=True, text=True, timeout=60)


def test_the_web_app_is_published_only_with_accounts() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    with pytest.raises(ValueError, match="SEGBOARD_AUTH .* local, oidc or local\\+oidc"):
        _interpolate(text, _BASE_ENV)
    compose = yaml.safe_load(_interpolate(text, {**_BASE_ENV, "SEGBOARD_AUTH": "local"}))
    web = compose["services"]["webapp"]
    assert web["environment"]["SEGBOARD_AUTH"] == "local"
    assert web["ports"] == ["8501:8501"] and "0.0.0.0" in web["command"]
    for name in ("reaper", "worker", "migrate"):  # the rest keeps the shared settings
        assert compose["services"][name]["environment"]["SEGBOARD_DATABASE_URL"].startswith("postgresql://")
    # where the Docker CLI has compose, the real thing agrees
    refused = _docker_compose_config(_BASE_ENV)
    if refused is None:
        return
    assert refused.returncode != 0 and "SEGBOARD_AUTH" in refused.stderr
    accepted = _docker_compose_config({**_BASE_ENV, "SEGBOARD_AUTH": "oidc"})
    assert accepted is not None and accepted.returncode == 0, accepted.stderr if accepted else ""
    assert "SEGBOARD_AUTH: oidc" in accepted.stdout
