"""What each non-training job kind does: thin calls into segcore and the service layer.

Every handler receives the worker context, the job (kind, target ids, params) and ``check()``,
which it calls between units of work (one run, one member): it raises when the job was
cancelled, its lease was lost or the worker is stopping. Outputs go under the artifact root,
written atomically by segcore (a store appears only once complete); running a handler twice
overwrites its own outputs, so a redelivered job is harmless. With a remote artifact root, inputs
are fetched into the local mirror and every output is pushed before its location is recorded.

Targets and params:

- ``predict``: ``{"run_ids": [..]}`` and/or ``{"group_ids": [..]}``; params ``split`` (``test``, default, or
  ``val``), ``tta`` (a :class:`segcore.inference.TTAPolicy` dict, or none), ``batch_size``. Test stores become the
  runs' ``test_store``; a run's validation store from training (no TTA) is kept as it is. A group's
  test store is the mean of its succeeded runs' test probabilities (each predicted here).
- ``evaluate``: ``{"run_ids": [..]}``; params ``tta``: scores each run's checkpoint on its
  validation images (predicting them again with the TTA policy when one is given).
- ``ensemble``: ``{"ensemble_id": n}``: the ensemble of its members' test stores.
- ``pseudo``: ``{"round_id": n}``: pseudo-labels of the teacher's test store, as a mask-folder
  dataset registered in the platform.
- ``submission``: ``{"submission_id": n}``; params ``threshold`` (multilabel), ``size`` (class
  maps): the submission file from its run's, group's or ensemble's test store; format
  ``class_map`` (``image_id,PredictionString``) or ``csv_rle`` (``image_name,class,rle``).
- ``dataset_import``: ``{"dataset_id": n}``: the dataset's statistics (in :mod:`worker.execution.job_runner`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segcore.config import TaskType
from segcore.errors import SegcoreError
from worker.artifacts import open_local_dataset
from worker.db.models import Ensemble, PseudoRound, Run, RunGroup, RunStatus, SourceKind, Submission
from worker.db.session import session_scope
from worker.errors import InvalidInput, NotFound, ServiceError
from worker.execution.context import WorkerContext

__all__ = [
    "predict_job",
    "evaluate_job",
    "ensemble_job",
    "pseudo_job",
    "submission_job",
    "store_statistics",
    "cache_inspection",
    "artifact_dir",
]

Check = Callable[[], None]
log = logging.getLogger(__name__)


def artifact_dir(ctx: WorkerContext, *parts: str) -> Path:
    """A folder under the artifact root on this machine (its local mirror for a remote root)."""
    return ctx.artifacts.local_dir(*parts)


def _run_ids(job: Any) -> list[int]:
    ids = job.target.get("run_ids")
    if ids is None and "run_id" in job.target:
        ids = [job.target["run_id"]]
    if not ids:
        raise InvalidInput("the job's target needs run_ids, e.g. {'run_ids': [3, 4]}")
    return [int(i) for i in ids]


def _trained_run(ctx: WorkerContext, run_id: int) -> tuple[Any, str]:
    """The run's validated config and its best checkpoint folder."""
    from segcore.config import parse_config

    with session_scope(ctx.factory) as s:
        run = s.get(Run, run_id)
        if run is None:
            raise InvalidInput(f"run {run_id} does not exist any more; recreate the job without it")
        if run.status is not RunStatus.SUCCEEDED or not run.checkpoint_dir:
            raise InvalidInput(f"run {run_id} is {run.status.value} and has no final checkpoint; "
                               "queue this job again once it succeeded")
        config, location = parse_config(run.config), str(run.checkpoint_dir)
    return config, str(ctx.artifacts.fetch(location))


def _roots(ctx: WorkerContext) -> Any:
    from worker.services.confinement import DataRoots

    return DataRoots.from_settings(ctx.settings)


def _open(ctx: WorkerContext, config: Any) -> Any:
    from worker.services.confinement import check_config

    check_config(config, roots=_roots(ctx))  # the paths, again, where they are read
    data = config.data
    return open_local_dataset(ctx.artifacts, data.source, classes=data.classes, task=data.task,
                              ignore_index=data.ignore_index, dataset_root=ctx.settings.dataset_root)


def _tta(params: dict[str, Any]) -> Any:
    from segcore.inference import TTAPolicy

    tta = params.get("tta")
    return TTAPolicy.model_validate(tta) if isinstance(tta, dict) else tta


