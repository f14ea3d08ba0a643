"""End to end in a real browser: Debian's Chromium driven by Playwright against a live ``segboard up``.

Define an experiment in the form, see it run and finish on the embedded worker, record public
scores, see them on the leaderboard and in the scatter, build an ensemble from the two runs and
see its validation score. A screenshot of each page goes to ``test-artifacts/e2e/``.

Skipped (with the reason) when Chromium or Playwright is missing; with ``CI=true`` it fails instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "e2e"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CLASSES = ["background", "class_1", "class_2", "class_3"]


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - local test server
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


@pytest.fixture
def live(tmp_path):
    """``segboard up`` (embedded Redis, SQLite, one CPU worker, the reaper, the web app) on a free port,
    with one member and a registered synthetic dataset."""
    if not Path(CHROMIUM).exists():
        _skip_or_fail(f"{CHROMIUM} is missing (apt-get install chromium, or make system-deps)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _skip_or_fail("playwright is not installed (pip install -e '.[test]')")
    from segcore.data.synthetic import make_synthetic_coco

    home = tmp_path / "home"
    source = make_synthetic_coco(tmp_path / "datasets" / "tiny", num_images=16, num_classes=3, size=64,
                                 num_test_images=2, seed=0)
    port = _free_port()
    env = {**os.environ, "SEGBOARD_HOME": str(home), "SEGBOARD_DATASET_ROOT": str(tmp_path / "datasets"),
           "SEGBOARD_HEARTBEAT_S": "2", "SEGBOARD_LEASE_S": "20", "OMP_NUM_THREADS": "1"}
    for key in ("SEGBOARD_DATABASE_URL", "SEGBOARD_REDIS_URL", "SEGBOARD_ARTIFACT_ROOT", "SEGBOARD_SETTINGS_FILE"):
        env.pop(key, None)
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115 - closed in the teardown
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "up", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/_stcore/health", 180)
        from worker.db.session import make_engine, make_session_factory, session_scope
        from worker.services import datasets, members
        from worker.settings import get_settings

        settings = get_settings(home=home, dataset_root=str(tmp_path / "datasets"))
        engine = make_engine(settings)
        factory = make_session_factory(engine)
        with session_scope(factory) as s:
            ada = members.create_member(s, actor=None, name="ada")
            datasets.register_dataset(s, actor=ada.id, name="tiny", source=source, classes=CLASSES,
                                      dataset_root=settings.dataset_root, check_pixels=False)
        yield {"url": f"http://127.0.0.1:{port}", "factory": factory, "log": tmp_path / "up.log"}
        engine.dispose()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(800)  # let plotly finish drawing
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _idle(page) -> None:
    """Wait until Streamlit finished the current script run."""
    page.wait_for_timeout(300)
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=120_000)


def _set_input(page, label: str, value: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")
    _idle(page)


def _runs(factory) -> list:
    from worker.db.session import session_scope
    from worker.services import runs

    with session_scope(factory) as s:
        return runs.list_runs(s, order="oldest")


def _run(factory, run_id: int):
    from worker.db.session import session_scope
    from worker.services import runs

    with session_scope(factory) as s:
        return runs.get_run(s, run_id=run_id)


def _wait_for(condition, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f} s; segboard up log:\n{log.read_text()[-3000:]}")


def test_experiment_to_leaderboard_to_ensemble(live):
    from playwright.sync_api import expect, sync_playwright

    url = live["url"]
    expect.set_options(timeout=120_000)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.set_default_timeout(120_000)
        try:
            page.goto(f"{url}/new-experiment")
            expect(page.get_by_role("heading", name="New experiment")).to_be_visible()
            _set_input(page, "Epochs", "2")
            _set_input(page, "Seeds", "0, 1")
            _shot(page, "new_experiment")
            page.get_by_role("button", name="Queue 2 run(s)").click()
            expect(page.get_by_text("2 run(s) in 1 group(s) queued")).to_be_visible()
            page.goto(f"{url}/queue")  # while the runs wait or train: the table and the live panel
            expect(page.get_by_role("heading", name="Queue")).to_be_visible()
            _idle(page)
            _shot(page, "queue_live")

            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                runs = _runs(live["factory"])
                if runs and all(r.status.value in ("succeeded", "failed", "cancelled") for r in runs):
                    break
                time.sleep(2)
            runs = _runs(live["factory"])
            assert [r.status.value for r in runs] == ["succeeded", "succeeded"], live["log"].read_text()[-3000:]
            page.goto(f"{url}/queue")
            expect(page.get_by_role("heading", name="Queue")).to_be_visible()
            _idle(page)
            _shot(page, "queue_finished")

            for run, public in zip(runs, ("0.71", "0.69"), strict=True):
                page.goto(f"{url}/run?run={run.id}")
                expect(page.get_by_text(run.name).first).to_be_visible()
                _idle(page)
                page.get_by_role("tab", name="Submissions").click()
                page.get_by_role("button", name="Queue test prediction").click()
                expect(page.get_by_text(f"Test prediction of run {run.id} queued")).to_be_visible()
                _wait_for(lambda rid=run.id: _run(live["factory"], rid).test_store, 600, live["log"])
                page.reload()
                _idle(page)
                page.get_by_role("tab", name="Submissions").click()
                expect(page.get_by_text("Test predictions stored")).to_be_visible()
                page.get_by_role("button", name="Queue submission").click()
                expect(page.get_by_text("queued as job")).to_be_visible()
                page.get_by_label("Public score").fill(public)
                page.get_by_role("button", name="Save score").click()
                expect(page.get_by_text(f"Public score {float(public):.4f} saved")).to_be_visible()
                page.get_by_role("tab", name="Curves").click()
                _shot(page, f"run_detail_{run.id}")

            page.goto(f"{url}/leaderboard")
            expect(page.get_by_role("heading", name="Does validation track the public leaderboard?")).to_be_visible()
            _idle(page)
            expect(page.locator(".js-plotly-plot").first).to_be_visible()
            # the two runs and their seed group (the grid itself is drawn on a canvas)
            expect(page.get_by_text("Rows 1-3 (the last)", exact=True)).to_be_visible()
            _shot(page, "leaderboard")

            page.goto(f"{url}/ensemble-builder")
            expect(page.get_by_role("heading", name="Ensemble builder")).to_be_visible()
            members = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Members")
            for run in runs:
                members.locator("input").click()
                page.keyboard.type(f"[run {run.id}]")
                page.get_by_role("option", name=f"[run {run.id}] {run.name}", exact=True).click()
                _idle(page)
            page.keyboard.press("Escape")
            page.get_by_role("button", name="Compute the candidate's validation score").click()
            expect(page.get_by_text("Candidate miou")).to_be_visible()
            _idle(page)
            _shot(page, "ensemble_builder")

            # a pseudo-label preview from the test predictions the worker stored for the first run
            page.goto(f"{url}/pseudo-labels")
            expect(page.get_by_role("heading", name="Pseudo-label rounds")).to_be_visible()
            teacher = page.locator('[data-testid="stSelectbox"]').filter(has_text="Teacher")
            teacher.click()
            page.get_by_role("option", name=f"[run {runs[0].id}] {runs[0].name}", exact=True).click()
            _idle(page)
            page.get_by_role("button", name="Preview the round").click()
            expect(page.get_by_text("Images kept")).to_be_visible()
            _idle(page)
            _shot(page, "pseudo_labels_preview")

            for path, heading in (("", "Overview"), ("datasets", "Datasets")):
                page.goto(f"{url}/{path}")
                expect(page.get_by_role("heading", name=heading)).to_be_visible()
                _idle(page)
                _shot(page, path or "overview")
        except Exception:
            _shot(page, "failure")
            raise
        finally:
            browser.close()
    shutil.copy(live["log"], ARTIFACTS / "segboard-up.log")
