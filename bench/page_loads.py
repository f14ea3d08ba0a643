"""First load of every dashboard page in headless Chromium, with the demo workspace.

Builds the demo workspace (``worker.demo``; a workspace whose ``built.json`` exists is reused),
starts ``segboard up`` on it, and opens each page in a fresh browser context (no cache, no
cookies), Debian's ``/usr/bin/chromium`` driven by Playwright. A page's time runs from the
navigation until its script run finished (``stApp`` says ``notRunning``) with its main content on
screen: a table, a chart or a metric (a form on New experiment, Sweeps and Storage, which the demo
gives no rows). ``first`` is the first load of each page on the freshly started server (what a
newcomer waits for), then ``--repeats`` more loads, each in a new context, give a median.

Peer, in the same run on the same machine and browser: a plain Streamlit page (a title, a metric
and a 20-row table) on its own ``streamlit run`` server, loaded the same way: what Streamlit itself
costs before any SegBoard code runs.

Usage: python bench/page_loads.py [--workspace runs/demo-workspace] [--size demo|test] [--repeats 3]
Last line: JSON with each page's first and median load, the peer's, ``target_s`` (5 s), ``ratio`` =
target / the slowest first load (higher is better; >= 1 meets the target) and ``vs_peer`` = the
peer's first load / the median page's first load.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

TARGET_S = 5.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CONTENT = ('[data-testid="stDataFrame"], [data-testid="stTable"], .js-plotly-plot, [data-testid="stMetric"], '
           '[data-testid="stImage"]')
FORM = '[data-testid="stForm"], [data-testid="stDataFrame"], .js-plotly-plot, [data-testid="stMetric"]'
# (name, path, what its main content is); {run} and {ensemble} come from the build
PAGES = [
    ("Overview", "", CONTENT), ("Datasets", "datasets", CONTENT), ("New experiment", "new-experiment", FORM),
    ("Queue", "queue", CONTENT), ("Leaderboard", "leaderboard", CONTENT), ("Sweeps", "sweeps", FORM),
    ("Run detail", "run?run={run}", CONTENT), ("Ensemble builder", "ensemble-builder?ensemble={ensemble}", CONTENT),
    ("Pseudo-label rounds", "pseudo-labels", CONTENT), ("Inspect", "inspect?run={run}", CONTENT),
    ("Inspect an ensemble", "inspect?ensemble={ensemble}", CONTENT), ("Storage", "storage", FORM),
]
PEER_SCRIPT = """import pandas as pd
import streamlit as st

st.title("Hello")
st.metric("Rows", 20)
st.dataframe(pd.DataFrame({"a": range(20), "b": [i * 0.5 for i in range(20)]}))
"""
READY = """(selector) => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  const main = document.querySelector('[data-testid="stMain"]');
  return !!(main && main.querySelector('h1') && main.querySelector(selector));
}"""


def load_time(browser: Any, url: str, selector: str) -> float:
    """Seconds from navigation until the page's script finished with ``selector`` on screen (fresh context)."""
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    try:
        page = context.new_page()
        t = time.perf_counter()
        page.goto(url, wait_until="commit", timeout=120_000)
        page.wait_for_function(READY, arg=selector, polling=50, timeout=120_000)
        return time.perf_counter() - t
    finally:
        context.close()


def _peer_server(folder: Path, port: int) -> subprocess.Popen[bytes]:
    script = folder / "hello.py"
    script.write_text(PEER_SCRIPT, encoding="utf-8")
    with open(folder / "peer.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port), "--server.address",
             "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=folder)


def main() -> None:
    """Build or reuse the workspace, serve it, time every page and the peer, print the table and the JSON."""
    from playwright.sync_api import sync_playwright

    from worker.demo import PROFILES, Workspace, build, serve, wait_ready
    from worker.queue.embedded import free_port

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=ROOT / "runs" / "demo-workspace")
    parser.add_argument("--size", choices=sorted(PROFILES), default="demo",
                        help="the size to build when the workspace is not built yet")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for key in [k for k in os.environ if k.startswith("SEGBOARD_")]:
        del os.environ[key]
    ws = Workspace(args.workspace.resolve())

    def say(line: str) -> None:
        print(line, flush=True)

    port, peer_port = free_port(), free_port()
    url, peer_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer_port}"
    built_now = not ws.marker.is_file()
    with serve(ws, port=port, own_group=True) as proc, tempfile.TemporaryDirectory(prefix="segboard-peer-") as tmp:
        wait_ready(proc, url, log=ws.log)
        t = time.perf_counter()
        built = build(ws, profile=args.size, shared=args.shared, say=say)
        build_s = time.perf_counter() - t
        if built_now:
            print(f"built the {args.size} workspace in {build_s:.0f} s", flush=True)
        peer = _peer_server(Path(tmp), peer_port)
        try:
            wait_ready(peer, peer_url, log=Path(tmp) / "peer.log")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
                try:
                    peer_loads = [load_time(browser, peer_url, CONTENT) for _ in range(1 + args.repeats)]
                    rows = {}
                    for name, path, selector in PAGES:
                        rows[name] = {"path": path.format(run=built["runs"][0], ensemble=built["ensemble"]),
                                      "selector": selector, "loads": []}
                    for _ in range(1 + args.repeats):  # the first pass is every page's first load
                        for row in rows.values():
                            row["loads"].append(load_time(browser, f"{url}/{row['path']}", row["selector"]))
                finally:
                    browser.close()
        finally:
            os.killpg(peer.pid, signal.SIGTERM)
            peer.wait(timeout=30)
    print(f"{'page':<22}{'first load s':>14}{'median of ' + str(args.repeats) + ' s':>16}")
    for name, row in rows.items():
        loads = row["loads"]
        print(f"{name:<22}{loads[0]:>14.2f}{statistics.median(loads[1:] or loads):>16.2f}")
    peer_first, peer_median = peer_loads[0], statistics.median(peer_loads[1:] or peer_loads)
    print(f"{'peer: plain Streamlit':<22}{peer_first:>14.2f}{peer_median:>16.2f}")
    firsts = {name: row["loads"][0] for name, row in rows.items()}
    slowest = max(firsts, key=firsts.__getitem__)
    print(json.dumps({
        "figure": "first load of each dashboard page in headless Chromium, demo workspace (seconds)",
        "workspace": built.get("profile"),
        "pages": {name: {"first_s": round(row["loads"][0], 3),
                         "median_s": round(statistics.median(row["loads"][1:] or row["loads"]), 3)}
                  for name, row in rows.items()},
        "slowest_page": slowest,
        "measured_s": round(firsts[slowest], 3),
        "peer": "plain Streamlit page (title, metric, 20-row table), its own server",
        "peer_first_s": round(peer_first, 3),
        "peer_median_s": round(peer_median, 3),
        "target_s": TARGET_S,
        "ratio": round(TARGET_S / firsts[slowest], 3),
        "vs_peer": round(peer_first / statistics.median(firsts.values()), 3),
    }))


if __name__ == "__main__":
    main()
