"""The Python client against a live ``segboard up`` (local accounts), through the HTTP API with API tokens.

An admin and a token are made with the CLI, as docs/client.md says; a viewer and a synthetic dataset
through the services. A tiny run (1 epoch, 64 px) is submitted and watched to the end through the
client; then its metrics and the leaderboard come back as DataFrames, its validation store opens
from the client's cache, and a test prediction, a submission and its public score go through the API.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

CLASSES = ["background", "a", "b"]
pytestmark = pytest.mark.slow


def _cli(live: Any, *args: str, stdin: str | None = None) -> str:
    """``segboard ...`` on the server's database (the admin mode), its standard output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGBOARD_")}
    env.update({"SEGBOARD_HOME": str(live.home), "SEGBOARD_DATASET_ROOT": str(live.datasets),
                "SEGBOARD_ARTIFACT_ROOT": str(live.settings.artifact_root), "SEGBOARD_AUTH": "local"})
    done = subprocess.run([sys.executable, "-m", "worker.cli", *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def team(start_segboard: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from segcore.data.synthetic import make_synthetic_coco
    from worker.client import Client
    from worker.db.session import session_scope
    from worker.services import accounts, datasets, members

    live = start_segboard(auth="local")
    source = make_synthetic_coco(live.datasets / "tiny", num_images=8, num_classes=2, size=64, num_test_images=2,
                                 seed=0)
    _cli(live, "user", "add", "ada", "--role", "admin")
    token = _cli(live, "token", "create", "--member", "ada", "--name", "notebook").strip()
    with session_scope(live.factory) as s:
        ada = members.get_member_by_name(s, name="ada")
        vic = members.create_member(s, actor=ada.id, name="vic", role="viewer")
        viewer_token = accounts.create_token(s, actor=None, member_id=vic.id, name="laptop")[1]
        datasets.register_dataset(s, actor=ada.id, name="tiny", source=source, classes=CLASSES, check_pixels=False)
    cache = tmp_path_factory.mktemp("client-cache")
    client = Client(live.url, token=token, cache_dir=cache, timeout=120)
    viewer = Client(live.url, token=viewer_token, cache_dir=cache, timeout=120)
    try:
        yield types.SimpleNamespace(live=live, client=client, viewer=viewer, source=source)
    finally:
        client.close()
        viewer.close()


def _config(source: Any) -> dict[str, Any]:
    return {
        "name": "client-tiny",
        "data": {"source": source.model_dump(mode="json"), "classes": CLASSES, "image_size": [64, 64],
                 "split": {"kind": "holdout", "val_fraction": 0.25, "seed": 0}},
        "model": {"arch": "Unet", "encoder": "resnet18", "encoder_weights": None},
        "training": {"epochs": 1, "batch_size": 4, "device": "cpu", "num_workers": 0, "precision": "fp32"},
    }


@pytest.fixture(scope="module")
def trained(team: Any) -> Any:
    """One run submitted and watched to its end through the client."""
    exp = team.client.submit(_config(team.source), dataset="tiny", tags=["client"])
    [final] = team.client.watch(exp, timeout=900, poll_s=2)
    assert final.status.value == "succeeded", (final.error_message, team.live.log.read_text()[-3000:])
    return final


def test_errors_come_back_as_the_services_exception_types(team: Any) -> None:
    import httpx

    from worker import errors
    from worker.client import Client

    assert team.client.me().name == "ada" and team.viewer.me().role.value == "viewer"
    # the API checks its own tokens: no login page in between, and its OpenAPI page is open
    anonymous = httpx.get(f"{team.live.url}/api/runs", timeout=60)
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "AuthenticationFailed"
    docs = httpx.get(f"{team.live.url}/api/docs", timeout=60)
    assert docs.status_code == 200 and "/api/openapi.json" in docs.text
    with pytest.raises(errors.PermissionDenied):
        team.viewer.submit(_config(team.source), dataset="tiny")
    bad = _config(team.source)
    bad["model"]["arch"] = "NoSuchNet"
    with pytest.raises(errors.InvalidFields) as refused:
        team.client.submit(bad, dataset="tiny")
    assert "model.arch" in refused.value.fields
    with pytest.raises(errors.AuthenticationFailed):
        Client(team.live.url, token="sbt_not-a-token").me()
    assert team.client.runs(arch="NoSuchNet") == []  # nothing refused was queued


def test_submit_watch_and_read_metrics_leaderboard_and_store(team: Any, trained: Any) -> None:
    client = team.client
    assert [r.id for r in client.runs(tag="client", status="succeeded")] == [trained.id]
    frame = client.metrics(trained.id)
    assert list(frame.index) == [1] and frame["val_miou"].between(0, 1).all() and frame["train_loss"].notna().all()
    board = client.leaderboard("tiny", metric="miou")
    row = board[(board["kind"] == "run") & (board["id"] == trained.id)]
    assert len(row) == 1 and row["miou"].iloc[0] == pytest.approx(trained.best_metrics["miou"])

    store = client.open_store(trained.id, split="val")
    assert len(store) == 2 and store.read(store.ids[0]).shape == (3, 64, 64)
    assert Path(client.download_store(trained.id)).is_relative_to(client.cache_dir)


def test_predict_submit_and_enter_the_public_score(team: Any, trained: Any) -> None:
    client = team.client
    job = client.wait_job(client.predict([trained.id]).id, timeout=600, poll_s=2)
    assert job.status.value == "succeeded", job.error_message
    sub = client.wait_submission(client.submit_submission(run=trained.id).id, timeout=600, poll_s=2)
    assert sub.status.value == "succeeded" and sub.file_path, sub.error_message
    assert client.record_public_score(sub.id, 0.77, note="public LB").public_score == pytest.approx(0.77)
    board = client.leaderboard("tiny", kinds=["run"])
    assert board.loc[board["id"] == trained.id, "public_score"].iloc[0] == pytest.approx(0.77)
