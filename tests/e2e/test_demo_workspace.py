"""The demo workspace at test size, built into a live ``segboard up``, and every page of it in Chromium.

``worker.demo.build_workspace`` (what ``make demo`` runs, here with the ``test`` profile: a synthetic
dataset of 64px images, 1 epoch, 2 folds) fills a single-user ``segboard up`` through the services;
then each page is opened in its own browser context and must show content (a table, a chart, a
metric), not an empty state. A screenshot of a failing page goes to ``test-artifacts/``.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

@pytest.fixture(scope="module")
def demo(start_segboard) -> dict[str, Any]:
    """A live ``segboard up`` (single-user) filled with the test-size demo workspace."""
    from worker.demo import PROFILES, build_workspace

    live = start_segboard(auth="none")
    lines: list[str] = []
    built = build_workspace(live.settings, profile=PROFILES["test"], factory=live.factory, say=lines.append)
    return {"live": live, "built": built, "lines": lines}


def test_the_build_makes_every_object_through_the_services(demo):
    from worker.db.models import RunStatus
    from worker.db.session import session_scope
    from worker.services import datasets, ensembles, groups, pseudo, runs, submissions

    built, live = demo["built"], demo["live"]
    with session_scope(live.factory) as s:
        (dataset,) = [d for d in datasets.list_datasets(s) if d.name == "synthetic-shapes"]
        assert dataset.statistics and not dataset.statistics.get("sampled")  # every image counted by its job
        all_runs = runs.list_runs(s, limit=100)
        assert len(all_runs) == 2 + 2 * 2 + 1  # baseline folds, ablation 2 values x 2 folds, the student
        assert all(r.status is RunStatus.SUCCEEDED for r in all_runs), [(r.id, r.error_message) for r in all_runs]
        for group_id in built["groups"]:
            group = groups.get_group(s, group_id=group_id)
            assert group.oof_score is not None and group.test_store, group
        ens = ensembles.get_ensemble(s, ensemble_id=built["ensemble"])
        assert ens.val_score is not None and ens.test_store and [m.id for m in ens.members] == built["groups"]
        rnd = pseudo.get_pseudo_round(s, round_id=built["round"])
        assert rnd.dataset_id is not None and rnd.student_run_ids == [built["student"]]
        scored = submissions.list_submissions(s, scored_only=True)
        assert len(scored) == len(built["groups"]) + 2  # each group, the ensemble, the student
        assert all(0.0 <= x.public_score <= 1.0 for x in scored)
    assert any("out-of-fold" in line for line in demo["lines"]), demo["lines"]


TABLE, CHART, METRIC = '[data-testid="stDataFrame"]', ".js-plotly-plot", '[data-testid="stMetric"]'
# (id, path, heading, a text the page must show outside its tables (drawn on a canvas) or None, the content
# it must show: a table, a chart or a metric). {run} and {ensemble} are filled with what the build made.
# New experiment, Sweeps and Storage only have to load without an error: the demo makes no sweep.
PAGES = [
    ("overview", "", "Overview", None, TABLE),
    ("datasets", "datasets", "Datasets", "synthetic-shapes", CHART),
    ("new-experiment", "new-experiment", "New experiment", None, None),
    ("queue", "queue", "Queue", None, TABLE),
    ("leaderboard", "leaderboard", "Leaderboard", None, TABLE),
    ("sweeps", "sweeps", "Sweeps", None, None),
    ("run-detail", "run?run={run}", "Run detail", "demo-baseline", CHART),
    ("ensemble-builder", "ensemble-builder?ensemble={ensemble}", "Ensemble builder", "demo-ensemble", TABLE),
    ("pseudo-labels", "pseudo-labels", "Pseudo-label rounds", None, TABLE),
    ("inspect", "inspect?run={run}", "Inspect", "Mean IoU", CHART),
    ("storage", "storage", "Storage", None, None),
]


def _metric(page: Any, label: str) -> str:
    box = page.get_by_test_id("stMetric").filter(has=page.get_by_text(label, exact=True))
    return box.get_by_test_id("stMetricValue").first.inner_text().strip()


@pytest.mark.parametrize(("name", "path", "heading", "text", "content"), PAGES, ids=[p[0] for p in PAGES])
def test_each_page_shows_the_demo_content(demo, chromium, tools, name, path, heading, text, content):
    from playwright.sync_api import expect

    live, built = demo["live"], demo["built"]
    path = path.format(run=built["runs"][0], ensemble=built["ensemble"])
    context = chromium.new_context(viewport={"width": 1500, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{live.url}/{path}")
        main = page.get_by_test_id("stMain")
        expect(main.get_by_role("heading", name=heading, exact=True).first).to_be_visible(timeout=60_000)
        tools.idle(page)
        if name == "pseudo-labels":
            page.get_by_role("tab", name="Lineage").click()
            tools.idle(page)
        if content is not None:
            expect(main.locator(content).locator("visible=true").first).to_be_visible(timeout=30_000)
        if text is not None:
            expect(main.get_by_text(text).locator("visible=true").first).to_be_visible(timeout=30_000)
        if name == "leaderboard":  # the CV-vs-public scatter of one dataset has the public scores the build entered
            main.get_by_role("combobox", name="Dataset").click()
            page.get_by_role("option").filter(has_text="synthetic-shapes").first.click()
            tools.idle(page)
            expect(main.get_by_text("Does validation track the public leaderboard?")).to_be_visible()
            expect(main.locator(CHART).first).to_be_visible()
        if name in ("overview", "queue"):  # counts, not an empty queue
            assert _metric(page, "Succeeded") == str(len(built["runs"]))
        assert page.get_by_test_id("stException").count() == 0, page.get_by_test_id("stException").first.inner_text()
        errors = page.get_by_test_id("stAlertContentError")
        assert errors.count() == 0, errors.first.inner_text()
    except Exception:
        tools.screenshot(page, f"demo_{name}")
        raise
    finally:
        context.close()
