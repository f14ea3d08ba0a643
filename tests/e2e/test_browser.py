"""The whole day of a team in a real browser, against a live ``segboard up``.

Add a member, register a tiny synthetic dataset, define an experiment in the form (2 epochs, 64px,
resnet18 without pretrained weights, two seeds), watch both runs finish on the embedded worker,
record public scores, see the runs on the leaderboard and in the CV-vs-public scatter, build an
ensemble of the two runs and read its validation score, then open Inspect from the leaderboard and
look at the charts, the overlay viewer and a comparison of the two runs. Every page is saved as a
screenshot under ``test-artifacts/``.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RUN_TIMEOUT_S = 420


def _fill(page, tools, locator, value: str) -> None:
    """Type a value and commit it; typed again if the first script run of the page overwrote it."""
    for _ in range(3):
        locator.fill(value)
        locator.press("Enter")
        tools.idle(page)
        page.wait_for_timeout(500)
        if locator.input_value() == value:
            return
    raise AssertionError(f"the field kept {locator.input_value()!r} instead of {value!r}")


def _metric(page, label: str) -> str:
    box = page.get_by_test_id("stMetric").filter(has=page.get_by_text(label, exact=True))
    return box.get_by_test_id("stMetricValue").inner_text().strip()


def _watch_queue(page, tools, live) -> None:
    """Reload the Queue page until it counts both runs succeeded (a screenshot while one trains)."""
    import time

    deadline = time.monotonic() + RUN_TIMEOUT_S
    seen_running = False
    while time.monotonic() < deadline:
        tools.idle(page)
        if _metric(page, "Succeeded") == "2":
            return
        if not seen_running and _metric(page, "Running") == "1":
            seen_running = True
            tools.screenshot(page, "03_queue_running")
        if any(r.status.value in ("failed", "cancelled") for r in live.runs()):
            break
        page.wait_for_timeout(2000)
        page.reload()
    states = [(r.id, r.status.value) for r in live.runs()]
    raise AssertionError(f"the Queue page did not count two succeeded runs: {states}\n{live.log.read_text()[-3000:]}")


def _pick(page, tools, multiselect, label_start: str) -> None:
    """Add the option whose label starts with ``label_start`` to a multiselect."""
    multiselect.locator("input").click()
    page.keyboard.type(label_start)
    page.get_by_role("option").filter(has_text=label_start).first.click()
    page.keyboard.press("Escape")
    tools.idle(page)


def test_experiment_leaderboard_ensemble_and_inspect(segboard_live, browser_page, tools):
    from playwright.sync_api import expect

    from segcore.data.synthetic import make_synthetic_coco

    live, page, url = segboard_live, browser_page, segboard_live.url
    make_synthetic_coco(live.datasets / "tiny", num_images=16, num_classes=3, size=64, num_test_images=2, seed=0)
    try:
        # a member: every action is recorded under one
        page.goto(url)
        sidebar = page.get_by_test_id("stSidebar")
        sidebar.get_by_label("Name", exact=True).fill("ada")
        sidebar.get_by_role("button", name="Add member").click()
        expect(page.get_by_text("you are acting as ada")).to_be_visible()
        assert page.get_by_role("button", name="Deploy").count() == 0  # Streamlit's own menu stays hidden

        # the dataset, from a folder under the dataset root
        page.goto(f"{url}/datasets")
        expect(page.get_by_role("heading", name="Datasets", exact=True)).to_be_visible()
        tools.idle(page)
        page.get_by_role("tab", name="Register a dataset").click()
        form = page.get_by_test_id("stMain").get_by_test_id("stForm")
        for label, value in (("Name", "tiny"), ("Folder on the server", "tiny"),
                             ("Unlabelled test image folder (optional)", "test")):
            box = form.get_by_label(label, exact=True)
            box.fill(value)
            box.press("Tab")
        form.get_by_role("button", name="Validate and register").click()
        expect(page.get_by_text("Dataset tiny registered")).to_be_visible()
        tools.screenshot(page, "01_datasets")

        # the experiment, in the form: 2 epochs, 64x64, resnet18 without pretrained weights, seeds 0 and 1
        page.goto(f"{url}/new-experiment")
        expect(page.get_by_role("heading", name="New experiment", exact=True)).to_be_visible()
        tools.idle(page)
        main = page.get_by_test_id("stMain")
        _fill(page, tools, main.get_by_label("Epochs", exact=True), "2")
        _fill(page, tools, main.get_by_label("Image height (0 keeps)", exact=True), "64")
        _fill(page, tools, main.get_by_label("Image width (0 keeps)", exact=True), "64")
        _fill(page, tools, main.get_by_label("Seeds", exact=True), "0, 1")
        tools.screenshot(page, "02_new_experiment")
        page.get_by_role("button", name="Queue 2 run(s)").click()
        expect(page.get_by_text("2 run(s) in 1 group(s) queued")).to_be_visible()

        # the runs train on the embedded worker
        page.goto(f"{url}/queue")
        expect(page.get_by_role("heading", name="Queue", exact=True)).to_be_visible()
        _watch_queue(page, tools, live)
        runs = live.wait_runs_finished(2, 30)
        assert [r.status.value for r in runs] == ["succeeded", "succeeded"], live.log.read_text()[-3000:]
        configs = [live.run_config(r.id) for r in runs]
        for cfg in configs:  # what the form defined is what trained
            assert cfg["training"]["epochs"] == 2 and cfg["data"]["image_size"] == [64, 64], cfg
            assert cfg["model"]["encoder"] == "resnet18" and cfg["model"]["encoder_weights"] is None, cfg
        assert sorted(c["training"]["seed"] for c in configs) == [0, 1]
        page.reload()
        expect(page.get_by_role("heading", name="Queue", exact=True)).to_be_visible()
        tools.screenshot(page, "03_queue_finished")

        # a public score for each run: predict the test images, write the submission file, enter its score
        for run, public in zip(runs, ("0.71", "0.69"), strict=True):
            page.goto(f"{url}/run?run={run.id}")
            expect(page.get_by_text(run.name).first).to_be_visible()
            tools.idle(page)
            page.get_by_role("tab", name="Submissions").click()
            page.get_by_role("button", name="Queue test prediction").click()
            expect(page.get_by_text(f"Test prediction of run {run.id} queued")).to_be_visible()
            live.wait_for(lambda rid=run.id: live.run(rid).test_store, RUN_TIMEOUT_S,
                          f"the test prediction of run {run.id}")
            page.reload()
            tools.idle(page)
            page.get_by_role("tab", name="Submissions").click()
            expect(page.get_by_text("Test predictions stored")).to_be_visible()
            page.get_by_role("button", name="Queue submission").click()
            expect(page.get_by_text("queued as job")).to_be_visible()
            tools.idle(page)
            page.get_by_role("combobox", name="Submission").click()
            page.get_by_role("option").filter(has_text="submission").first.click()
            tools.idle(page)
            page.get_by_label("Public score").fill(public)
            page.get_by_role("button", name="Save score").click()
            expect(page.get_by_text(f"Public score {float(public):.4f} saved")).to_be_visible()
            tools.screenshot(page, f"04_run_{run.id}")

        # the leaderboard and the CV-vs-public scatter
        page.goto(f"{url}/leaderboard")
        expect(page.get_by_role("heading", name="Leaderboard", exact=True)).to_be_visible()
        expect(page.get_by_role("heading", name="Does validation track the public leaderboard?")).to_be_visible()
        tools.idle(page)
        grid = page.get_by_test_id("stDataFrame").first
        expect(grid).to_be_visible()
        expect(page.locator(".js-plotly-plot").first).to_be_visible()
        tools.screenshot(page, "05_leaderboard")

        # an ensemble of the two runs and its validation score, before anything is saved
        page.goto(f"{url}/ensemble-builder")
        expect(page.get_by_role("heading", name="Ensemble builder", exact=True)).to_be_visible()
        tools.idle(page)
        members = page.get_by_test_id("stMultiSelect").filter(has_text="Members")
        for run in runs:
            _pick(page, tools, members, f"[run {run.id}]")
        expect(members).not_to_contain_text("[group")
        page.get_by_role("button", name="Compute the candidate's validation score").click()
        expect(page.get_by_text("Candidate miou")).to_be_visible()
        tools.screenshot(page, "06_ensemble_builder")

        # Inspect, opened from the leaderboard
        page.goto(f"{url}/leaderboard")
        expect(page.get_by_role("heading", name="Leaderboard", exact=True)).to_be_visible()
        tools.idle(page)
        picker = page.get_by_test_id("stMultiSelect").filter(has_text="Selected rows")
        _pick(page, tools, picker, f"[run {runs[0].id}]")
        page.get_by_role("link", name="Inspect errors").click()
        expect(page.get_by_role("heading", name="Inspect", exact=True)).to_be_visible()
        page.wait_for_url(f"**/inspect?run={runs[0].id}*")
        tools.idle(page)
        expect(page.get_by_text("Per-class metrics").first).to_be_visible()
        expect(page.locator(".js-plotly-plot").first).to_be_visible()
        tools.screenshot(page, "07_inspect_classes")
        page.get_by_role("tab", name="Errors").click()
        expect(page.get_by_text("Error taxonomy per class").first).to_be_visible()
        tools.screenshot(page, "08_inspect_errors")

        page.get_by_role("tab", name="Images").click()  # only the open tab runs: wait for its run to end
        tools.idle(page)
        expect(page.get_by_text("Overlay viewer")).to_be_visible()
        expect(page.get_by_text("under-prediction (class missed)")).to_be_visible()
        panels = page.get_by_test_id("stMain").get_by_test_id("stImage")
        expect(panels.nth(4)).to_be_visible()  # at least 5: thumbnails + image, ground truth, prediction, errors
        page.get_by_test_id("stMain").get_by_role("button", name="View").first.click()
        tools.idle(page)
        overlay = page.get_by_text("showing rows")
        expect(overlay).to_be_visible()
        tools.screenshot(page, "09_inspect_gallery")
        overlay.scroll_into_view_if_needed()
        page.mouse.wheel(0, 400)
        tools.screenshot(page, "10_inspect_overlay", full_page=False)

        page.get_by_role("tab", name="Compare").click()
        page.get_by_role("combobox", name="B", exact=True).click()
        page.get_by_role("option").filter(has_text=f"run {runs[1].id}").click()
        tools.idle(page)
        expect(page.get_by_text("A right, B wrong").first).to_be_visible()
        tools.screenshot(page, "11_inspect_compare")
        assert not page.get_by_test_id("stException").count()
    except Exception:
        tools.screenshot(page, "failure")
        raise
