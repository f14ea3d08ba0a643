"""The HTTP API (worker/api) through FastAPI's TestClient over a migrated SQLite database in tmp_path.

Members, tokens, datasets and finished runs are written through the services (and, where a worker
would write them, epoch rows, logs and stores by hand); every request then goes through the API with
a real token. The queue sender records what the API published after each commit. The last tests drive
the Python client over the same app mounted at ``/api``, as the web app mounts it.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest

from worker.db.models import EpochMetric, LogLevel, Run, RunLog, RunStatus
from worker.db.session import make_session_factory, session_scope
from worker.services import accounts, datasets, members
from worker.services.outbox import Queued

from .test_inspection_service import CLASSES, _class_pixels, shapes, write_store  # noqa: F401

pytest.importorskip("fastapi", reason="pip install -e . installs FastAPI (the HTTP API)")


@dataclasses.dataclass
class Api:
    """The app under test, its database, what it published and one token per member."""

    http: Any
    factory: Any
    sent: list[Queued]
    ids: dict[str, int]
    tokens: dict[str, str]
    tmp: Path

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def get(self, who: str, path: str, headers: dict[str, str] | None = None, **kw: Any) -> Any:
        return self.http.get(path, headers={**self.h(who), **(headers or {})}, **kw)

    def post(self, who: str, path: str, **kw: Any) -> Any:
        return self.http.post(path, headers=self.h(who), **kw)


@pytest.fixture
def api(tmp_path: Path, engine: Any) -> Any:
    from fastapi.testclient import TestClient

    from worker.api import create_app
    from worker.settings import get_settings

    factory = make_session_factory(engine)
    settings = get_settings(home=tmp_path / "home", database_url=str(engine.url), auth="local",
                            artifact_root=str(tmp_path / "artifacts"), dataset_root=str(tmp_path / "datasets"))
    sent: list[Queued] = []

    def send(queued: Queued) -> int:
        sent.append(queued)
        return len(queued.run_ids) + len(queued.job_ids)

    ids, tokens = {}, {}
    with session_scope(factory) as s:
        for name, role in (("ada", "admin"), ("bob", "member"), ("cy", "member"), ("vic", "viewer")):
            ids[name] = members.create_member(s, actor=ids.get("ada"), name=name, role=role).id
            tokens[name] = accounts.create_token(s, actor=None, member_id=ids[name], name="laptop")[1]
    with TestClient(create_app(settings, session_factory=factory, send=send)) as http:
        yield Api(http=http, factory=factory, sent=sent, ids=ids, tokens=tokens, tmp=tmp_path)


def _submit(api: Api, config: dict[str, Any], who: str = "bob", **options: Any) -> Any:
    return api.post(who, "/experiments", json={"config": config, **options})


# ------------------------------------------------------------------ authentication and errors


def test_every_request_needs_a_valid_token(api):
    answer = api.http.get("/runs")
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    assert answer.json()["error"] == "AuthenticationFailed"
    assert "Authorization: Bearer" in answer.json()["detail"] and "segboard token create" in answer.json()["detail"]
    bad = api.http.get("/runs", headers={"Authorization": "Bearer sbt_not-a-token"})
    assert bad.status_code == 401 and bad.json()["error"] == "AuthenticationFailed"
    assert "\n" not in bad.json()["detail"]
    assert api.http.get("/runs", headers={"Authorization": f"Basic {api.tokens['bob']}"}).status_code == 401
    me = api.get("bob", "/me").json()
    assert me["name"] == "bob" and me["role"] == "member"
    with session_scope(api.factory) as s:
        [token] = accounts.list_tokens(s, actor=None, member_id=api.ids["bob"])
        accounts.revoke_token(s, actor=api.ids["bob"], token_id=token.id)
    assert api.get("bob", "/me").status_code == 401


def test_a_viewers_submit_is_403_and_nothing_is_written_or_queued(api, config_dict):
    answer = _submit(api, config_dict, who="vic")
    assert answer.status_code == 403 and answer.json()["error"] == "PermissionDenied"
    assert "viewer" in answer.json()["detail"]
    assert api.get("vic", "/runs").json() == [] and api.sent == []


def test_a_bad_config_is_422_naming_the_field(api, config_dict):
    config_dict["model"]["encoder"] = "resnet_999"
    answer = _submit(api, config_dict)
    body = answer.json()
    assert answer.status_code == 422 and body["error"] == "InvalidFields"
    assert "model.encoder" in body["fields"] and "resnet_999" in body["fields"]["model.encoder"]
    assert [p[0] for p in body["problems"]] == list(body["fields"])
    # a body FastAPI cannot read is answered the same way, field by field
    config_dict["model"]["encoder"] = "resnet18"
    unread = _submit(api, config_dict, n_folds="five", foldz=5).json()
    assert unread["error"] == "InvalidFields" and {"n_folds", "foldz"} <= set(unread["fields"])
    # bounds the submit-time check applies
    too_many = _submit(api, config_dict, n_folds=99).json()
    assert too_many["error"] == "InvalidFields" and "n_folds" in too_many["fields"]
    assert api.sent == [] and api.get("bob", "/runs").json() == []


# ------------------------------------------------------------------ experiments and runs


def test_submit_queues_the_runs_after_the_commit_and_lists_them(api, config_dict):
    answer = _submit(api, config_dict, n_folds=2, seeds=[0, 1], priority=2, tags=["cv"], note="first")
    assert answer.status_code == 201, answer.text
    body = answer.json()
    exp, run_ids = body["experiment"], body["experiment"]["run_ids"]
    assert body["queue_problem"] is None and len(run_ids) == 4 and exp["owner_id"] == api.ids["bob"]
    assert api.sent == [Queued(run_ids=tuple(run_ids))]
    listed = api.get("vic", "/runs", params={"experiment_id": exp["id"], "order": "oldest"}).json()
    assert [r["id"] for r in listed] == run_ids and {r["status"] for r in listed} == {"queued"}
    assert [r["id"] for r in api.get("vic", "/runs", params={"tag": "cv", "status": ["queued", "running"]}).json()] \
        == sorted(run_ids, reverse=True)
    assert api.get("vic", "/runs", params={"status": "running"}).json() == []
    run = api.get("vic", f"/runs/{run_ids[0]}").json()
    assert run["config"]["data"]["split"]["fold"] == 0 and run["priority"] == 2
    assert api.get("vic", f"/experiments/{exp['id']}").json()["run_ids"] == run_ids
    unknown = api.get("vic", "/runs", params={"status": "sleeping"})
    assert unknown.status_code == 422 and "sleeping" in unknown.json()["detail"]
    missing = api.get("vic", "/runs/999")
    assert missing.status_code == 404 and missing.json()["error"] == "NotFound"
    assert missing.json()["kind"] == "run" and missing.json()["object_id"] == 999
    # YAML text is a config too
    import yaml

    assert _submit(api, yaml.safe_dump(config_dict), name="from-yaml").status_code == 201


def test_metrics_logs_cancel_and_requeue(api, config_dict):
    [run_id] = _submit(api, config_dict).json()["experiment"]["run_ids"]
    with session_scope(api.factory) as s:  # what a worker writes while it trains
        for epoch in (1, 2):
            s.add(EpochMetric(run_id=run_id, epoch=epoch, train_loss=1.0 / epoch, lr=1e-3, images_per_s=10.0,
                              val={"miou": 0.3 * epoch, "loss": 0.9 / epoch}))
        s.add_all([RunLog(run_id=run_id, level=LogLevel.INFO, message=f"line {i}") for i in range(3)])
    metrics = api.get("vic", f"/runs/{run_id}/metrics").json()
    assert [m["epoch"] for m in metrics] == [1, 2] and metrics[1]["val"]["miou"] == pytest.approx(0.6)
    assert [m["epoch"] for m in api.get("vic", f"/runs/{run_id}/metrics", params={"since_epoch": 1}).json()] == [2]
    lines = api.get("vic", f"/runs/{run_id}/logs").json()
    assert [ln["message"] for ln in lines][-3:] == ["line 0", "line 1", "line 2"]
    assert api.get("vic", f"/runs/{run_id}/logs", params={"after_id": lines[-1]["id"]}).json() == []

    refused = api.post("cy", f"/runs/{run_id}/cancel")  # another member's run
    assert refused.status_code == 403 and refused.json()["error"] == "PermissionDenied"
    assert api.post("vic", f"/runs/{run_id}/cancel").status_code == 403
    assert api.post("bob", f"/runs/{run_id}/cancel").json() == {"run_id": run_id, "status": "cancelled",
                                                                "queue_problem": None}
    api.sent.clear()
    requeued = api.post("ada", f"/runs/{run_id}/requeue")  # an admin may
    assert requeued.json()["status"] == "queued" and api.sent == [Queued(run_ids=(run_id,))]
    again = api.post("bob", f"/runs/{run_id}/requeue")
    assert again.status_code == 409 and again.json()["error"] == "Conflict" and "queued" in again.json()["detail"]
    assert api.get("bob", f"/runs/{run_id}").json()["status"] == "queued"


def test_leaderboard_and_datasets(api, config_dict, seed):
    with session_scope(api.factory) as s:
        ds = seed.add_dataset(s)
    exp = _submit(api, {**config_dict, "data": {**config_dict["data"]}}, seeds=[0, 1, 2]).json()["experiment"]
    with session_scope(api.factory) as s:
        for rid, miou in zip(exp["run_ids"], (0.5, 0.7, 0.6)):
            s.get(Run, rid).dataset_id = ds
            seed.finish(s, rid, seed.metrics(miou))
    assert [d["name"] for d in api.get("vic", "/datasets").json()] == ["camvid"]
    rows = api.get("vic", "/leaderboard", params={"dataset_id": ds, "metric": "miou", "kinds": "run"}).json()
    assert [r["metrics"]["miou"] for r in rows] == [0.7, 0.6, 0.5]
    assert all(r["kind"] == "run" and r["dataset_id"] == ds for r in rows)
    worst_first = api.get("vic", "/leaderboard", params={"metric": "miou", "kinds": "run", "descending": False})
    assert [r["metrics"]["miou"] for r in worst_first.json()] == [0.5, 0.6, 0.7]
    bad = api.get("vic", "/leaderboard", params={"metric": "speed"})
    assert bad.status_code == 422 and "speed" in bad.json()["detail"]


# ------------------------------------------------------------------ stores, checkpoints, submissions, ensembles


@pytest.fixture
def finished(api, shapes, seed):  # noqa: F811 - the fixture imported above
    """Two of bob's finished runs on the registered shapes dataset, with validation stores; ``good`` has a
    test store and a checkpoint too; ``bad`` predicts one class of one image as background."""
    source, ds = shapes
    ids = ds.ids[:4]
    victim = next(i for i in ids if _class_pixels(ds, i, 1) > 0)
    with session_scope(api.factory) as s:
        dataset_id = datasets.register_dataset(s, actor=api.ids["ada"], name="shapes", source=source,
                                               classes=CLASSES, check_pixels=False).id
    config = {"name": "tiny", "data": {"source": source.model_dump(mode="json"), "classes": CLASSES,
                                       "split": {"kind": "holdout", "val_fraction": 0.25, "seed": 0}},
              "model": {"arch": "Unet", "encoder": "resnet18", "encoder_weights": None},
              "training": {"epochs": 2, "batch_size": 4}}
    answer = _submit(api, config, seeds=[0, 1], dataset_id=dataset_id)
    assert answer.status_code == 201, answer.text
    good, bad = answer.json()["experiment"]["run_ids"]
    arts = api.tmp / "artifacts" / "runs"
    checkpoint = arts / str(good) / "checkpoints" / "best"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text("{}")
    (checkpoint / "model.safetensors").write_bytes(b"\0" * 4096)
    with session_scope(api.factory) as s:
        for rid, erase, miou in ((good, None, 0.9), (bad, {victim: 1}, 0.8)):
            seed.finish(s, rid, seed.metrics(miou))
            s.get(Run, rid).val_store = write_store(arts / str(rid) / "predictions" / "val", ds, ids, erase=erase)
            s.add_all([EpochMetric(run_id=rid, epoch=e, train_loss=1.0 / e, lr=1e-3, val={"miou": miou * e / 2})
                       for e in (1, 2)])
        s.get(Run, good).test_store = write_store(arts / str(good) / "predictions" / "test", ds, ids[:2])
        s.get(Run, good).checkpoint_dir = str(checkpoint)
    return {"good": good, "bad": bad, "ids": ids, "dataset_id": dataset_id}


def _unzip(content: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def test_a_store_and_a_checkpoint_download_as_zips(api, finished, tmp_path):
    from segcore.inference.store import ProbabilityStore

    good = finished["good"]
    answer = api.get("vic", f"/runs/{good}/store", params={"split": "val"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    files = _unzip(answer.content)
    top = f"run{good}-val"
    assert f"{top}/manifest.json" in files and all(name.startswith(f"{top}/") for name in files)
    with zipfile.ZipFile(io.BytesIO(answer.content)) as zf:
        zf.extractall(tmp_path / "got")
    store = ProbabilityStore.open(tmp_path / "got" / top)
    assert list(store.ids) == finished["ids"] and store.read(finished["ids"][0]).shape == (4, 64, 64)
    # the same version again: 304 without a body
    etag = answer.headers["etag"]
    same = api.get("vic", f"/runs/{good}/store", params={"split": "val"}, headers={"If-None-Match": etag})
    assert same.status_code == 304 and same.content == b""
    assert _unzip(api.get("vic", f"/runs/{good}/store", params={"split": "test"}).content)
    missing = api.get("vic", f"/runs/{finished['bad']}/store", params={"split": "test"})
    assert missing.status_code == 422 and "predict" in missing.json()["detail"]
    assert api.get("vic", f"/runs/{good}/store", params={"split": "train"}).status_code == 422

    ckpt = _unzip(api.get("vic", f"/runs/{good}/checkpoint").content)
    assert set(ckpt) == {f"run{good}-checkpoint/config.json", f"run{good}-checkpoint/model.safetensors"}
    none = api.get("vic", f"/runs/{finished['bad']}/checkpoint")
    assert none.status_code == 409 and "no checkpoint" in none.json()["detail"]


def test_a_submission_its_public_score_and_an_ensemble(api, finished):
    good, bad = finished["good"], finished["bad"]
    api.sent.clear()
    predicted = api.post("bob", "/predictions", json={"run_ids": [bad]})
    assert predicted.status_code == 201, predicted.text
    job = predicted.json()["job"]
    assert job["kind"] == "predict" and job["target"] == {"run_ids": [bad]}
    assert api.sent == [Queued(job_ids=(job["id"],))]
    assert api.get("vic", f"/jobs/{job['id']}").json()["status"] == "queued"
    assert api.post("vic", "/predictions", json={"run_ids": [bad]}).status_code == 403

    no_test = api.post("bob", "/submissions", json={"run_id": bad})
    assert no_test.status_code == 422 and "test predictions" in no_test.json()["detail"]
    two = api.post("bob", "/submissions", json={"run_id": good, "group_id": 1})
    assert two.status_code == 422 and "exactly one" in two.json()["detail"]
    made = api.post("bob", "/submissions", json={"run_id": good, "format": "csv_rle", "note": "v1"})
    assert made.status_code == 201, made.text
    sub, sub_job = made.json()["submission"], made.json()["job"]
    assert sub["status"] == "queued" and sub_job["target"] == {"submission_id": sub["id"]}
    assert api.sent[-1] == Queued(job_ids=(sub_job["id"],))
    assert [s["id"] for s in api.get("vic", "/submissions", params={"run_id": good}).json()] == [sub["id"]]

    score = f"/submissions/{sub['id']}/public-score"
    percent = api.post("bob", score, json={"score": 81.2})
    assert percent.status_code == 422 and "0.812" in percent.json()["detail"]
    assert api.post("cy", score, json={"score": 0.8}).status_code == 403
    saved = api.post("bob", score, json={"score": "0.8123", "note": "public LB"}).json()
    assert saved["public_score"] == pytest.approx(0.8123) and saved["score_note"] == "public LB"
    assert saved["note"] == "v1"
    assert api.get("vic", f"/submissions/{sub['id']}").json()["score_entered_by"] == api.ids["bob"]

    ens = api.post("cy", "/ensembles", json={"name": "good+bad", "members": [{"kind": "run", "id": good},
                                                                             {"kind": "run", "id": bad}]})
    assert ens.status_code == 201, ens.text
    body = ens.json()
    assert body["ensemble"]["owner_id"] == api.ids["cy"] and 0 < body["ensemble"]["val_score"] <= 1
    assert body["job"]["kind"] == "predict" and body["job"]["target"]["run_ids"] == [bad]  # good has test probs
    assert "queued as job" in body["next_step"] and api.sent[-1] == Queued(job_ids=(body["job"]["id"],))
    assert api.get("vic", f"/ensembles/{body['ensemble']['id']}").json()["name"] == "good+bad"
    empty = api.post("cy", "/ensembles", json={"name": "none", "members": []})
    assert empty.status_code == 422 and "members" in empty.json()["fields"]
    pair = [{"kind": "run", "id": good}, {"kind": "run", "id": bad}]
    assert api.post("vic", "/ensembles", json={"name": "v", "members": pair}).status_code == 403


# ------------------------------------------------------------------ mounted at /api, through the Python client


@pytest.fixture
def mounted(api):
    from fastapi.testclient import TestClient
    from starlette.applications import Starlette
    from starlette.routing import Mount

    with TestClient(Starlette(routes=[Mount("/api", app=api.http.app)])) as http:
        yield http


def test_the_docs_are_served_under_api(mounted):
    page = mounted.get("/api/docs")
    assert page.status_code == 200 and "/api/openapi.json" in page.text
    spec = mounted.get("/api/openapi.json").json()
    assert {"/experiments", "/runs/{run_id}/store", "/leaderboard"} <= set(spec["paths"])


def test_the_client_raises_the_services_exception_types(api, mounted, config_dict, tmp_path, monkeypatch):
    from worker import errors
    from worker.client import Client

    def client(who: str) -> Client:
        return Client("http://testserver", token=api.tokens[who], http=mounted, cache_dir=tmp_path / "cache")

    bob = client("bob")
    assert bob.me().name == "bob"
    with pytest.raises(errors.PermissionDenied, match="viewer"):
        client("vic").submit(config_dict)
    config_dict["model"]["encoder"] = "resnet_999"
    with pytest.raises(errors.InvalidFields) as refused:
        bob.submit(config_dict)
    assert "model.encoder" in refused.value.fields and isinstance(refused.value, errors.ConfigError)
    with pytest.raises(errors.NotFound) as missing:
        bob.run(12345)
    assert missing.value.kind == "run" and "12345" in str(missing.value)
    with pytest.raises(errors.AuthenticationFailed):
        Client("http://testserver", token="sbt_wrong", http=mounted).me()
    monkeypatch.delenv("SEGBOARD_TOKEN", raising=False)
    with pytest.raises(errors.AuthenticationFailed, match="SEGBOARD_TOKEN"):
        Client("http://testserver", token="", http=mounted)


def test_the_client_reads_frames_stores_and_scores(api, finished, mounted, tmp_path):
    from worker.client import Client

    good, bad = finished["good"], finished["bad"]
    sb = Client("http://testserver/api", token=api.tokens["bob"], http=mounted, cache_dir=tmp_path / "cache")
    assert [r.id for r in sb.runs(dataset="shapes", status="succeeded", order="oldest")] == [good, bad]
    board = sb.leaderboard("shapes", metric="miou", kinds=["run"])
    assert list(board["id"]) == [good, bad] and list(board["miou"]) == [0.9, 0.8] and set(board["kind"]) == {"run"}
    frame = sb.metrics(good)
    assert list(frame.index) == [1, 2] and list(frame["val_miou"]) == pytest.approx([0.45, 0.9])

    store = sb.open_store(good)
    assert list(store.ids) == finished["ids"] and store.read(finished["ids"][1]).shape == (4, 64, 64)
    folder = sb.download_store(good)
    first = (folder / "manifest.json").stat().st_mtime_ns
    assert sb.download_store(good) == folder and (folder / "manifest.json").stat().st_mtime_ns == first  # 304
    assert (sb.download_checkpoint(good) / "model.safetensors").stat().st_size == 4096

    job = sb.predict([bad])
    assert sb.job(job.id).status is RunStatus.QUEUED
    sub = sb.submit_submission(run=good, note="first")
    assert sub.status is RunStatus.QUEUED and sub.run_id == good
    assert sb.record_public_score(sub.id, 0.75, note="LB").public_score == pytest.approx(0.75)
    ens = sb.ensemble([good, ("run", bad)], name="pair")
    assert ens.name == "pair" and [m.id for m in ens.members] == [good, bad]
    assert sb.get_ensemble(ens.id).val_score == ens.val_score


def test_the_dashboards_web_login_reads_and_single_user_mode_reads_without_a_token(api, tmp_path, engine):
    from fastapi.testclient import TestClient

    from worker.api import create_app
    from worker.settings import get_settings

    with session_scope(api.factory) as s:
        login = accounts.start_login(s, member_id=api.ids["bob"])
    # the dashboard's download links: the browser sends its login cookie (reads only)
    assert api.http.get("/me", cookies={"segboard_session": login}).json()["name"] == "bob"
    assert api.http.post("/experiments", cookies={"segboard_session": login}, json={}).status_code == 401
    assert api.http.get("/me", cookies={"segboard_session": "sbt_ended"}).status_code == 401
    single = get_settings(home=tmp_path / "solo", database_url=str(engine.url),
                          artifact_root=str(tmp_path / "artifacts"), dataset_root=str(tmp_path / "datasets"))
    with TestClient(create_app(single, session_factory=api.factory, send=lambda q: 0)) as http:
        assert http.get("/runs").status_code == 200  # bound to 127.0.0.1, no accounts: reads are open
        assert http.post("/experiments", json={}).status_code == 401  # writes still need a token


def test_group_and_ensemble_stores_and_submission_files_download(api, finished, tmp_path):
    from worker.db.models import Ensemble, RunGroup, Submission

    good = finished["good"]
    with session_scope(api.factory) as s:
        run = s.get(Run, good)
        group = s.get(RunGroup, run.group_id)
        group.oof_store = run.val_store
        ens = Ensemble(name="e", method="soft", members=[{"kind": "run", "id": good, "weight": 1.0},
                                                        {"kind": "run", "id": finished["bad"], "weight": 1.0}],
                       val_metrics={}, monitor_metric="miou", status="succeeded", test_store=run.test_store,
                       owner_id=api.ids["bob"], dataset_id=finished["dataset_id"])
        s.add(ens)
        csv = tmp_path / "artifacts" / "submissions" / "1" / "submission.csv"
        csv.parent.mkdir(parents=True)
        csv.write_text("id,rle\nimg_0,1 2\n")
        sub = Submission(run_id=good, dataset_id=finished["dataset_id"], format="csv_rle", file_path=str(csv),
                         status="succeeded", created_by=api.ids["bob"])
        s.add(sub)
        s.flush()
        group_id, ens_id, sub_id = group.id, ens.id, sub.id
    oof = api.get("vic", f"/stores/group/{group_id}", params={"split": "val"})
    assert oof.status_code == 200 and f"group{group_id}-val/manifest.json" in _unzip(oof.content)
    test = api.get("vic", f"/stores/ensemble/{ens_id}", params={"split": "test"})
    assert test.status_code == 200 and f"ensemble{ens_id}-test/manifest.json" in _unzip(test.content)
    members = api.get("vic", f"/stores/ensemble/{ens_id}", params={"split": "val"})
    assert members.status_code == 409 and "download those instead" in members.json()["detail"]
    got = api.get("vic", f"/submissions/{sub_id}/file")
    assert got.status_code == 200 and got.text == "id,rle\nimg_0,1 2\n"
    assert "submission.csv" in got.headers["content-disposition"]
