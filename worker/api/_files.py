"""Downloads of what a group or ensemble stored, and of submission files (a run's are in ``_runs``).

The dashboard's file picker links here (with the browser's web login), and so does the Python client.
Stores come as streamed zips of their folder; a submission file as itself. Everything is fetched through
the artifact root, local or object store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from worker.api._context import Caller, caller
from worker.api._downloads import zip_response
from worker.artifacts import local_path
from worker.errors import Conflict
from worker.services import probabilities, submissions

__all__ = ["router"]

router = APIRouter()

Me = Annotated[Caller, Depends(caller)]

_ZIP = {200: {"content": {"application/zip": {}}, "description": "A zip of the store folder."}}


@router.get("/stores/{kind}/{object_id}", response_class=Response, responses=_ZIP, tags=["downloads"],
            summary="Download a run's, group's or ensemble's probability store")
def download_store(kind: Literal["run", "group", "ensemble"], object_id: int, request: Request, me: Me,
                   split: Literal["val", "test"] = "test") -> Response:
    """The stored probabilities of a split as a zip: a group's out-of-fold (``val``) or averaged test store,
    an ensemble's test store. An ensemble's validation predictions are its members' (download theirs)."""
    arts = me.built.artifacts

    def find(s: Session, actor: int) -> Path:
        found = probabilities.resolve_probabilities(s, actor=actor, kind=kind, id=object_id, split=split,
                                                    artifacts=arts)
        if len(found.stores) != 1:
            raise Conflict(f"{found.what}'s {split} predictions are read from {len(found.stores)} stores (its "
                           "members'); download those instead")
        return Path(found.stores[0]["path"])

    return zip_response(request, me.run(find), name=f"{kind}{object_id}-{split}")


@router.get("/submissions/{submission_id}/file", response_class=FileResponse, tags=["downloads"],
            summary="Download a submission file")
def download_submission(submission_id: int, me: Me) -> FileResponse:
    """The submission file (CSV, RLE) as the job wrote it."""
    sub = me.run(lambda s, _: submissions.get_submission(s, submission_id=submission_id))
    if not sub.file_path:
        raise Conflict(f"submission {submission_id} has no file yet ({sub.status.value}); its job writes it")
    path = local_path(me.built.artifacts, sub.file_path)
    if not path.is_file():
        raise Conflict(f"the file of submission {submission_id} is no longer stored; it was moved or deleted")
    return FileResponse(path, filename=path.name)
