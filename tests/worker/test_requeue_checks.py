"""Requeueing a run whose config the submit-time check refuses now is refused at once, with the reason,
instead of failing again on a worker a second later."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from worker.db.models import Run, RunStatus
from worker.errors import InvalidInput
from worker.services import experiments, lifecycle, members


def test_a_run_whose_config_would_fail_again_is_not_requeued(session, config_dict, seed):
    me = members.create_member(session, actor=None, name="ada").id
    run_id = experiments.create_experiment(session, actor=me, config=config_dict).run_ids[0]
    seed.finish(session, run_id, seed.metrics(0.3), status=RunStatus.FAILED)
    # a config stored before today's bounds (or whose data moved out of the dataset roots since)
    run = session.get(Run, run_id)
    run.config = {**run.config, "data": {**run.config["data"], "image_size": [100000, 100000]}}
    session.flush()
    with pytest.raises(InvalidInput, match=rf"(?s)run {run_id} would fail again: .*data.image_size.*clone it"):
        lifecycle.requeue(session, run_id=run_id, actor=me)
    assert session.scalar(sa.select(Run.status).where(Run.id == run_id)) is RunStatus.FAILED

    run.config = {**run.config, "data": {**run.config["data"], "image_size": [64, 64]}}
    session.flush()
    lifecycle.requeue(session, run_id=run_id, actor=me)
    assert session.get(Run, run_id).status is RunStatus.QUEUED
