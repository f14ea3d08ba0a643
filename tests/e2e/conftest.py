"""Fixtures of the browser tests: a live ``segboard up`` in temporary directories, and Debian's Chromium.

``segboard up`` runs on 127.0.0.1 with its own SQLite database, its own embedded Redis, and its
artifact and dataset roots in ``tmp_path``; the web port is a free one. The browser is the
system's ``/usr/bin/chromium`` driven by Playwright (a browser is never downloaded). Without
Chromium or Playwright the tests skip with the reason; under ``CI=true`` they fail instead.
Screenshots and the server log go to ``test-artifacts/`` (git-ignored).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def skip_or_fail(reason: str) -> None:
    """Fail under ``CI=true`` (the browser is part of the test setup there), skip elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required for the browser tests under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def require_browser() -> None:
    """Skip (or fail under CI) when Debian's Chromium or the playwright package is missing."""
    if not Path(CHROMIUM).is_file():
        skip_or_fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        skip_or_fail("the playwright package is not installed: pip install -e '.[test]'")


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Wait until ``url`` answers 200 (fail early when ``proc`` exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"segboard up exited with code {proc.returncode} before serving:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - a local test server
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log else ""
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s (is the machine busy?); the log ends:\n{tail}")


@dataclasses.dataclass
class Live:
    """A running ``segboard up``: its URL, settings, a session factory on its database, its log."""

    url: str
    settings: Any
    factory: Any
    log: Path
    home: Path
    datasets: Path

    def runs(self) -> list[Any]:
        """Every run, oldest first (read through the service layer)."""
        from worker.db.session import session_scope
        from worker.services import runs

        with session_scope(self.factory) as s:
            return runs.list_runs(s, order="oldest")

    def run(self, run_id: int) -> Any:
        """One run with its config and stores (read through the service layer)."""
        from worker.db.session import session_scope
        from worker.services import runs

        with session_scope(self.factory) as s:
            return runs.get_run(s, run_id=run_id)

    def run_config(self, run_id: int) -> dict[str, Any]:
        """The config a run trained with."""
        return dict(self.run(run_id).config)

    def wait_for(self, condition: Any, timeout: float, what: str) -> Any:
        """Poll ``condition()`` until it is truthy; its value, or TimeoutError naming ``what``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(1.0)
        raise TimeoutError(f"{what} did not happen within {timeout:.0f} s\n{self.log.read_text()[-3000:]}")

    def wait_runs_finished(self, n: int, timeout: float) -> list[Any]:
        """Wait until ``n`` runs exist and all of them reached a final state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.runs()
            if len(runs) >= n and all(r.status.is_terminal for r in runs):
                return runs
            time.sleep(1.0)
        states = [(r.id, r.status.value, r.current_epoch) for r in self.runs()]
        raise TimeoutError(f"runs did not finish within {timeout:.0f} s: {states}\n{self.log.read_text()[-3000:]}")


def _segboard_command() -> list[str]:
    exe = Path(sys.executable).with_name("segboard")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "worker.cli"]


@contextlib.contextmanager
def _segboard_up(tmp: Path, *, auth: str = "none", secrets_toml: str | None = None) -> Iterator[Live]:
    """``segboard up`` in ``tmp`` on a free port; ``auth`` and an optional ``.streamlit/secrets.toml``
    (OIDC; written in the folder it starts from) configure who logs in."""
    from worker.db.session import make_engine, make_session_factory
    from worker.settings import get_settings

    home, datasets, artifacts = tmp / "home", tmp / "datasets", tmp / "artifacts"
    datasets.mkdir()
    cwd = ROOT
    if secrets_toml is not None:
        cwd = tmp / "cwd"
        (cwd / ".streamlit").mkdir(parents=True)
        (cwd / ".streamlit" / "secrets.toml").write_text(secrets_toml)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGBOARD_")}
    env.update({
        "SEGBOARD_HOME": str(home), "SEGBOARD_DATASET_ROOT": str(datasets), "SEGBOARD_ARTIFACT_ROOT": str(artifacts),
        "SEGBOARD_HEARTBEAT_S": "2", "SEGBOARD_LEASE_S": "20", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "SEGBOARD_AUTH": auth,
    })
    log = tmp / "segboard-up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*_segboard_command(), "up", "--port", str(port)], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    engine = None
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", 300, proc, log)
        settings = get_settings(home=home, dataset_root=str(datasets), artifact_root=str(artifacts), auth=auth)
        engine = make_engine(settings)
        yield Live(url=f"http://127.0.0.1:{port}", settings=settings, factory=make_session_factory(engine), log=log,
                   home=home, datasets=datasets)
    finally:
        if engine is not None:
            engine.dispose()
        try:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: every process stops
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(log, ARTIFACTS / f"segboard-up{'' if auth == 'none' else '-' + auth}.log")


@pytest.fixture(autouse=True, scope="session")
def _data_roots_allow_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Datasets made in ``tmp_path`` folders may be registered from this process: this session's temporary
    folder is an extra dataset root for the settings it builds from its environment (``segboard up`` gets
    its own dataset root, under which the tests put their datasets)."""
    import json

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEGBOARD_EXTRA_DATASET_ROOTS", json.dumps([str(tmp_path_factory.getbasetemp())]))
        yield


@pytest.fixture
def segboard_live(tmp_path: Path) -> Iterator[Live]:
    """``segboard up`` (embedded Redis, SQLite, one CPU worker, the reaper and the web app) on a free port."""
    require_browser()
    with _segboard_up(tmp_path) as live:
        yield live


@pytest.fixture(scope="module")
def start_segboard(tmp_path_factory) -> Iterator[Any]:
    """``start(auth=..., secrets_toml=...)`` starts a ``segboard up`` that a whole module shares (one
    per auth mode keeps the module fast); every one started is stopped after the module."""
    require_browser()
    with contextlib.ExitStack() as stack:
        def start(*, auth: str = "local", secrets_toml: str | None = None) -> Live:
            tmp = tmp_path_factory.mktemp(f"segboard-{auth.replace('+', '-')}")
            return stack.enter_context(_segboard_up(tmp, auth=auth, secrets_toml=secrets_toml))

        yield start


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's headless Chromium for a whole module; each test opens its own context (its own cookies)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page() -> Iterator[Any]:
    """A Playwright page in Debian's headless Chromium (1500x1100), closed after the test."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def screenshot(page: Any, name: str, full_page: bool = True) -> Path:
    """Save a screenshot to ``test-artifacts/<name>.png`` (after charts finished drawing)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    idle(page)
    page.wait_for_timeout(600)
    page.screenshot(path=str(path), full_page=full_page)
    return path


def idle(page: Any, timeout_ms: int = 120_000) -> None:
    """Wait until Streamlit finished the current script run (its status widget is gone)."""
    page.wait_for_timeout(300)
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=timeout_ms)


@pytest.fixture
def tools() -> Any:
    """The helpers above, for the test modules (which cannot import this conftest)."""
    import types

    return types.SimpleNamespace(screenshot=screenshot, idle=idle, artifacts=ARTIFACTS)
