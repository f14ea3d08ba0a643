"""A fold group's out-of-fold store is assembled and scored when its last member ends."""

from __future__ import annotations

import numpy as np
import pytest

from segcore.config import parse_config
from segcore.data.formats import open_dataset
from segcore.data.splits import fold_assignment
from segcore.inference.store import ProbabilityStore
from worker.artifacts import Artifacts
from worker.db.models import Run, RunStatus
from worker.services import experiments, groups


def _one_hot_store(path, dataset, ids, wrong=()):
    with ProbabilityStore.create(path, classes=dataset.classes, task="multiclass", dtype="float16") as w:
        for i in ids:
            gt = dataset.load_mask(i).astype(np.int64)
            gt[gt == 255] = 0
            if i in wrong:
                gt = (gt + 1) % dataset.num_classes
            w.write(i, np.eye(dataset.num_classes, dtype=np.float32)[gt].transpose(2, 0, 1))
    return str(path)


def test_oof_is_built_once_every_fold_run_has_ended(session, tiny_config, tmp_path):
    cfg = tiny_config(data={**tiny_config().data.model_dump(mode="json"),
                            "split": {"kind": "kfold", "n_folds": 2, "fold": 0}})
    exp = experiments.create_experiment(session, actor=None, config=cfg, n_folds=2, seeds=(0,))
    runs = session.query(Run).filter(Run.id.in_(exp.run_ids)).order_by(Run.id).all()
    group_id = runs[0].group_id
    assert all(r.group_id == group_id for r in runs) and len(runs) == 2

    ds = open_dataset(cfg.data.source, classes=cfg.data.classes, task=cfg.data.task)
    folds = fold_assignment(ds, parse_config(runs[0].config).data.split)
    wrong = {sorted(i for i, f in folds.items() if f == 1)[0]}
    for run in runs:
        fold = parse_config(run.config).data.split.fold
        ids = [i for i, f in folds.items() if f == fold]
        run.val_store = _one_hot_store(tmp_path / f"val{run.id}", ds, ids, wrong=wrong)
    runs[0].status = RunStatus.SUCCEEDED
    runs[1].status = RunStatus.RUNNING
    session.flush()
    assert groups.build_group_oof(session, actor=None, group_id=group_id, artifacts=Artifacts(str(tmp_path), cache=tmp_path / "cache")) is None

    runs[1].status = RunStatus.SUCCEEDED
    session.flush()
    group = groups.build_group_oof(session, actor=None, group_id=group_id, artifacts=Artifacts(str(tmp_path), cache=tmp_path / "cache"))
    assert group is not None and group.oof_store
    oof = ProbabilityStore.open(group.oof_store)
    assert sorted(oof.ids) == sorted(ds.ids)  # the union covers every labelled image once
    assert group.oof_metrics["num_images"] == len(ds.ids)
    assert 0.0 < group.oof_score < 1.0  # one image predicted wrong on purpose
    assert group.oof_score == pytest.approx(group.oof_metrics["miou"])
