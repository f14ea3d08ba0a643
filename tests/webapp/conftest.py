"""Fixtures of the dashboard tests: a real SQLite database in ``tmp_path``, seeded through the services.

Every test gets its own database, artifact root and dataset root through ``SEGBOARD_*``
variables, set before the app first builds its settings; the dashboard's caches are cleared
around each test. Sending to the queue (Celery/Redis) is the one boundary replaced: the
``published`` fixture records what would have been sent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "webapp" / "streamlit_app.py"
CLASSES = ["background", "class_1", "class_2", "class_3"]


@pytest.fixture(autouse=True, scope="session")
def _data_roots_allow_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Datasets made in ``tmp_path`` folders may be registered and trained on: this session's temporary
    folder is an extra dataset root for the settings this process builds from its environment."""
    import json

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEGBOARD_EXTRA_DATASET_ROOTS", json.dumps([str(tmp_path_factory.getbasetemp())]))
        yield


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, Any]:
    """Settings for one test: SQLite, artifact and dataset roots under ``tmp_path``, migrated."""
    import streamlit as st

    from webapp import resources
    from worker.db.migrate import upgrade
    from worker.db.session import make_engine, make_session_factory
    from worker.settings import get_settings

    home = tmp_path / "home"
    monkeypatch.setenv("SEGBOARD_HOME", str(home))
    monkeypatch.setenv("SEGBOARD_DATABASE_URL", f"sqlite:///{tmp_path / 'segboard.db'}")
    monkeypatch.setenv("SEGBOARD_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.setenv("SEGBOARD_DATASET_ROOT", str(tmp_path / "datasets"))
    monkeypatch.setenv("SEGBOARD_REDIS_URL", "redis://127.0.0.1:1/15")
    monkeypatch.delenv("SEGBOARD_SETTINGS_FILE", raising=False)
    (tmp_path / "datasets").mkdir()
    settings = get_settings()
    engine = make_engine(settings)
    upgrade(engine)
    resources.reset()
    st.cache_data.clear()
    yield {"settings": settings, "factory": make_session_factory(engine), "tmp": tmp_path}
    resources.reset()
    st.cache_data.clear()
    engine.dispose()


@pytest.fixture
def published(monkeypatch) -> list[dict[str, Any]]:
    """Replace the send-to-broker step; each call's run and job ids are recorded."""
    from worker.queue import dispatch

    calls: list[dict[str, Any]] = []

    def fake_publish(app: Any, factory: Any, *, run_ids=(), job_ids=()) -> int:
        from worker.db.session import session_scope
        from worker.services import lifecycle

        with session_scope(factory) as session:  # the database side stays real
            if run_ids:
                lifecycle.publish_queued(session, run_ids=run_ids)
            if job_ids:
                lifecycle.publish_queued_jobs(session, job_ids=job_ids)
        calls.append({"run_ids": list(run_ids), "job_ids": list(job_ids)})
        return len(run_ids) + len(job_ids)

    monkeypatch.setattr(dispatch, "publish", fake_publish)
    monkeypatch.setattr("webapp.resources._celery", lambda: object())
    return calls


@contextlib.contextmanager
def scope(env: dict[str, Any], clear: bool = True):
    """A transaction on the test database; the dashboard's cached queries are cleared after it,
    as a write through the dashboard would (a worker's writes are seen after the caches' TTL)."""
    from webapp import resources
    from worker.db.session import session_scope

    with session_scope(env["factory"]) as session:
        yield session
    if clear:
        resources.clear_cached_queries()


def metrics(base: float) -> dict[str, Any]:
    """A full ``best_metrics`` dict around ``base``."""
    return {
        "miou": base,
        "miou_per_image": base - 0.02,
        "dice": base + 0.05,
        "dice_per_image": base + 0.03,
        "pixel_accuracy": min(0.99, base + 0.2),
        "per_class": {"miou": [0.95, base, base - 0.1, base - 0.3], "dice": [0.97, base + 0.05, base - 0.05, base - 0.2]},
    }


def write_store(path: Path, dataset: Any, ids: list[str], *, noise: float, seed: int, test: bool = False) -> str:
    """A real probability store over ``ids``: the ground truth (or, for test images, a fixed pattern)
    blurred with noise, so that members differ and scores are below 1."""
    import numpy as np

    from segcore.inference.store import ProbabilityStore

    rng = np.random.default_rng(seed)
    c = dataset.num_classes
    with ProbabilityStore.create(path, classes=list(dataset.classes), task="multiclass", source=path.name) as w:
        for image_id in ids:
            if test:
                h, wd = dataset.load_test_image(image_id).shape[:2]
                mask = np.zeros((h, wd), np.int64)
                mask[h // 4: h // 2, wd // 4: wd // 2] = 1
            else:
                mask = dataset.load_mask(image_id).astype(np.int64)
                mask[mask >= c] = 0
            logits = np.eye(c)[mask].transpose(2, 0, 1) * 3.0 + rng.normal(0, noise, (c, *mask.shape))
            p = np.exp(logits - logits.max(0))
            w.write(image_id, (p / p.sum(0)).astype(np.float32))
    return str(path)


def finish(env: dict[str, Any], run_id: int, base: float, *, epochs: int = 3, val_store: str | None = None) -> None:
    """Take a queued run through claim, per-epoch progress and success, as a worker would."""
    from worker.services import lifecycle

    t0 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.timezone.utc)
    with scope(env) as s:
        token = lifecycle.claim_run(s, run_id=run_id, worker_name="box1/cpu", device="cpu", lease_s=60, now=t0)
        assert token is not None
        for e in range(1, epochs + 1):
            val = {k: v for k, v in metrics(base - 0.05 * (epochs - e)).items()}
            lifecycle.record_epoch(
                s, token=token, epoch=e, epochs=epochs, train_loss=1.0 / e, lr=1e-3, images_per_s=50.0,
                eta_s=float(epochs - e) * 10, val=val, is_best=True, monitor="miou",
                resources={"cpu_percent": 150.0 + e, "rss_gb": 1.5, "processes": 3, "cpus": 2},
                now=t0 + dt.timedelta(seconds=10 * e),
            )
        lifecycle.finish_run(
            s, token=token, best_metrics=metrics(base), monitor="miou", checkpoint_dir=None, val_store=val_store,
            dataset_fingerprint=None, epochs_run=epochs, now=t0 + dt.timedelta(seconds=10 * epochs + 1),
        )


def config_dict(source: Any, **overrides: Any) -> dict[str, Any]:
    """A valid config on the tiny synthetic dataset."""
    cfg: dict[str, Any] = {
        "name": "tiny",
        "data": {
            "source": source.model_dump(mode="json"),
            "classes": list(CLASSES),
            "split": {"kind": "holdout", "val_fraction": 0.25, "seed": 0},
        },
        "model": {"arch": "Unet", "encoder": "resnet18", "encoder_weights": None},
        "loss": "0.6*ce + 0.4*jaccard",
        "augmentation": {"preset": "flips"},
        "training": {"epochs": 3, "batch_size": 8},
    }
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Any:
    """A 12-image synthetic COCO dataset of 64px images (with 3 test images), shared by the tests."""
    from segcore.data.synthetic import make_synthetic_coco

    root = tmp_path_factory.mktemp("webapp_coco")
    return make_synthetic_coco(root, num_images=12, num_classes=3, size=64, num_test_images=3, seed=0, imbalance=0.3)


@pytest.fixture
def seeded(env, tiny_dataset) -> dict[str, Any]:
    """Two members, the dataset, a 2-fold experiment (finished), two single runs (one finished,
    one running), submissions with public scores, and an ensemble."""
    from worker.services import datasets, ensembles, experiments, lifecycle, members, submissions

    with scope(env) as s:
        ada = members.create_member(s, actor=None, name="ada")
        bob = members.create_member(s, actor=None, name="bob")
        ds = datasets.register_dataset(s, actor=ada.id, name="tiny", source=tiny_dataset, classes=CLASSES,
                                       check_pixels=False)
        folds = experiments.create_experiment(
            s, actor=ada.id, name="unet-folds", config=config_dict(tiny_dataset), n_folds=2, seeds=[0],
            dataset_id=ds.id, tags=["baseline"],
        )
        single = experiments.create_experiment(
            s, actor=bob.id, name="fpn", config=config_dict(tiny_dataset, model={"arch": "FPN", "encoder": "resnet18"}),
            dataset_id=ds.id, tags=["fpn"],
        )
        third = experiments.create_experiment(
            s, actor=bob.id, name="linknet", dataset_id=ds.id,
            config=config_dict(tiny_dataset, model={"arch": "Linknet", "encoder": "resnet18"}),
        )
        live = experiments.create_experiment(s, actor=ada.id, name="live", config=config_dict(tiny_dataset),
                                             dataset_id=ds.id)
    from segcore.data.formats import open_dataset

    dataset = open_dataset(tiny_dataset, classes=CLASSES)
    stores = env["tmp"] / "artifacts" / "stores"
    holdout = dataset.ids[:3]  # the single runs share one hold-out split
    fold_runs = folds.run_ids
    finish(env, fold_runs[0], 0.70, val_store=write_store(stores / "f0", dataset, dataset.ids[:6], noise=1.5, seed=1))
    finish(env, fold_runs[1], 0.74, val_store=write_store(stores / "f1", dataset, dataset.ids[6:], noise=1.5, seed=2))
    finish(env, single.run_ids[0], 0.78, val_store=write_store(stores / "fpn", dataset, holdout, noise=2.0, seed=3))
    finish(env, third.run_ids[0], 0.66, val_store=write_store(stores / "link", dataset, holdout, noise=2.5, seed=4))
    with scope(env) as s:
        token = lifecycle.claim_run(s, run_id=live.run_ids[0], worker_name="box2/cuda:0", device="cuda:0", lease_s=600)
        lifecycle.record_epoch(s, token=token, epoch=1, epochs=3, train_loss=0.9, lr=1e-3, images_per_s=30.0,
                               eta_s=40.0, val=metrics(0.5), is_best=True, monitor="miou")
        lifecycle.record_log(s, run_id=live.run_ids[0], message="epoch 1 done")
        subs = {}
        # public scores: linknet (val 0.66) is submitted after fpn (val 0.78, public 0.72) and scores
        # 0.73 in public, so it is flagged "public rose while validation fell"
        for run_id, public in [(fold_runs[0], 0.69), (fold_runs[1], 0.75), (single.run_ids[0], 0.72),
                               (third.run_ids[0], 0.73)]:
            sub = submissions.create_submission(s, actor=ada.id, run_id=run_id, format="csv_rle")
            submissions.record_public_score(s, actor=ada.id, submission_id=sub.id, score=public)
            subs[run_id] = sub.id
        ens = ensembles.create_ensemble(
            s, actor=ada.id, name="fpn+unet", method="soft",
            members=[{"kind": "run", "id": single.run_ids[0]}, {"kind": "run", "id": fold_runs[1]}],
            val_metrics=metrics(0.80), member_scores=[0.78, 0.74],
            test_store=write_store(stores / "ens_test", dataset, dataset.test_ids, noise=1.0, seed=5, test=True),
        )
    return {
        "ada": ada.id, "bob": bob.id, "dataset": ds.id, "fold_runs": fold_runs, "fold_group": folds.groups[0].id,
        "fpn_run": single.run_ids[0], "linknet_run": third.run_ids[0], "live_run": live.run_ids[0],
        "ensemble": ens.id, "submissions": subs, "source": tiny_dataset, "dataset_obj": dataset,
    }


def app(**query: Any):
    """A fresh AppTest of the dashboard (generous timeout: the machine is shared)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = str(v)
    return at


def open_page(page: str, *, actor: int | None = None, **query: Any):
    """Run the app once, switch to ``app_pages/<page>.py`` and run it (with ``query`` params)."""
    from webapp import state

    at = app()
    if actor is not None:
        at.session_state[state.ACTOR] = actor
    at.run()
    at.switch_page(f"app_pages/{page}.py")
    for k, v in query.items():
        at.query_params[k] = str(v)
    return at.run()


def open_tab(at, key: str, label: str):
    """Open the tab ``label`` of the lazy tabs whose session-state key is ``key`` (only the open tab's code runs)."""
    at.session_state[key] = label
    return at.run()


def no_exceptions(at) -> None:
    """Assert the page rendered without a traceback."""
    assert not at.exception, [e.value for e in at.exception]


@pytest.fixture
def ui(env) -> Any:
    """The helpers above, for the test modules (which cannot import this conftest)."""
    import types

    return types.SimpleNamespace(
        app=app, open_page=open_page, open_tab=open_tab, no_exceptions=no_exceptions, scope=lambda clear=True: scope(env, clear), finish=lambda rid, base: finish(env, rid, base),
        metrics=metrics, config_dict=config_dict, CLASSES=CLASSES,
    )