def _predict_split(ctx: WorkerContext, run_id: int, split: str, params: dict[str, Any]) -> tuple[str, Any, Any]:
    """Predict one split of a run into ``runs/<id>/predictions/<split>[-tta]``; returns its location."""
    from segcore.data.splits import split_ids
    from segcore.errors import DatasetError
    from segcore.inference import predict_to_store

    config, checkpoint = _trained_run(ctx, run_id)
    ds = _open(ctx, config)
    if split == "test":
        ids, load = ds.test_ids, ds.load_test_image
        if not ids:
            raise DatasetError(f"the dataset of run {run_id} has no test images; set data.source.test_images")
    elif split == "val":
        ids, load = split_ids(ds, config.data.split)[1], ds.load_image
    else:
        raise InvalidInput(f"split {split!r} is not known; use 'test' or 'val'")
    tta = _tta(params)
    name = split if tta is None else f"{split}-tta"
    out = ctx.artifacts.local_dir("runs", str(run_id), "predictions", name)
    predict_to_store(checkpoint, load, ids, out, tta=tta, device=ctx.fit_device,
                     batch_size=int(params.get("batch_size", 8)), overwrite=True,
                     meta={"run_id": run_id, "split": split})
    return ctx.artifacts.push(out), ds, config


def _group_runs(ctx: WorkerContext, group_id: int) -> list[int]:
    import sqlalchemy as sa

    with session_scope(ctx.factory) as s:
        if s.get(RunGroup, group_id) is None:
            raise InvalidInput(f"group {group_id} does not exist any more; recreate the job without it")
        ids = list(s.scalars(sa.select(Run.id).where(Run.group_id == group_id, Run.status == RunStatus.SUCCEEDED)
                             .order_by(Run.id)))
    if not ids:
        raise InvalidInput(f"group {group_id} has no succeeded run to predict with; queue this job once one finished")
    return ids


def _predict_group(ctx: WorkerContext, group_id: int, params: dict[str, Any], check: Check) -> str:
    """The group's test store: the mean of its succeeded runs' test probabilities."""
    from segcore.ensemble import ensemble_to_store

    stores = []
    for run_id in _group_runs(ctx, group_id):
        check()
        location, _, _ = _predict_split(ctx, run_id, "test", params)
        with session_scope(ctx.factory) as s:
            s.get(Run, run_id).test_store = location
        stores.append(ctx.artifacts.fetch(location))
    check()
    out = artifact_dir(ctx, "groups", str(group_id), "test")
    ensemble_to_store(stores, out, method="soft", overwrite=True, meta={"group_id": group_id})
    location = ctx.artifacts.push(out)
    with session_scope(ctx.factory) as s:
        s.get(RunGroup, group_id).test_store = location
    return location


def predict_job(ctx: WorkerContext, job: Any, check: Check) -> dict[str, Any]:
    """Store test (or validation) probabilities of each run's best checkpoint, and groups' means."""
    split = str(job.params.get("split", "test"))
    stores: dict[str, str] = {}
    group_ids = [int(g) for g in job.target.get("group_ids", [])]
    if group_ids and split != "test":
        raise InvalidInput("a group's predictions are test predictions; its validation store is the out-of-fold one")
    for group_id in group_ids:
        stores[f"group:{group_id}"] = _predict_group(ctx, group_id, job.params, check)
    for run_id in (_run_ids(job) if not group_ids or job.target.get("run_ids") else []):
        check()
        location, _, _ = _predict_split(ctx, run_id, split, job.params)
        stores[str(run_id)] = location
        if split == "test":
            with session_scope(ctx.factory) as s:
                run = s.get(Run, run_id)
                if run is not None:
                    run.test_store = location
    return {"split": split, "stores": stores}


def evaluate_job(ctx: WorkerContext, job: Any, check: Check) -> dict[str, Any]:
    """Score each run on its validation images (with TTA when the params give a policy)."""
    from segcore.data.splits import split_ids
    from segcore.ensemble import evaluate

    scores: dict[str, Any] = {}
    for run_id in _run_ids(job):
        check()
        if _tta(job.params) is None:
            config, _ = _trained_run(ctx, run_id)
            with session_scope(ctx.factory) as s:
                store = s.get(Run, run_id).val_store
            if not store:
                raise InvalidInput(f"run {run_id} has no stored validation probabilities; predict them first")
            ds = _open(ctx, config)
            split_ids(ds, config.data.split)  # the split must still be computable on the data
        else:
            store, ds, config = _predict_split(ctx, run_id, "val", job.params)
        scores[str(run_id)] = evaluate([ctx.artifacts.fetch(store)], ds.load_mask,
                                       ignore_index=config.data.ignore_index)
    return {"scores": scores}


