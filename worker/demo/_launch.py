"""``python -m worker.demo`` (``make demo``): ``segboard up`` on a demo workspace, filled while it runs.

The workspace is one folder (default ``runs/demo-workspace``) with its own SegBoard home (SQLite
database), dataset root, artifact root and answers; the user's ``~/.segboard`` and ``SEGBOARD_*``
settings are left alone. The dashboard's URL is printed first; the build's progress follows.
Ctrl-C stops the build and SegBoard; the next start carries on where it stopped. A complete
workspace is marked by ``built.json`` and only served again; ``--reset`` deletes the folder first.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Workspace", "serve", "wait_ready", "main"]

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PORT = 8501


@dataclasses.dataclass(frozen=True)
class Workspace:
    """The folders of a demo workspace, and the environment ``segboard up`` runs with there."""

    root: Path

    @property
    def home(self) -> Path:
        """SegBoard's home (the SQLite database, ``embedded.json``)."""
        return self.root / "home"

    @property
    def datasets(self) -> Path:
        """The dataset root."""
        return self.root / "datasets"

    @property
    def artifacts(self) -> Path:
        """The artifact root."""
        return self.root / "artifacts"

    @property
    def answers(self) -> Path:
        """The test images' masks (outside the dataset root)."""
        return self.root / "answers"

    @property
    def log(self) -> Path:
        """What ``segboard up`` prints."""
        return self.root / "segboard-up.log"

    @property
    def marker(self) -> Path:
        """Written when the build finished: what it built."""
        return self.root / "built.json"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default this process's environment) without its ``SEGBOARD_*``, plus the workspace's."""
        env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("SEGBOARD_")}
        env.update({"SEGBOARD_HOME": str(self.home.resolve()), "SEGBOARD_DATASET_ROOT": str(self.datasets.resolve()),
                    "SEGBOARD_ARTIFACT_ROOT": str(self.artifacts.resolve()), "SEGBOARD_AUTH": "none",
                    "NO_ALBUMENTATIONS_UPDATE": "1"})
        return env

    def settings(self) -> Any:
        """The workspace's settings (``SEGBOARD_*`` variables of this process still apply to the rest;
        :func:`main` clears them)."""
        from worker.settings import get_settings

        return get_settings(home=self.home.resolve(), dataset_root=str(self.datasets.resolve()),
                            artifact_root=str(self.artifacts.resolve()), auth="none")


def _stop(proc: subprocess.Popen[bytes], *, own_group: bool, timeout: float = 90.0) -> None:
    """Ctrl-C for ``segboard up`` (it stops its worker, web app and Redis), then a kill after ``timeout``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if own_group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL) if own_group else proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def serve(ws: Workspace, *, port: int, own_group: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``segboard up --port <port>`` on the workspace (output to :attr:`Workspace.log`); stop it on exit.

    Args:
        own_group: Start it in its own process group (a script that stops it itself); without it,
            Ctrl-C in the terminal reaches it directly, as it reaches ``make demo``.
    """
    for folder in (ws.home, ws.datasets, ws.artifacts):
        folder.mkdir(parents=True, exist_ok=True)
    with open(ws.log, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "up", "--port", str(port)], cwd=ROOT,
                                env=ws.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=own_group)
    try:
        yield proc
    finally:
        _stop(proc, own_group=own_group)


def wait_ready(proc: subprocess.Popen[bytes], url: str, *, log: Path, timeout: float = 300.0,
               stop: threading.Event | None = None) -> None:
    """Poll ``<url>/_stcore/health`` until it answers 200.

    Raises:
        RuntimeError: ``segboard up`` exited first, or did not answer within ``timeout`` (with its log's end).
    """
    stop = stop or threading.Event()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-8:]
            raise RuntimeError(f"segboard up exited with code {proc.returncode}:\n  " + "\n  ".join(tail))
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        if stop.wait(0.5):
            return
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s; see {log}")


def _port(wanted: int | None) -> int:
    from worker.queue.embedded import free_port

    if wanted is not None:
        return wanted
    with contextlib.suppress(OSError), contextlib.closing(__import__("socket").socket()) as s:
        s.bind(("127.0.0.1", DEFAULT_PORT))
        return DEFAULT_PORT
    return free_port()


def build(ws: Workspace, *, profile: str, shared: Path | None, say: Callable[[str], None],
          stop: threading.Event | None = None) -> dict[str, Any]:
    """Build the workspace into the running ``segboard up`` unless :attr:`Workspace.marker` says it is built."""
    from worker.demo._build import PROFILES, build_workspace

    if ws.marker.is_file():
        built = json.loads(ws.marker.read_text(encoding="utf-8"))
        say(f"[demo] the workspace was built on {built.get('built_at', '?')} ({built.get('profile')} size); "
            f"to build it again: make demo DEMO_ARGS=--reset")
        return dict(built)
    summary = build_workspace(ws.settings(), profile=PROFILES[profile], shared=shared, answers=ws.answers, say=say,
                              stop=stop)
    summary.update(profile=profile, built_at=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    ws.marker.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Start SegBoard on the demo workspace, print its URL, build the workspace, serve until Ctrl-C."""
    from worker.demo._build import PROFILES, DemoFailed

    parser = argparse.ArgumentParser(prog="python -m worker.demo",
                                     description="Start the dashboard on a demo workspace and fill it while it runs.")
    parser.add_argument("--workspace", type=Path, default=ROOT / "runs" / "demo-workspace")
    parser.add_argument("--size", choices=sorted(PROFILES), default="demo",
                        help="demo: CPU minutes (docs/demo.md); test: a tiny synthetic workspace")
    parser.add_argument("--port", type=int, default=None, help=f"default {DEFAULT_PORT}, or a free one if taken")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data",
                        help="the folder that may hold stanford-background/ (else synthetic data is made)")
    parser.add_argument("--reset", action="store_true", help="delete the workspace first")
    parser.add_argument("--no-serve", action="store_true", help="stop SegBoard once the workspace is built")
    args = parser.parse_args(argv)
    ws = Workspace(args.workspace.resolve())
    for key in [k for k in os.environ if k.startswith("SEGBOARD_")]:
        del os.environ[key]  # the workspace's settings only, never the user's
    if args.reset and ws.root.exists():
        shutil.rmtree(ws.root)
        print(f"[demo] {ws.root} deleted", flush=True)

    def say(line: str) -> None:
        print(line, flush=True)

    port = _port(args.port)
    url = f"http://localhost:{port}"
    say(f"[demo] SegBoard: {url}  (single-user, this computer only; workspace {ws.root}; "
        f"the log of segboard up: {ws.log})")
    try:
        with serve(ws, port=port) as proc:
            wait_ready(proc, f"http://127.0.0.1:{port}", log=ws.log)
            say(f"[demo] the dashboard is up at {url}; filling it while it runs (Ctrl-C stops; make demo carries on)")
            try:
                build(ws, profile=args.size, shared=args.shared, say=say)
                say(f"[demo] done: browse {url}; Ctrl-C stops SegBoard")
            except DemoFailed as exc:
                say(f"[demo] the build stopped: {exc}")
                say(f"[demo] the dashboard keeps what was built at {url}; Ctrl-C stops it")
                if args.no_serve:
                    return 1
            if not args.no_serve:
                proc.wait()
    except KeyboardInterrupt:
        say("[demo] stopping; the workspace stays, and make demo carries on from where it stopped")
    except RuntimeError as exc:
        say(f"[demo] {exc}")
        return 1
    return 0
