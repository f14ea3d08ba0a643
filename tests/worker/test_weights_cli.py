"""``segboard weights import`` / ``list`` and the weights service, on a temporary home."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import segmentation_models_pytorch as smp
import torch

from worker.cli import main
from worker.services import weights as weights_service
from worker.settings import get_settings


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in ("SEGBOARD_ARTIFACT_ROOT", "SEGBOARD_WEIGHTS_DIR", "SEGBOARD_DATABASE_URL", "SEGBOARD_SETTINGS_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SEGBOARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SEGBOARD_WEIGHTS_OFFLINE", "true")
    return tmp_path / "home"


def _weights_file(path: Path, name: str = "resnet18") -> Path:
    torch.manual_seed(0)
    torch.save(smp.encoders.get_encoder(name, weights=None).state_dict(), path)
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_import_then_list(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "weights", "list")
    assert code == 0 and f"no cached weights in {home / 'artifacts' / 'weights'}" in out
    code, out, err = run(capsys, "weights", "import", str(_weights_file(tmp_path / "r18.pth")), "--encoder", "resnet18")
    cached = home / "artifacts" / "weights" / "resnet18" / "imagenet.pth"
    assert code == 0, err
    assert out.startswith("cached 'imagenet' weights for encoder resnet18 (") and str(cached) in out
    code, out, _ = run(capsys, "weights", "list", "--json")
    entries: list[dict[str, Any]] = json.loads(out)
    assert [(e["encoder"], e["weights"], e["path"]) for e in entries] == [("resnet18", "imagenet", str(cached))]
    assert weights_service.cached_encoders(settings=get_settings()) == ["resnet18"]


def test_import_of_a_file_that_does_not_fit_is_one_line_with_exit_code_2(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "weights", "import", str(_weights_file(tmp_path / "r34.pth", "resnet34")),
                         "--encoder", "resnet18")
    assert code == 2 and out == ""
    assert err.startswith("segboard: error: encoder weights ") and "do not match encoder ResNetEncoder" in err
    assert len(err.strip().splitlines()) == 1
    assert weights_service.list_cached_weights(settings=get_settings()) == []


def test_weights_dir_setting_moves_the_cache(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGBOARD_WEIGHTS_DIR", str(tmp_path / "shared-weights"))
    settings = get_settings()
    assert settings.weights_path == tmp_path / "shared-weights" and settings.weights_offline is True
    entry = weights_service.import_weights(settings=settings, file=_weights_file(tmp_path / "r18.pth"),
                                           encoder="resnet18", weights="imagenet")
    assert Path(entry.path).parent == tmp_path / "shared-weights" / "resnet18"
