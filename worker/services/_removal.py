"""Artifact files removed only once the transaction that dropped (or cleared) their rows has committed.

A service that deletes rows calls :func:`remove_after_commit` with the locations those rows named;
the files go right after the caller's commit, and stay when it rolls back. A crash between the
commit and the removal leaves files that no row names: ``segboard doctor`` reports them as unknown
folders (and ``--fix`` moves them aside). So no row ever points at a file that is gone.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.artifacts import Artifacts, is_url

__all__ = ["remove_after_commit", "remove_now", "pending_removals"]

log = logging.getLogger(__name__)

_KEY = "segboard.pending_removals"


def remove_now(artifacts: Artifacts, location: str) -> None:
    """Delete what is stored at ``location``, and this machine's mirror copy of it for a remote root."""
    text = artifacts.resolve(location)
    artifacts.remove(text)
    if is_url(text):
        mirror = artifacts.mirror(text)
        if mirror.is_dir():
            shutil.rmtree(mirror, ignore_errors=True)
        else:
            Path(mirror).unlink(missing_ok=True)


def pending_removals(session: Session) -> list[str]:
    """The locations this session removes at its next commit."""
    return [loc for _, loc in session.info.get(_KEY, [])]


def remove_after_commit(session: Session, artifacts: Artifacts, locations: Iterable[str]) -> None:
    """Remove ``locations`` right after the session's transaction commits; forget them if it rolls back."""
    if not sa.event.contains(session, "after_commit", _after_commit):
        sa.event.listen(session, "after_commit", _after_commit)
        sa.event.listen(session, "after_transaction_end", _after_transaction_end)
    session.info.setdefault(_KEY, []).extend((artifacts, str(loc)) for loc in locations)


def _after_commit(session: Session) -> None:
    for artifacts, location in session.info.pop(_KEY, []):
        try:
            remove_now(artifacts, location)
        except Exception as exc:  # noqa: BLE001 - the rows are gone: what is left is an orphan doctor reports
            log.warning("could not remove %s after the commit (%s); `segboard doctor --fix` moves it aside",
                        location, exc)


def _after_transaction_end(session: Session, transaction: Any) -> None:
    if transaction.parent is None:  # the outermost transaction ended without a commit (after one: already empty)
        session.info.pop(_KEY, None)
