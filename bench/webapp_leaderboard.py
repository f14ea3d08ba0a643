"""Server-side render time of the dashboard's Leaderboard page with 100, 1,000 and 10,000 runs.

Each size gets its own SQLite database, seeded through the service layer as a team would fill it:
experiments of 5 folds x 2 seeds (so every 10 runs form a group), each run claimed and finished
with all its metric kinds by the queue's lifecycle functions, a public score recorded for every
tenth run, and a few ensembles. The page is then rendered with ``streamlit.testing.v1.AppTest``
(the same script run a browser session triggers) and timed:

- cold: the dashboard's cached queries cleared before each render (what the first visitor after
  a write or after the caches' 10 s TTL waits for);
- warm: a rerun with the cached queries (what every widget interaction costs).

Usage: python bench/webapp_leaderboard.py [--sizes 100 1000 10000] [--repeats 5]
Last line: JSON with the medians per size and ratio = target / cold median at 10,000 (target 1 s;
higher is better).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "webapp" / "streamlit_app.py"
TARGET_S = 1.0
CLASSES = ["background", "class_1", "class_2", "class_3"]
RUNS_PER_EXPERIMENT = 10  # 5 folds x 2 seeds


def _metrics(base: float) -> dict[str, Any]:
    return {
        "miou": base, "miou_per_image": base - 0.02, "dice": base + 0.05, "dice_per_image": base + 0.03,
        "pixel_accuracy": min(0.99, base + 0.2),
        "per_class": {"miou": [0.95, base, base - 0.1, base - 0.3]},
    }


def seed(home: Path, n_runs: int) -> dict[str, Any]:
    """Fill a fresh database with ``n_runs`` finished runs through the services; return its settings."""
    import random

    from segcore.data.synthetic import make_synthetic_coco
    from worker.db.migrate import upgrade
    from worker.db.session import make_engine, make_session_factory, session_scope
    from worker.services import datasets, ensembles, experiments, lifecycle, members, submissions
    from worker.settings import get_settings

    os.environ.update({
        "SEGBOARD_HOME": str(home),
        "SEGBOARD_DATABASE_URL": f"sqlite:///{home / 'segboard.db'}",
        "SEGBOARD_ARTIFACT_ROOT": str(home / "artifacts"),
        "SEGBOARD_DATASET_ROOT": str(home / "datasets"),
    })
    settings = get_settings()
    engine = make_engine(settings)
    upgrade(engine)
    factory = make_session_factory(engine)
    source = make_synthetic_coco(home / "data", num_images=8, num_classes=3, size=32, num_test_images=2, seed=0)
    rng = random.Random(0)
    archs = ["Unet", "FPN", "Linknet", "DeepLabV3Plus"]
    with session_scope(factory) as s:
        team = [members.create_member(s, actor=None, name=n).id for n in ("ada", "bob", "cy", "dee")]
        ds = datasets.register_dataset(s, actor=team[0], name="bench", source=source, classes=CLASSES,
                                       check_pixels=False)
    t0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    n_exp = max(1, n_runs // RUNS_PER_EXPERIMENT)
    run_ids: list[int] = []
    batch = 50
    for start in range(0, n_exp, batch):
        with session_scope(factory) as s:
            for i in range(start, min(n_exp, start + batch)):
                cfg = {
                    "name": f"exp{i}",
                    "data": {"source": source.model_dump(mode="json"), "classes": CLASSES},
                    "model": {"arch": archs[i % len(archs)], "encoder": "resnet18"},
                    "training": {"epochs": 3},
                }
                exp = experiments.create_experiment(
                    s, actor=team[i % len(team)], config=cfg, n_folds=5, seeds=[0, 1], dataset_id=ds.id,
                    tags=[f"t{i % 7}"],
                )
                for rid in exp.run_ids:
                    token = lifecycle.claim_run(s, run_id=rid, worker_name="bench", device="cpu", lease_s=60, now=t0)
                    lifecycle.finish_run(s, token=token, best_metrics=_metrics(0.5 + 0.4 * rng.random()),
                                         monitor="miou", checkpoint_dir=None, val_store=None,
                                         dataset_fingerprint=None, now=t0)
                    run_ids.append(rid)
    with session_scope(factory) as s:
        for k, rid in enumerate(run_ids[::10]):
            sub = submissions.create_submission(s, actor=team[k % len(team)], run_id=rid)
            submissions.record_public_score(s, actor=team[0], submission_id=sub.id, score=0.5 + 0.4 * rng.random())
        for k in range(min(10, len(run_ids) // 2)):
            ensembles.create_ensemble(
                s, actor=team[0], name=f"ens{k}", method="soft",
                members=[{"kind": "run", "id": run_ids[2 * k]}, {"kind": "run", "id": run_ids[2 * k + 1]}],
                val_metrics=_metrics(0.8), dataset_id=ds.id,
            )
    engine.dispose()
    return {"runs": len(run_ids), "groups": n_exp}


def render_times(repeats: int) -> dict[str, Any]:
    """Median cold and warm render times of the Leaderboard page (seconds), and its row count."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from webapp import resources

    resources.reset()
    st.cache_data.clear()
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.switch_page("app_pages/leaderboard.py")
    at.run()  # the first render also imports the page's modules; not timed
    assert not at.exception, [e.value for e in at.exception]
    rows = next(len(t.value) for t in at.dataframe if "public↑ val↓" in t.value.columns)
    cold, warm = [], []
    for _ in range(repeats):
        resources.clear_cached_queries()
        t = time.perf_counter()
        at.run()
        cold.append(time.perf_counter() - t)
        t = time.perf_counter()
        at.run()
        warm.append(time.perf_counter() - t)
    assert not at.exception, [e.value for e in at.exception]
    return {"cold_s": statistics.median(cold), "warm_s": statistics.median(warm), "rows_shown": rows,
            "cold_all": [round(x, 4) for x in cold]}


def main() -> None:
    """Seed each size, time the page, print one line per size and the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import logging

    logging.getLogger("streamlit").setLevel(logging.ERROR)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="segboard-bench-") as tmp:
        for n in args.sizes:
            home = Path(tmp) / f"n{n}"
            t = time.perf_counter()
            info = seed(home, n)
            seeded_s = time.perf_counter() - t
            r = render_times(args.repeats)
            results[str(n)] = {**info, **r, "seed_s": round(seeded_s, 1)}
            print(f"{info['runs']:>6} runs ({info['groups']} groups): leaderboard render cold {r['cold_s'] * 1000:7.1f} ms,"
                  f" warm {r['warm_s'] * 1000:7.1f} ms, {r['rows_shown']} rows shown (seeded in {seeded_s:.0f} s)",
                  flush=True)
    largest = results[str(max(args.sizes))]
    print(json.dumps({
        "figure": "leaderboard page server-side render time (AppTest, median)",
        "sizes": {k: {"runs": v["runs"], "cold_s": round(v["cold_s"], 4), "warm_s": round(v["warm_s"], 4),
                      "rows_shown": v["rows_shown"]} for k, v in results.items()},
        "target_s": TARGET_S,
        "measured_s": round(largest["cold_s"], 4),
        "ratio": round(TARGET_S / largest["cold_s"], 3),
    }))


if __name__ == "__main__":
    main()
