"""Imports go one way: webapp -> worker -> segcore (import-linter's layers contract in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_layers_contract_holds():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    proc = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " kept, 0 broken" in proc.stdout


def test_config_and_catalog_import_without_torch():
    code = "import sys, segcore.config, segcore.catalog; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_smp_imports_in_this_environment():
    out = subprocess.run(
        [sys.executable, "-c", "import segmentation_models_pytorch as smp, torchvision; print(smp.__version__)"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
