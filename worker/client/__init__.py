"""The Python client: script SegBoard from a notebook through its HTTP API (docs/client.md).

A :class:`Client` talks to the API that ``segboard up`` (and the compose web service) serves under
``/api``, with a member's API token; the server runs the same service layer and permission checks
as the web app and the CLI. Errors come back as the service layer's exception types
(:mod:`worker.errors`) with the server's message. Nothing here opens the database: direct database
access is the server-side admin mode of the ``segboard`` command.

Example:
    >>> from worker.client import Client
    >>> sb = Client("http://segboard.lan:8501")             # the token from $SEGBOARD_TOKEN  # doctest: +SKIP
    >>> exp = sb.submit("configs/unet.yaml", folds=5, seeds=[0, 1], dataset="camvid")  # doctest: +SKIP
    >>> finals = sb.watch(exp.run_ids, timeout=3600)                                   # doctest: +SKIP
    >>> sb.leaderboard("camvid").head()                                                # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import httpx

from worker import errors
from worker.client._wire import DONE, config_payload, download_folder, error_of, flat, member, run_ids_of
from worker.db.models import RunStatus
from worker.schemas import (
    DatasetRead,
    EnsembleRead,
    EpochMetricRead,
    ExperimentRead,
    GridSpec,
    JobRead,
    LeaderboardRow,
    LogLine,
    MemberRead,
    RunRead,
    RunSummary,
    SubmissionRead,
)

if TYPE_CHECKING:
    import pandas as pd

    from segcore.inference.store import StoreReader

__all__ = ["Client", "URL_ENV", "TOKEN_ENV", "CACHE_ENV"]

URL_ENV = "SEGBOARD_URL"
TOKEN_ENV = "SEGBOARD_TOKEN"
CACHE_ENV = "SEGBOARD_CLIENT_CACHE"

T = TypeVar("T")


class Client:
    """SegBoard through its HTTP API, as the member of an API token.

    Args:
        url: The SegBoard address, e.g. ``http://segboard.lan:8501`` (the API is its ``/api``); default
            ``$SEGBOARD_URL``.
        token: An API token (``segboard token create --member NAME`` prints one); default ``$SEGBOARD_TOKEN``.
        cache_dir: Where downloaded stores and checkpoints are kept; default ``$SEGBOARD_CLIENT_CACHE``
            or ``~/.cache/segboard``.
        timeout: Seconds an API call may wait for the server (connecting, or between bytes).
        http: An ``httpx.Client`` to send the requests with (its own settings kept; e.g. a proxy, or tests').

    Raises:
        InvalidInput: no URL.
        AuthenticationFailed: no token (a wrong one fails on the first call).
    """

    def __init__(self, url: str | None = None, token: str | None = None, *, cache_dir: str | Path | None = None,
                 timeout: float = 60.0, http: httpx.Client | None = None) -> None:
        url = (url or os.environ.get(URL_ENV) or "").strip().rstrip("/")
        if not url:
            raise errors.InvalidInput(f"no SegBoard address: pass Client('http://host:8501') or set {URL_ENV}")
        token = (token or os.environ.get(TOKEN_ENV) or "").strip()
        if not token:
            raise errors.AuthenticationFailed(f"no API token: pass token=... or set {TOKEN_ENV}; an admin creates "
                                              "one with `segboard token create --member NAME`")
        self.url = url
        self.api_url = url if url.endswith("/api") else f"{url}/api"
        cache = cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "segboard"
        where = urlsplit(self.api_url)
        self.cache_dir = Path(cache).expanduser() / f"{where.hostname or 'local'}-{where.port or 'default'}"
        self._http = http if http is not None else httpx.Client(timeout=timeout)
        self._owns_http = http is None
        self._auth = {"Authorization": f"Bearer {token}"}
        self._datasets: dict[str, int] = {}

    def close(self) -> None:
        """Close the connections (not those of an ``http`` client passed in)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- plumbing

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call; its JSON answer, or the error it stands for."""
        try:
            response = self._http.request(method, f"{self.api_url}/{path}", headers=self._auth, **kwargs)
        except httpx.HTTPError as exc:
            raise errors.ServiceError(f"cannot reach SegBoard at {self.api_url} ({type(exc).__name__}: {exc}); "
                                      "check the address and that `segboard up` or the web service runs") from exc
        if response.status_code >= 400:
            raise error_of(response)
        return response.json()

    def _dataset_id(self, dataset: int | str | None) -> int | None:
        if dataset is None or (isinstance(dataset, int) and not isinstance(dataset, bool)):
            return dataset
        if dataset not in self._datasets:
            self._datasets = {d.name: d.id for d in self.datasets()}
        if dataset not in self._datasets:
            raise errors.NotFound("dataset", dataset, f"registered datasets: {', '.join(self._datasets) or 'none'}")
        return self._datasets[dataset]

    @staticmethod
    def _warn(answer: Mapping[str, Any]) -> None:
        if answer.get("queue_problem"):
            warnings.warn(str(answer["queue_problem"]), stacklevel=3)

    def _wait(self, fetch: Callable[[], T], done: Callable[[T], bool], *, timeout: float | None, poll_s: float,
              what: str) -> T:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            value = fetch()
            if done(value):
                return value
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{what} did not finish within {timeout:g} s; call again to keep waiting")
            time.sleep(poll_s)

    # -------------------------------------------------------------- who, what data

    def me(self) -> MemberRead:
        """The member this client acts as."""
        return MemberRead.model_validate(self._call("GET", "me"))

    def datasets(self) -> list[DatasetRead]:
        """Every registered dataset."""
        return [DatasetRead.model_validate(d) for d in self._call("GET", "datasets")]

    # -------------------------------------------------------------- experiments and runs

    def submit(self, config_or_path: Any, *, folds: int = 1, seeds: Iterable[int] = (0,),
               grid: GridSpec | Mapping[str, Any] | None = None, priority: int = 0, tags: Iterable[str] = (),
               name: str | None = None, note: str = "", dataset: int | str | None = None) -> ExperimentRead:
        """Submit an experiment; its runs are queued (the same submit-time check as the web form).

        Args:
            config_or_path: A config mapping, an ``ExperimentConfig``, YAML text, or a ``.yaml``/``.json`` file.
            folds: 1, or k for k-fold cross-validation.
            seeds: One run per seed (per fold).
            grid: An ablation axis, ``{"axis": "model.encoder", "values": ["resnet18", "resnet34"]}``.
            priority: 0 (lowest) to 9; members may be capped by the server's settings.
            tags: Labels for filtering runs and the leaderboard.
            name: The experiment's name; default the config's.
            note: Free text.
            dataset: The registered dataset (its name or id) the runs train on.

        Returns:
            The experiment, with ``run_ids`` to :meth:`watch`.

        Raises:
            InvalidFields: the config was refused; ``.fields`` maps each field to its problem.
            PermissionDenied: the token's member is a viewer, or over a limit.
        """
        if isinstance(grid, GridSpec):
            grid = grid.model_dump(mode="json")
        body = {"config": config_payload(config_or_path), "name": name, "n_folds": folds, "seeds": list(seeds),
                "grid": dict(grid) if grid is not None else None, "priority": priority, "tags": list(tags),
                "note": note, "dataset_id": self._dataset_id(dataset)}
        answer = self._call("POST", "experiments", json=body)
        self._warn(answer)
        return ExperimentRead.model_validate(answer["experiment"])

    def experiment(self, experiment_id: int) -> ExperimentRead:
        """One experiment with its groups and run ids."""
        return ExperimentRead.model_validate(self._call("GET", f"experiments/{int(experiment_id)}"))

    def runs(self, *, status: str | Iterable[str] | None = None, experiment: int | None = None,
             dataset: int | str | None = None, tag: str | None = None, owner: int | None = None,
             arch: str | None = None, search: str | None = None, order: str = "newest", limit: int = 100,
             offset: int = 0) -> list[RunSummary]:
        """Runs as list rows, filtered (``status``: one or several of queued, running, succeeded, failed, cancelled)."""
        statuses = [status] if isinstance(status, str) else list(status or [])
        params = {"status": statuses, "experiment_id": experiment, "dataset_id": self._dataset_id(dataset),
                  "tag": tag, "owner_id": owner, "arch": arch, "search": search, "order": order, "limit": limit,
                  "offset": offset}
        params = {k: v for k, v in params.items() if v is not None and v != []}
        return [RunSummary.model_validate(r) for r in self._call("GET", "runs", params=params)]

    def run(self, run_id: int) -> RunRead:
        """One run with its config, status, best metrics and artifact locations."""
        return RunRead.model_validate(self._call("GET", f"runs/{int(run_id)}"))

    def follow(self, run_ids: int | ExperimentRead | Iterable[int], *, timeout: float | None = None,
               poll_s: float = 5.0) -> Iterator[RunRead]:
        """Yield each run when its status or epoch changes, until all of them finished.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        wanted = run_ids_of(run_ids)
        seen: dict[int, tuple[Any, ...]] = {}
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = [self.run(i) for i in wanted]
            for run in current:
                key = (run.status, run.current_epoch, run.cancel_requested)
                if seen.get(run.id) != key:
                    seen[run.id] = key
                    yield run
            if all(r.status in DONE for r in current):
                return
            if deadline is not None and time.monotonic() >= deadline:
                states = ", ".join(f"run {r.id} {r.status.value}" for r in current)
                raise TimeoutError(f"the runs did not finish within {timeout:g} s ({states}); call again to keep "
                                   "waiting")
            time.sleep(poll_s)

    def watch(self, run_ids: int | ExperimentRead | Iterable[int], *, timeout: float | None = None,
              poll_s: float = 5.0) -> list[RunRead]:
        """Wait until every run finished (succeeded, failed or cancelled); their final states, in the given order.

        Raises:
            TimeoutError: ``timeout`` seconds passed first (the runs go on).
        """
        last: dict[int, RunRead] = {}
        for run in self.follow(run_ids, timeout=timeout, poll_s=poll_s):
            last[run.id] = run
        return [last[i] for i in run_ids_of(run_ids)]

    def metrics(self, run_id: int) -> pd.DataFrame:
        """A run's epoch metrics, one row per epoch (index ``epoch``); validation metrics as ``val_<name>`` columns."""
        import pandas as pd

        rows = []
        for m in (EpochMetricRead.model_validate(r) for r in self._call("GET", f"runs/{int(run_id)}/metrics")):
            row: dict[str, Any] = {"epoch": m.epoch, "train_loss": m.train_loss, "lr": m.lr,
                                   "images_per_s": m.images_per_s}
            flat("val", m.val or {}, row)
            row["created_at"] = m.created_at
            rows.append(row)
        frame = pd.DataFrame(rows, columns=None if rows else ["epoch", "train_loss", "lr", "images_per_s"])
        return frame.set_index("epoch")

    def logs(self, run_id: int, *, after_id: int = 0, limit: int = 500) -> list[LogLine]:
        """A run's log lines with ids above ``after_id``."""
        return [LogLine.model_validate(line) for line in
                self._call("GET", f"runs/{int(run_id)}/logs", params={"after_id": after_id, "limit": limit})]

    def cancel(self, run_id: int) -> RunStatus:
        """Cancel a run; ``cancelled``, or ``running`` until its worker stops it (within seconds)."""
        return RunStatus(self._call("POST", f"runs/{int(run_id)}/cancel")["status"])

    def requeue(self, run_id: int) -> RunStatus:
        """Put a failed or cancelled run back in the queue (it resumes from its last checkpoint)."""
        answer = self._call("POST", f"runs/{int(run_id)}/requeue")
        self._warn(answer)
        return RunStatus(answer["status"])

    # -------------------------------------------------------------- results

    def leaderboard(self, dataset: int | str | None = None, *, metric: str = "val",
                    kinds: Iterable[str] | None = None, tag: str | None = None, arch: str | None = None,
                    limit: int = 200) -> pd.DataFrame:
        """The leaderboard as a DataFrame, best first; each metric kind is a column (``miou``, ``dice``, ...).

        Args:
            dataset: A dataset's name or id; None: every dataset.
            metric: Sort key: ``val`` (each row's monitor value), a metric kind, ``public``, ``gap`` or ``created_at``.
            kinds: Row kinds: ``run``, ``group``, ``ensemble``, ``student`` (default all).
        """
        import pandas as pd

        params: dict[str, Any] = {"metric": metric, "limit": limit, "dataset_id": self._dataset_id(dataset),
                                  "kinds": list(kinds or []), "tag": tag, "arch": arch}
        params = {k: v for k, v in params.items() if v is not None and v != []}
        rows = []
        for r in (LeaderboardRow.model_validate(x) for x in self._call("GET", "leaderboard", params=params)):
            row = r.model_dump(mode="python", exclude={"metrics", "metrics_std"})
            row["kind"] = r.kind.value
            row.update(r.metrics)
            row.update({f"{k}_std": v for k, v in r.metrics_std.items()})
            rows.append(row)
        return pd.DataFrame(rows, columns=None if rows else list(LeaderboardRow.model_fields))

    def download_store(self, run_id: int, split: str = "val") -> Path:
        """A run's probability store of ``split`` (``val`` or ``test``) in the local cache, fetched once per version."""
        return download_folder(self._http, f"{self.api_url}/runs/{int(run_id)}/store", self._auth, {"split": split},
                               self.cache_dir / "runs" / str(int(run_id)) / split)

    def open_store(self, run_id: int, split: str = "val") -> StoreReader:
        """A run's probability store, downloaded into the cache and opened with segcore's store reader.

        Example:
            >>> store = sb.open_store(12)                       # doctest: +SKIP
            >>> store.ids[:2], store.read(store.ids[0]).shape   # doctest: +SKIP
            (['img_0000', 'img_0001'], (4, 64, 64))
        """
        from segcore.inference.store import ProbabilityStore

        return ProbabilityStore.open(self.download_store(run_id, split))

    def download_checkpoint(self, run_id: int) -> Path:
        """A run's best checkpoint folder (config, weights, metrics, provenance) in the local cache."""
        return download_folder(self._http, f"{self.api_url}/runs/{int(run_id)}/checkpoint", self._auth, {},
                               self.cache_dir / "runs" / str(int(run_id)) / "checkpoint")

    def predict(self, run_ids: Iterable[int] = (), *, group_ids: Iterable[int] = (), split: str = "test",
                tta: Mapping[str, Any] | None = None, priority: int = 0) -> JobRead:
        """Queue a prediction of runs' (or groups') test images, which a submission needs; the queued job."""
        body = {"run_ids": run_ids_of(run_ids), "group_ids": [int(i) for i in group_ids], "split": split,
                "tta": dict(tta) if tta is not None else None, "priority": priority}
        answer = self._call("POST", "predictions", json=body)
        self._warn(answer)
        return JobRead.model_validate(answer["job"])

    def job(self, job_id: int) -> JobRead:
        """One job."""
        return JobRead.model_validate(self._call("GET", f"jobs/{int(job_id)}"))

    def wait_job(self, job_id: int, *, timeout: float | None = None, poll_s: float = 5.0) -> JobRead:
        """Wait until a job finished; its final state."""
        return self._wait(lambda: self.job(job_id), lambda j: j.status in DONE, timeout=timeout, poll_s=poll_s,
                          what=f"job {job_id}")

    def submit_submission(self, *, run: int | None = None, group: int | None = None, ensemble: int | None = None,
                          format: str = "csv_rle", note: str = "") -> SubmissionRead:  # noqa: A002 - the API's name
        """Queue a submission file from the stored test predictions of one run, group or ensemble.

        The test predictions must exist (:meth:`predict`); the submission is ``queued`` until its file is written.
        """
        body = {"run_id": run, "group_id": group, "ensemble_id": ensemble, "format": format, "note": note}
        answer = self._call("POST", "submissions", json=body)
        self._warn(answer)
        return SubmissionRead.model_validate(answer["submission"])

    def submission(self, submission_id: int) -> SubmissionRead:
        """One submission: its status, file and public score."""
        return SubmissionRead.model_validate(self._call("GET", f"submissions/{int(submission_id)}"))

    def wait_submission(self, submission_id: int, *, timeout: float | None = None,
                        poll_s: float = 5.0) -> SubmissionRead:
        """Wait until a submission's file is written (or its job failed); its final state."""
        return self._wait(lambda: self.submission(submission_id), lambda s: s.status in DONE, timeout=timeout,
                          poll_s=poll_s, what=f"submission {submission_id}")

    def record_public_score(self, submission_id: int, score: float, *, note: str | None = None) -> SubmissionRead:
        """Enter the public leaderboard score of a submission (a fraction from 0 to 1)."""
        body = {"score": score, "note": note}
        return SubmissionRead.model_validate(self._call("POST", f"submissions/{int(submission_id)}/public-score",
                                                        json=body))

    def ensemble(self, members: Iterable[Any], *, method: str = "soft", name: str | None = None,
                 weight_search: str = "none", tta: Mapping[str, Any] | None = None, note: str = "") -> EnsembleRead:
        """Save an ensemble of runs, groups or ensembles (scored on the server) and queue its test prediction.

        Args:
            members: Run ids, ``("group", 3)``, ``("run", 5, 0.5)`` with a weight, or mappings.
            method: ``soft``, ``geometric``, ``majority`` or ``weighted``.
            name: Its leaderboard name; default one listing the members.
            weight_search: How a ``weighted`` ensemble finds its weights (``none`` keeps the given ones).
        """
        picked = [member(m) for m in members]
        name = name or "ensemble of " + ", ".join(f"{m.get('kind')} {m.get('id')}" for m in picked)
        body = {"name": name[:200], "members": picked, "method": method, "weight_search": weight_search,
                "tta": dict(tta) if tta is not None else None, "note": note}
        answer = self._call("POST", "ensembles", json=body)
        self._warn(answer)
        return EnsembleRead.model_validate(answer["ensemble"])

    def get_ensemble(self, ensemble_id: int) -> EnsembleRead:
        """One ensemble: members, weights, validation score and status."""
        return EnsembleRead.model_validate(self._call("GET", f"ensembles/{int(ensemble_id)}"))
