"""``/runs``: list and read runs, their epoch metrics and logs; cancel, requeue; download stores and checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.orm import Session

from worker.api._bodies import RunControl
from worker.api._context import Caller, caller
from worker.api._downloads import zip_response
from worker.artifacts import local_path
from worker.db.models import RunStatus
from worker.errors import Conflict
from worker.schemas import EpochMetricRead, LogLine, RunRead, RunSummary
from worker.services import lifecycle, probabilities, runs
from worker.services.outbox import Queued

__all__ = ["router"]

router = APIRouter(prefix="/runs", tags=["runs"])

Me = Annotated[Caller, Depends(caller)]


@router.get("", response_model=list[RunSummary], summary="List runs")
def list_runs(
    me: Me,
    status: Annotated[list[str] | None, Query(description="queued, running, succeeded, failed, cancelled")] = None,
    experiment_id: int | None = None,
    group_id: int | None = None,
    dataset_id: int | None = None,
    owner_id: int | None = None,
    arch: str | None = None,
    tag: str | None = None,
    search: str | None = Query(default=None, max_length=200, description="Part of the run's name."),
    order: Literal["newest", "oldest", "queue", "best"] = "newest",
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0),
) -> list[RunSummary]:
    """Runs as list rows, filtered; ``order`` is ``newest``, ``oldest``, ``queue`` or ``best``."""
    return me.run(lambda s, _: runs.list_runs(
        s, status=status or None, experiment_id=experiment_id, group_id=group_id, dataset_id=dataset_id,
        owner_id=owner_id, arch=arch, tag=tag, search=search, order=order, limit=limit, offset=offset))


@router.get("/{run_id}", response_model=RunRead, summary="Get a run")
def get_run(run_id: int, me: Me) -> RunRead:
    """One run with its config, best metrics and artifact locations."""
    return me.run(lambda s, _: runs.get_run(s, run_id=run_id))


@router.get("/{run_id}/metrics", response_model=list[EpochMetricRead], summary="A run's epoch metrics")
def epoch_metrics(run_id: int, me: Me, since_epoch: int | None = None) -> list[EpochMetricRead]:
    """The run's per-epoch rows in epoch order (only those after ``since_epoch`` when given)."""
    return me.run(lambda s, _: runs.epoch_metrics(s, run_id=run_id, since_epoch=since_epoch))


@router.get("/{run_id}/logs", response_model=list[LogLine], summary="A run's log")
def run_logs(run_id: int, me: Me, after_id: int = Query(default=0, ge=0),
             limit: int = Query(default=500, ge=1, le=5000)) -> list[LogLine]:
    """Log lines with ids above ``after_id`` (pass the last id seen to follow the log)."""
    return me.run(lambda s, _: runs.run_logs(s, run_id=run_id, after_id=after_id, limit=limit))


@router.post("/{run_id}/cancel", response_model=RunControl, summary="Cancel a run")
def cancel(run_id: int, me: Me) -> RunControl:
    """A queued run is cancelled at once; a running one is flagged and stopped by its worker within seconds."""
    status = me.run(lambda s, actor: lifecycle.request_cancel(s, run_id=run_id, actor=actor))
    return RunControl(run_id=run_id, status=status)


@router.post("/{run_id}/requeue", response_model=RunControl, summary="Requeue a run")
def requeue(run_id: int, me: Me) -> RunControl:
    """Put a failed or cancelled run back in the queue; it resumes from its last checkpoint."""
    _, problem = me.submit(lambda s, actor: lifecycle.requeue(s, run_id=run_id, actor=actor),
                           queued=lambda _: Queued(run_ids=(run_id,)))
    return RunControl(run_id=run_id, status=RunStatus.QUEUED, queue_problem=problem)


_ZIP = {200: {"content": {"application/zip": {}}, "description": "A zip of the folder."},
        304: {"description": "Not modified: the folder is the version named in If-None-Match."}}


@router.get("/{run_id}/store", response_class=Response, responses=_ZIP, summary="Download a probability store")
def download_store(run_id: int, request: Request, me: Me, split: Literal["val", "test"] = "val") -> Response:
    """The run's stored probabilities of a split, as a zip of the store folder (open it with segcore's store reader).

    ``val``: the validation predictions written when the training finished; ``test``: those of its
    last ``predict`` job. The store is fetched through the artifact root (local or object store).
    """
    arts = me.built.artifacts

    def find(s: Session, actor: int) -> Path:
        found = probabilities.resolve_probabilities(s, actor=actor, kind="run", id=run_id, split=split,
                                                    artifacts=arts)
        return Path(found.stores[0]["path"])

    folder = me.run(find)
    return zip_response(request, folder, name=f"run{run_id}-{split}")


@router.get("/{run_id}/checkpoint", response_class=Response, responses=_ZIP, summary="Download a checkpoint")
def download_checkpoint(run_id: int, request: Request, me: Me) -> Response:
    """The run's best checkpoint folder (config, weights, metrics, provenance) as a zip."""
    arts = me.built.artifacts

    def find(s: Session, _: int) -> str:
        run = runs.get_run(s, run_id=run_id)
        if not run.checkpoint_dir:
            raise Conflict(f"run {run_id} ({run.name}) is {run.status.value} and has no checkpoint yet; one is written "
                           "after its first validated epoch, look again then")
        return run.checkpoint_dir

    folder = local_path(arts, me.run(find))
    if not folder.is_dir():
        raise Conflict(f"the checkpoint of run {run_id} is no longer stored; it was moved or deleted")
    return zip_response(request, folder, name=f"run{run_id}-checkpoint")
