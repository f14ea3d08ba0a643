"""The demo workspace: a dashboard with content on every page, built through the service layer.

:func:`build_workspace` fills a running SegBoard (``segboard up``) the way a team would, and
prints a line per step:

1. a member (``admin``) and a dataset: Stanford Background when ``<shared>/stanford-background``
   exists (its 572 training images labelled, its 143 validation images as the unlabelled test set),
   else a synthetic shapes dataset (:func:`segcore.data.synthetic.make_synthetic_mask_folder`);
   the test images' masks are kept outside the dataset root as the "competition's" answers;
2. a k-fold baseline (Unet) and an ablation of ``model.arch`` (FPN, Linknet), each value k-fold too,
   so every group has out-of-fold predictions over every image and they can be ensembled;
3. as each group finishes: its out-of-fold score (the worker computes it), its test prediction,
   a submission file and a public score (computed from the kept-aside masks, as a competition
   site would, and entered as a member enters it);
4. a soft ensemble of the three groups (:func:`worker.services.ensembles.save_candidate`) with its
   test prediction, submission and public score;
5. a pseudo-label round taught by the ensemble, and a student trained on fold 0 with the
   pseudo-labelled test images, with its own test prediction, submission and public score.

Every wait polls states through the services (with a deadline); ``stop`` ends it at once. Every
step finds what an earlier, interrupted build created (by name) and carries on from there.
:data:`PROFILES` size it: ``demo`` (CPU minutes, docs/demo.md) or ``test`` (a tiny synthetic
workspace for the browser test and the page-load benchmark). ``python -m worker.demo`` starts
``segboard up`` on a workspace folder and builds it (:mod:`worker.demo._launch`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["Profile", "PROFILES", "DemoStopped", "DemoFailed", "DemoData", "prepare_data", "build_workspace"]

T = TypeVar("T")
ADMIN = "admin"
# the round is named to sort after the datasets it is taught on ("stanford-background", "synthetic-shapes"):
# its pseudo-labelled dataset is registered as "<round> (pseudo-labels, round N)", and the pages open on the
# first dataset by name
BASELINE, ABLATION, ENSEMBLE, ROUND = "demo-baseline", "demo-arch-ablation", "demo-ensemble", "teacher-round-1"
SYNTHETIC_CLASSES = ["background", "circle", "square", "triangle"]


@dataclasses.dataclass(frozen=True)
class Profile:
    """How big the demo workspace is.

    Attributes:
        name: ``demo`` or ``test``.
        epochs, folds, batch_size: Of every training run.
        image_size: Training size (H, W) on Stanford Background; synthetic data trains at its own size.
        synthetic_images, synthetic_test_images, synthetic_size: The synthetic dataset's labelled
            and test images and their side in pixels.
        shared_data: Use Stanford Background when it is next to the repository.
        pixel_threshold: The pseudo-label round's pixel threshold.
        poll_s: Seconds between two looks at the states.
        step_timeout_s: How long one step may wait.
    """

    name: str
    epochs: int
    folds: int
    batch_size: int
    image_size: tuple[int, int]
    synthetic_images: int
    synthetic_test_images: int
    synthetic_size: int
    shared_data: bool
    pixel_threshold: float
    poll_s: float
    step_timeout_s: float


PROFILES: dict[str, Profile] = {
    "demo": Profile("demo", epochs=3, folds=3, batch_size=8, image_size=(64, 96), synthetic_images=96,
                    synthetic_test_images=24, synthetic_size=96, shared_data=True, pixel_threshold=0.6,
                    poll_s=2.0, step_timeout_s=3600.0),
    "test": Profile("test", epochs=1, folds=2, batch_size=4, image_size=(64, 64), synthetic_images=16,
                    synthetic_test_images=4, synthetic_size=64, shared_data=False, pixel_threshold=0.3,
                    poll_s=0.5, step_timeout_s=300.0),
}


class DemoStopped(Exception):
    """The build was asked to stop (Ctrl-C)."""


class DemoFailed(Exception):
    """A step of the build failed; the message names it and why."""


@dataclasses.dataclass(frozen=True)
class DemoData:
    """The demo's dataset on disk: its registered name, source, classes, training size and answers."""

    name: str
    source: dict[str, Any]
    classes: list[str]
    image_size: tuple[int, int]
    answers: Path
    label: str


