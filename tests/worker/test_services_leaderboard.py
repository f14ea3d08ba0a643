"""Leaderboard rows, group aggregates, the public-up/val-down flag, speed, and the correlation report."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sqlalchemy as sa

from worker.db.base import utcnow
from worker.db.models import METRIC_KINDS, Experiment, Run, RunGroup, RunStatus, Submission
from worker.errors import InvalidInput, NotFound
from worker.schemas import RowKind
from worker.services import ensembles, experiments, groups, leaderboard, members, pseudo, public_scores, submissions


@pytest.fixture
def board(any_session, config_dict, seed):
    """A small team history on one dataset, built through the services.

    - group G: 3 folds, miou 0.60 / 0.62 / 0.64, OOF miou 0.63; one fold run still running is absent
    - run B: miou 0.70, first submission, public 0.65
    - run C: cloned from B, miou 0.68, public 0.67 -> public up, val down vs its parent: flagged
    - ensemble E of G and B: val 0.72, public 0.69
    - student S of a round taught by E: miou 0.71, public 0.70 -> flagged against its teacher
    """
    s = any_session
    me = members.create_member(s, actor=None, name="ann").id
    other = members.create_member(s, actor=None, name="bob").id
    ds = seed.add_dataset(s)
    g = experiments.create_experiment(s, actor=me, name="cv", config=config_dict, n_folds=3, dataset_id=ds,
                                      tags=["cv"])
    for run_id, miou in zip(g.run_ids, (0.60, 0.62, 0.64), strict=True):
        seed.finish(s, run_id, seed.metrics(miou))
    group_id = g.groups[0].id
    groups.set_group_oof(s, actor=me, group_id=group_id, oof_store="/a/oof", oof_metrics=seed.metrics(0.63))
    config_dict["model"]["arch"] = "FPN"
    b = experiments.create_experiment(s, actor=other, name="fpn", config=config_dict, dataset_id=ds).run_ids[0]
    seed.finish(s, b, seed.metrics(0.70))
    c = experiments.create_experiment(s, actor=other, name="fpn-clone", config=config_dict, dataset_id=ds,
                                      parent_run_id=b).run_ids[0]
    seed.finish(s, c, seed.metrics(0.68))
    running = experiments.create_experiment(s, actor=me, name="busy", config=config_dict, dataset_id=ds).run_ids[0]
    s.get(Run, running).status = RunStatus.RUNNING
    e = ensembles.create_ensemble(
        s, actor=me, name="G+B", method="soft",
        members=[{"kind": "group", "id": group_id}, {"kind": "run", "id": b}], val_metrics=seed.metrics(0.72),
    ).id
    rnd = pseudo.create_pseudo_round(s, actor=me, name="r1", teacher_kind="ensemble", teacher_id=e,
                                     params={"pixel_threshold": 0.9})
    st = experiments.create_experiment(s, actor=me, name="student", config=config_dict, dataset_id=ds,
                                       pseudo_round_id=rnd.id).run_ids[0]
    seed.finish(s, st, seed.metrics(0.71))
    for kw, score in (({"run_id": b}, 0.65), ({"run_id": c}, 0.67), ({"group_id": group_id}, 0.60),
                      ({"ensemble_id": e}, 0.69), ({"run_id": st}, 0.70)):
        sub = submissions.create_submission(s, actor=me, file_path="/x.csv", **kw)
        submissions.record_public_score(s, actor=me, submission_id=sub.id, score=score)
    # an older, worse submission of B must not hide its best public score
    sub = submissions.create_submission(s, actor=me, run_id=b)
    submissions.record_public_score(s, actor=me, submission_id=sub.id, score=0.5)
    s.flush()
    return {"ds": ds, "group": group_id, "folds": g.run_ids, "b": b, "c": c, "e": e, "student": st, "running": running,
            "me": me, "other": other, "round": rnd.id}


def _rows(session, **kw):
    return {(r.kind.value, r.id): r for r in leaderboard.leaderboard(session, **kw)}


def test_rows_of_every_kind_with_metrics_public_scores_and_lineage(any_session, board):
    rows = _rows(any_session, dataset_id=board["ds"])
    assert set(rows) == {
        *(("run", i) for i in board["folds"]), ("run", board["b"]), ("run", board["c"]),
        ("group", board["group"]), ("ensemble", board["e"]), ("student", board["student"]),
    }
    b = rows[("run", board["b"])]
    assert b.metrics["miou"] == pytest.approx(0.70) and b.metrics["dice"] == pytest.approx(0.80)
    assert set(b.metrics) == set(METRIC_KINDS) and b.arch == "FPN"
    assert b.public_score == pytest.approx(0.65) and b.n_submissions == 2
    assert b.gap == pytest.approx(-0.05)
    assert rows[("run", board["c"])].parent == f"run:{board['b']}"
    assert rows[("student", board["student"])].parent == f"ensemble:{board['e']}"
    ens = rows[("ensemble", board["e"])]
    assert ens.val_score == pytest.approx(0.72) and ens.metrics["pixel_accuracy"] == pytest.approx(0.92)
    assert ens.parent == f"group:{board['group']}, run:{board['b']}" and ens.n_runs == 2


def test_group_rows_hold_mean_and_std_over_runs_and_the_oof_score(any_session, board):
    g = _rows(any_session)[("group", board["group"])]
    assert g.n_runs == 3 and g.name == "cv [3 folds x 1 seed]" and g.tags == ["cv"]
    assert g.metrics["miou"] == pytest.approx(0.62) and g.metrics_std["miou"] == pytest.approx(0.02)
    assert g.metrics["dice"] == pytest.approx(0.72) and g.metrics_std["dice"] == pytest.approx(0.02)
    assert g.oof_score == pytest.approx(0.63) and g.val_score == pytest.approx(0.63)
    assert g.public_score == pytest.approx(0.60) and g.gap == pytest.approx(-0.03)


def test_public_up_while_val_down_is_flagged_against_the_right_reference(any_session, board):
    rows = _rows(any_session)
    c = rows[("run", board["c"])]
    assert c.public_up_val_down and c.flag_reference == f"parent run:{board['b']}"
    student = rows[("student", board["student"])]
    assert student.public_up_val_down and student.flag_reference == f"parent ensemble:{board['e']}"
    ens = rows[("ensemble", board["e"])]  # previous submission: G (public 0.60, val 0.63); both rose
    assert not ens.public_up_val_down and ens.flag_reference.startswith("previous submission")
    assert not rows[("group", board["group"])].public_up_val_down
    assert rows[("run", board["b"])].flag_reference is None  # B's best submission came first: no reference
    assert not any(r.public_up_val_down for k, r in rows.items() if k[0] == "run" and k[1] in board["folds"])


def test_sorting_filters_and_limits(any_session, board):
    ranked = leaderboard.leaderboard(any_session)
    assert [(r.kind.value, r.id) for r in ranked[:3]] == [
        ("ensemble", board["e"]), ("student", board["student"]), ("run", board["b"]),
    ]
    vals = [r.val_score for r in ranked]
    assert vals == sorted(vals, reverse=True)
    by_public = leaderboard.leaderboard(any_session, sort="public", limit=2)
    assert [r.public_score for r in by_public] == pytest.approx([0.70, 0.69])
    asc = leaderboard.leaderboard(any_session, sort="miou", descending=False, kinds=["run"])
    assert [r.metrics["miou"] for r in asc] == pytest.approx([0.60, 0.62, 0.64, 0.68, 0.70])
    assert {r.kind for r in leaderboard.leaderboard(any_session, kinds=["group", "ensemble"])} == {
        RowKind.GROUP, RowKind.ENSEMBLE,
    }
    fpn = leaderboard.leaderboard(any_session, arch="FPN")
    assert {(r.kind.value, r.id) for r in fpn} == {
        ("run", board["b"]), ("run", board["c"]), ("student", board["student"]),
    }
    tagged = leaderboard.leaderboard(any_session, tag="cv")
    assert {r.kind for r in tagged} == {RowKind.RUN, RowKind.GROUP} and len(tagged) == 4
    assert {r.id for r in leaderboard.leaderboard(any_session, owner_id=board["other"])} == {board["b"], board["c"]}
    assert leaderboard.leaderboard(any_session, dataset_id=board["ds"] + 1) == []
    assert all(r.id != board["running"] for r in ranked)


def test_pages_follow_one_ranking_across_row_kinds(any_session, board):
    ranked = [(r.kind, r.id) for r in leaderboard.leaderboard(any_session)]
    assert len(ranked) >= 6 and len({k for k, _ in ranked}) == 4
    pages = [leaderboard.leaderboard(any_session, limit=2, offset=o) for o in range(0, len(ranked) + 2, 2)]
    assert [(r.kind, r.id) for page in pages for r in page] == ranked
    assert pages[-1] == [] and all(len(p) == 2 for p in pages[:len(ranked) // 2])


def test_run_tags_lists_every_tag_once(any_session, board):
    from worker.services import runs

    tags = runs.run_tags(any_session)
    assert "cv" in tags and tags == sorted(set(tags), key=str.lower)
    assert runs.run_tags(any_session, dataset_id=board["ds"] + 1) == []


@pytest.mark.parametrize(("kwargs", "message"), [({"sort": "speed"}, "sort key"), ({"kinds": ["model"]}, "row kind"),
                                                 ({"limit": 0}, "limit"), ({"offset": -1}, "offset")])
def test_bad_leaderboard_arguments(session, kwargs, message):
    with pytest.raises(InvalidInput, match=message):
        leaderboard.leaderboard(session, **kwargs)


def _bulk(session, seed, n_runs: int, folds: int) -> int:
    """``n_runs`` finished runs in groups of ``folds``, every tenth group with a scored submission."""
    ds = seed.add_dataset(session)
    now = utcnow()
    exp_rows, group_rows, run_rows = [], [], []
    n_groups = n_runs // folds
    session.execute(sa.insert(Experiment), [
        {"id": i + 1, "name": f"e{i}", "config": {}, "expansion": {"kind": "folds_seeds"}, "tags": ["t"], "note": "",
         "priority": 0, "dataset_id": ds, "created_at": now} for i in range(n_groups)
    ])
    for i in range(n_groups):
        group_rows.append({"id": i + 1, "experiment_id": i + 1, "kind": "folds_seeds", "label": "5 folds",
                           "dataset_id": ds, "monitor_metric": "miou", "created_at": now})
        for f in range(folds):
            miou = 0.5 + ((i * folds + f) % 997) / 2000
            run_rows.append({
                "experiment_id": i + 1, "group_id": i + 1, "dataset_id": ds, "name": f"r{i}-{f}", "config": {},
                "arch": "Unet" if i % 2 else "FPN", "encoder": "resnet18", "fold": f, "seed": 0,
                "status": "succeeded", "priority": 0, "cancel_requested": False, "attempt": 1,
                "best_metrics": seed.metrics(miou), "monitor_metric": "miou", "monitor_value": miou, "tags": ["t"],
                "created_at": now,
            })
    del exp_rows
    session.execute(sa.insert(RunGroup), group_rows)
    session.execute(sa.insert(Run), run_rows)
    session.execute(sa.insert(Submission), [
        {"run_id": (i * folds) + 1, "dataset_id": ds, "format": "csv", "public_score": 0.5 + i / 10000, "note": "",
         "created_at": now} for i in range(0, n_groups, 10)
    ] + [
        {"group_id": i + 1, "dataset_id": ds, "format": "csv", "public_score": 0.6, "note": "", "created_at": now}
        for i in range(0, n_groups, 10)
    ])
    session.flush()
    return ds


def test_two_thousand_runs_rank_in_a_fixed_number_of_queries(any_session, seed):
    """No N+1: the statements a leaderboard issues do not grow with its rows (timing lives in bench/)."""
    ds = _bulk(any_session, seed, 2000, 5)
    any_session.commit()
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    engine = any_session.get_bind()
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        small = leaderboard.leaderboard(any_session, limit=100)
        n_small = len(statements)
        statements.clear()
        for kwargs in ({"limit": 100}, {"limit": 2500, "dataset_id": ds}, {"sort": "dice", "arch": "Unet"},
                       {"sort": "public", "tag": "t", "limit": 500}):
            assert leaderboard.leaderboard(any_session, **kwargs)
        statements.clear()
        full = leaderboard.leaderboard(any_session, limit=2500)
        n_full = len(statements)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert len(small) == 100 and len(full) == 2000 + 400
    # 24 times the rows, still a handful of statements (an N+1 query would issue thousands)
    assert n_small <= 10 and n_full <= 10, (n_small, n_full)


def test_correlation_on_known_points(any_session, config_dict, seed):
    s = any_session
    ds = seed.add_dataset(s)
    x = [0.50, 0.60, 0.70, 0.80, 0.90]
    y = [0.52, 0.58, 0.71, 0.79, 0.93]
    ids = experiments.create_experiment(s, actor=None, config=config_dict, dataset_id=ds, seeds=range(5)).run_ids
    for run_id, xi, yi in zip(ids, x, y, strict=True):
        # dice falls as miou rises, so its ranks are exactly reversed against the public score
        seed.finish(s, run_id, seed.metrics(xi, dice=1.0 - xi, dice_per_image=None))
        sub = submissions.create_submission(s, actor=None, run_id=run_id)
        submissions.record_public_score(s, actor=None, submission_id=sub.id, score=yi)
    report = public_scores.correlation(s, dataset_id=ds)
    miou = report.metrics["miou"]
    assert miou.n == 5 and [p.val for p in miou.points] == pytest.approx(x)
    assert miou.pearson == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert miou.spearman == pytest.approx(1.0)
    slope, intercept = np.polyfit(x, y, 1)
    assert miou.slope == pytest.approx(slope) and miou.intercept == pytest.approx(intercept)
    assert 0 <= miou.pearson_p < 0.01
    dice = report.metrics["dice"]
    assert dice.spearman == pytest.approx(-1.0) and dice.pearson == pytest.approx(-miou.pearson)
    none = report.metrics["dice_per_image"]
    assert none.n == 0 and none.pearson is None and none.slope is None
    assert set(report.metrics) == set(METRIC_KINDS)


def test_correlation_needs_three_points_and_a_known_dataset(session, config_dict, seed):
    ds = seed.add_dataset(session)
    ids = experiments.create_experiment(session, actor=None, config=config_dict, dataset_id=ds, seeds=(0, 1)).run_ids
    for i, run_id in enumerate(ids):
        seed.finish(session, run_id, seed.metrics(0.5 + i / 10))
        sub = submissions.create_submission(session, actor=None, run_id=run_id)
        submissions.record_public_score(session, actor=None, submission_id=sub.id, score=0.4 + i / 10)
    report = public_scores.correlation(session, dataset_id=ds, metrics=["miou"])
    assert report.metrics["miou"].n == 2 and report.metrics["miou"].pearson is None
    with pytest.raises(NotFound):
        public_scores.correlation(session, dataset_id=ds + 5)
    with pytest.raises(InvalidInput, match="unknown metric"):
        public_scores.correlation(session, dataset_id=ds, metrics=["loss"])


def test_correlation_uses_group_oof_and_ensemble_metrics(any_session, board):
    report = public_scores.correlation(any_session, dataset_id=board["ds"])
    points = {(p.kind.value, p.id): p for p in report.metrics["miou"].points}
    assert points[("group", board["group"])].val == pytest.approx(0.63)
    assert points[("ensemble", board["e"])].val == pytest.approx(0.72)
    assert points[("student", board["student"])].public == pytest.approx(0.70)
    assert points[("run", board["b"])].public == pytest.approx(0.65)
    assert report.metrics["miou"].n == 5 and not math.isnan(report.metrics["miou"].pearson)