def _test_store(ctx: WorkerContext, kind: str, object_id: int) -> Any:
    """The test probabilities of a run, group or ensemble (fetched when remote): see ``resolve_probabilities``."""
    from worker.services.probabilities import resolve_probabilities

    with session_scope(ctx.factory) as s:
        return resolve_probabilities(s, actor=None, kind=kind, id=object_id, split="test",
                                     artifacts=ctx.artifacts).reader


def ensemble_job(ctx: WorkerContext, job: Any, check: Check) -> dict[str, Any]:
    """Combine the members' test stores into the ensemble's test store."""
    from segcore.ensemble import ensemble_to_store
    from worker.services.ensembles import segcore_method, set_ensemble_result

    ensemble_id = int(job.target["ensemble_id"])
    with session_scope(ctx.factory) as s:
        ens = s.get(Ensemble, ensemble_id)
        if ens is None:
            raise InvalidInput(f"ensemble {ensemble_id} does not exist any more")
        members = list(ens.members)
        method = segcore_method(ens.method)
    stores, weights = [], []
    for m in members:
        check()
        stores.append(_test_store(ctx, str(m["kind"]), int(m["id"])))
        weights.append(float(m.get("weight", 1.0)))
    out = artifact_dir(ctx, "ensembles", str(ensemble_id), "test")
    ensemble_to_store(stores, out, method=method, weights=weights, overwrite=True,
                      meta={"ensemble_id": ensemble_id})
    location = ctx.artifacts.push(out)
    with session_scope(ctx.factory) as s:
        # its status follows this job (the lifecycle module sets it when the job finishes)
        set_ensemble_result(s, actor=None, ensemble_id=ensemble_id, test_store=location)
    cache_inspection(ctx, [("ensemble", ensemble_id)])
    return {"ensemble_id": ensemble_id, "test_store": location}


def cache_inspection(ctx: WorkerContext, sources: list[tuple[str, int]]) -> None:
    """Cache the reports Inspect opens on (``inspection.precompute``); a failure is logged, never the caller's."""
    from worker.services import inspection

    for (kind, object_id), why in inspection.precompute(ctx.factory, settings=ctx.settings, sources=sources).items():
        log.info("no Inspect report cached for %s %s: %s", kind, object_id, why)


def pseudo_job(ctx: WorkerContext, job: Any, check: Check) -> dict[str, Any]:
    """Pseudo-label the teacher's test images into a mask-folder dataset and register it."""
    from segcore.config import MaskFolderSource
    from segcore.pseudo import make_pseudo_labels
    from worker.schemas import PseudoParams
    from worker.services.candidates import pseudo_filters
    from worker.services.confinement import check_source
    from worker.services.datasets import default_background, get_dataset, get_dataset_by_name, register_dataset
    from worker.services.pseudo import set_pseudo_round_result

    round_id = int(job.target["round_id"])
    with session_scope(ctx.factory) as s:
        rnd = s.get(PseudoRound, round_id)
        if rnd is None:
            raise InvalidInput(f"pseudo-label round {round_id} does not exist any more")
        teacher_kind, teacher_id = rnd.teacher_kind.value, int(rnd.teacher_id)
        params = dict(rnd.params or {})
        source_id, name = rnd.source_dataset_id, rnd.name
    store = _test_store(ctx, teacher_kind, teacher_id)
    if source_id is not None:
        with session_scope(ctx.factory) as s:
            src = get_dataset(s, dataset_id=source_id)
        source, classes, task, ignore_index = src.source, list(src.classes), src.task, src.ignore_index
        background = src.background
    elif teacher_kind == SourceKind.RUN.value:
        config, _ = _trained_run(ctx, teacher_id)
        source, classes, task = config.data.source, list(config.data.classes), config.data.task
        ignore_index = config.data.ignore_index
        background = default_background(classes, task, config.data.source.format)
    else:
        raise InvalidInput(f"pseudo-label round {round_id} has no source dataset; register the dataset and "
                           "train the teacher on it")
    check_source(source, roots=_roots(ctx))  # the paths, again, where they are read
    ds = open_local_dataset(ctx.artifacts, source, classes=classes, task=task, ignore_index=ignore_index,
                            dataset_root=ctx.settings.dataset_root)
    check()
    out = artifact_dir(ctx, "pseudo", str(round_id))
    p = PseudoParams.model_validate(params)
    report = make_pseudo_labels(
        store, ds.test_image_path, out,
        **pseudo_filters(p, len(classes), classes, background),
        ids=list(store.ids)[: p.limit] if p.limit else None,
        ignore_index=ignore_index,
        link="copy",
        overwrite=True,
    )
    report_dict = report.to_dict() if hasattr(report, "to_dict") else dict(getattr(report, "__dict__", {}))
    check()
    location = ctx.artifacts.push(out)
    produced_name = f"{name} (pseudo-labels, round {round_id})"
    with session_scope(ctx.factory) as s:
        try:  # a second execution of the job finds the dataset the first one registered
            produced = get_dataset_by_name(s, name=produced_name)
        except NotFound:
            produced = register_dataset(
                s, actor=None, name=produced_name,
                source=MaskFolderSource(root=location, ignore_value=ignore_index),
                classes=classes, ignore_index=ignore_index, check_pixels=False, artifacts=ctx.artifacts,
                roots=_roots(ctx), background=background,  # the pseudo-labelled data keeps its source's
            )
        set_pseudo_round_result(s, actor=None, round_id=round_id, report=_jsonable(report_dict),
                                dataset_id=produced.id)
    try:  # what registering queues elsewhere; this job is on a worker already. The round is done either way
        store_statistics(ctx, produced.id, check)
    except (ServiceError, SegcoreError) as exc:
        log.warning("pseudo-label round %s: no statistics for dataset %s: %s", round_id, produced.id, exc)
    return {"round_id": round_id, "dataset_id": produced.id, "path": location}