def _place(src: Path, dst: Path) -> None:
    """A hard link where the file system allows it (no extra space), else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _stanford(shared: Path, root: Path, answers: Path, profile: Profile) -> DemoData:
    sb = shared / "stanford-background"
    classes_map = json.loads((sb / "classes.json").read_text(encoding="utf-8"))["classes"]
    classes = [classes_map[str(i)] for i in range(len(classes_map))]
    splits = {k: (sb / "splits" / f"{k}.txt").read_text(encoding="utf-8").split() for k in ("train", "val")}
    for stem in splits["train"]:
        _place(sb / "images" / f"{stem}.jpg", root / "images" / f"{stem}.jpg")
        _place(sb / "masks" / f"{stem}.png", root / "masks" / f"{stem}.png")
    for stem in splits["val"]:
        _place(sb / "images" / f"{stem}.jpg", root / "test" / f"{stem}.jpg")
        _place(sb / "masks" / f"{stem}.png", answers / f"{stem}.png")
    source = {"format": "mask_folder", "root": str(root.resolve()), "images": "images", "masks": "masks",
              "test_images": "test", "ignore_value": 255}
    return DemoData("stanford-background", source, classes, profile.image_size, answers,
                    f"Stanford Background ({len(splits['train'])} labelled images, {len(splits['val'])} test images)")


def _synthetic(root: Path, answers: Path, profile: Profile) -> DemoData:
    from segcore.data.synthetic import make_synthetic_mask_folder

    n, t = profile.synthetic_images, profile.synthetic_test_images
    if not (root / "test").is_dir():
        make_synthetic_mask_folder(root, num_images=n + t, num_classes=len(SYNTHETIC_CLASSES),
                                   size=profile.synthetic_size, num_test_images=0, seed=0)
        (root / "test").mkdir()
        answers.mkdir(parents=True, exist_ok=True)
        for i in range(n, n + t):  # the last images become the unlabelled test set, their masks the answers
            stem = f"img_{i:04d}"
            (root / "images" / f"{stem}.png").rename(root / "test" / f"{stem}.png")
            (root / "masks" / f"{stem}.png").rename(answers / f"{stem}.png")
    source = {"format": "mask_folder", "root": str(root.resolve()), "images": "images", "masks": "masks",
              "test_images": "test", "ignore_value": 255}
    side = profile.synthetic_size
    return DemoData("synthetic-shapes", source, list(SYNTHETIC_CLASSES), (side, side), answers,
                    f"a synthetic shapes dataset ({n} labelled images, {t} test images, {side} px)")


def prepare_data(profile: Profile, *, dataset_root: str | Path, answers: str | Path,
                 shared: str | Path | None = None) -> DemoData:
    """Lay the demo's dataset out under ``dataset_root`` and its test masks under ``answers``.

    Args:
        profile: Its size.
        dataset_root: The workspace's dataset root (the dataset goes in a folder of it).
        answers: Where the test images' masks go (outside the dataset root: no run sees them).
        shared: The folder that may hold ``stanford-background/`` (used when ``profile.shared_data``).
    """
    root = Path(dataset_root)
    sb = Path(shared) / "stanford-background" if shared is not None else None
    if profile.shared_data and sb is not None and (sb / "splits" / "train.txt").is_file():
        return _stanford(Path(shared), root / "stanford-background", Path(answers), profile)  # type: ignore[arg-type]
    return _synthetic(root / "synthetic-shapes", Path(answers), profile)


def _config(data: DemoData, profile: Profile, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "data": {"source": data.source, "classes": data.classes, "ignore_index": 255,
                 "image_size": list(data.image_size),
                 "split": {"kind": "kfold", "n_folds": profile.folds, "fold": 0, "seed": 0}},
        "model": {"arch": "Unet", "encoder": "resnet18", "encoder_weights": None},
        "loss": "0.6*ce + 0.4*jaccard",
        "augmentation": {"preset": "flips"},
        "training": {"epochs": profile.epochs, "batch_size": profile.batch_size},
        "evaluation": {"monitor": "miou"},
        "tags": ["demo"],
    }


class _Builder:
    """The steps of :func:`build_workspace`; holds the settings, the session factory and the sender."""

    def __init__(self, settings: Any, factory: Any, profile: Profile, say: Callable[[str], None],
                 stop: threading.Event) -> None:
        from worker.artifacts import Artifacts
        from worker.queue.embedded import embedded_broker_url

        self.settings, self.factory, self.profile, self.stop = settings, factory, profile, stop
        self.artifacts = Artifacts.from_settings(settings)
        self.started = time.monotonic()
        self._say = say
        self._seen: set[int] = set()
        url = settings.redis_url or embedded_broker_url(settings)
        self.app = None
        if url is not None:
            from worker.queue.celery_app import make_celery

            self.app = make_celery(settings, broker_url=url)
        self.actor = 0
        self.data: DemoData | None = None
        self.dataset_id = 0

    def say(self, line: str) -> None:
        m, s = divmod(int(time.monotonic() - self.started), 60)
        self._say(f"[demo {m:2d}:{s:02d}] {line}")

    def read(self, fn: Callable[..., T], **kwargs: Any) -> T:
        from worker.db.session import session_scope

        with session_scope(self.factory) as s:
            return fn(s, **kwargs)

    def submit(self, work: Callable[[Any], T], *, runs: Callable[[T], Any] = lambda r: (),
               jobs: Callable[[T], Any] = lambda r: ()) -> T:
        """Commit ``work(session)``, then publish the runs and jobs it queued."""
        from worker.services.outbox import Queued, celery_sender, commit_then_publish

        send = celery_sender(self.app, self.factory) if self.app is not None else None
        result, sent = commit_then_publish(self.factory, work, send=send,
                                           queued=lambda r: Queued.of(run_ids=runs(r), job_ids=jobs(r)))
        if sent.problem:
            self.say(sent.problem)
        return result

    def wait(self, what: str, condition: Callable[[Any], T | None]) -> T:
        """Poll ``condition(session)`` until it returns something; report finished runs meanwhile."""
        from worker.db.session import session_scope

        deadline = time.monotonic() + self.profile.step_timeout_s
        while True:
            with session_scope(self.factory) as s:
                value = condition(s)
            self._report_runs()
            if value is not None:
                return value
            if time.monotonic() > deadline:
                raise DemoFailed(f"{what} did not happen within {self.profile.step_timeout_s:.0f} s; see the "
                                 "Queue page and the log of segboard up")
            if self.stop.wait(self.profile.poll_s):
                raise DemoStopped

    def _report_runs(self) -> None:
        from worker.services import runs

        rows = self.read(runs.list_runs, order="oldest", limit=1000)
        for r in rows:
            if r.status.is_terminal and r.id not in self._seen:
                self._seen.add(r.id)
                score = f"{r.monitor_metric} {r.monitor_value:.4f}" if r.monitor_value is not None else r.status.value
                done = sum(1 for x in rows if x.status.is_terminal)
                self.say(f"run {r.id} ({r.name}) {r.status.value}: {score} ({done} of {len(rows)} runs done)")

    def job_done(self, job_id: int, what: str) -> Any:
        """Wait for a job to succeed; its failure fails the build with the job's error."""
        from worker.db.models import RunStatus
        from worker.services import jobs

        def check(s: Any) -> Any:
            job = jobs.get_job(s, job_id=job_id)
            if job.status in (RunStatus.FAILED, RunStatus.CANCELLED):
                raise DemoFailed(f"{what} (job {job_id}) {job.status.value}: {job.error_message or 'no message'}")
            return job if job.status is RunStatus.SUCCEEDED else None

        return self.wait(what, check)


def build_workspace(settings: Any, *, profile: Profile, factory: Any = None, shared: str | Path | None = None,
                    answers: str | Path | None = None, say: Callable[[str], None] = print,
                    stop: threading.Event | None = None) -> dict[str, Any]:
    """Fill the SegBoard of ``settings`` (its worker running) with the demo's content.

    Args:
        settings: The running SegBoard's settings (its dataset and artifact roots, its database).
        profile: The size (:data:`PROFILES`).
        factory: A session factory on its database; default one from ``settings``.
        shared: The folder that may hold Stanford Background (``../shared/data`` of the repository).
        answers: Where the test masks go; default ``answers/`` next to the dataset root.
        say: Where progress lines go.
        stop: Set it to stop at the next look at the states (raises :class:`DemoStopped`).

    Returns:
        What was built: ``{"dataset", "member", "runs", "groups", "ensemble", "round", "student"}`` ids.

    Raises:
        DemoStopped: ``stop`` was set.
        DemoFailed: a run or job failed, or a step timed out.
    """
    from worker.demo import _steps

    if factory is None:
        from worker.db.session import make_engine, make_session_factory

        factory = make_session_factory(make_engine(settings))
    root = Path(str(settings.dataset_root))
    b = _Builder(settings, factory, profile, say, stop or threading.Event())
    try:
        b.data = prepare_data(profile, dataset_root=root, answers=answers or root.parent / "answers", shared=shared)
        return _steps.run_steps(b)
    finally:
        if b.app is not None:
            b.app.close()