def store_statistics(ctx: WorkerContext, dataset_id: int, check: Check) -> dict[str, Any]:
    """Open a registered dataset, compute its statistics (EDA) and store them (the ``dataset_import`` job)."""
    from segcore.data.statistics import compute_statistics
    from worker.services.confinement import DataRoots, check_source
    from worker.services.datasets import get_dataset, set_dataset_statistics

    with session_scope(ctx.factory) as s:
        ds = get_dataset(s, dataset_id=dataset_id)
    check()
    check_source(ds.source, roots=DataRoots.from_settings(ctx.settings))  # the paths, again, where they are read
    opened = open_local_dataset(ctx.artifacts, ds.source, classes=ds.classes, task=ds.task,
                                ignore_index=ds.ignore_index, dataset_root=ctx.settings.dataset_root)
    stats = compute_statistics(opened)
    check()
    with session_scope(ctx.factory) as s:
        set_dataset_statistics(s, actor=None, dataset_id=dataset_id, statistics=stats.model_dump(mode="json"))
    return {"dataset_id": dataset_id, "images": len(opened.ids), "test_images": len(opened.test_ids)}


def _jsonable(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj, default=str))


def submission_job(ctx: WorkerContext, job: Any, check: Check) -> dict[str, Any]:
    """Write a submission file from the test store of its run, group or ensemble."""
    import numpy as np

    from segcore.inference import labels_from_probs
    from segcore.submission import write_class_map_csv, write_rle_csv
    from worker.services.submissions import set_submission_file

    submission_id = int(job.target["submission_id"])
    with session_scope(ctx.factory) as s:
        sub = s.get(Submission, submission_id)
        if sub is None:
            raise InvalidInput(f"submission {submission_id} does not exist any more")
        if sub.run_id is not None:
            kind, source_id = SourceKind.RUN.value, sub.run_id
        elif sub.group_id is not None:
            kind, source_id = SourceKind.GROUP.value, sub.group_id
        else:
            # a submission has exactly one source, so ensemble_id is set here
            kind, source_id = SourceKind.ENSEMBLE.value, int(sub.ensemble_id)  # type: ignore[arg-type]
        fmt = sub.format
    reader = _test_store(ctx, kind, source_id)
    threshold = job.params.get("threshold", 0.5)
    n = len(reader.classes)

    def labels() -> Any:
        for k, (image_id, probs) in enumerate(reader):
            if k % 16 == 0:
                check()
            yield image_id, labels_from_probs(probs, reader.task, threshold)

    out = artifact_dir(ctx, "submissions", str(submission_id), "submission.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "class_map":
        if reader.task != TaskType.MULTICLASS:
            raise InvalidInput("a class-map submission needs a multiclass model; use the csv_rle format")
        size = tuple(int(v) for v in job.params.get("size", (256, 256)))
        # size is the job's two-number size param; tuple() of it is typed tuple[int, ...]
        rows = write_class_map_csv(out, labels(), size=size, num_classes=n)  # type: ignore[arg-type]
    elif fmt == "csv_rle":
        def masks() -> Any:
            for image_id, lab in labels():
                yield image_id, (lab if lab.ndim == 3 else (np.arange(n)[:, None, None] == lab[None]).astype(np.uint8))

        rows = write_rle_csv(out, masks(), classes=reader.classes)
    else:
        raise InvalidInput(f"submission format {fmt!r} is not known; use class_map or csv_rle")
    location = ctx.artifacts.push(out)
    with session_scope(ctx.factory) as s:
        set_submission_file(s, actor=None, submission_id=submission_id, file_path=location)
    return {"submission_id": submission_id, "file": location, "rows": rows}
