"""A corpus of malformed and hostile inputs, each sent through the real service (or reader) that receives it.

Every input must be refused with a typed error whose message is short and says what is wrong, and must
leave nothing behind: no new rows in any table, no new files under the dataset or artifact roots.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from PIL import Image

from segcore.data.synthetic import make_synthetic_coco, make_synthetic_mask_folder
from segcore.errors import SegcoreError
from worker.db.base import Base
from worker.errors import ServiceError
from worker.services import datasets, experiments, members, submissions
from worker.services.confinement import DataRoots
from worker.settings import get_settings

CLASSES = ["background", "class_1", "class_2"]
SECRET = "AWS_SECRET_ACCESS_KEY=abc123"


def _config(**data: Any) -> dict[str, Any]:
    return {"name": "t", "data": {"source": {"format": "mask_folder", "root": "masks"}, "classes": CLASSES, **data},
            "training": {"epochs": 1, "batch_size": 2}}


def _set(cfg: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    return experiments.set_config_path(cfg, dotted, value)


def _zip(members_: dict[str, bytes], *, link: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members_.items():
            zf.writestr(name, data)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.external_attr = (0o120777 << 16)  # a symbolic link
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def _tar(name: str, *, kind: bytes = tarfile.REGTYPE, target: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = target
        data = b"x" if kind == tarfile.REGTYPE else b""
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def world(tmp_path: Path, session: Any) -> SimpleNamespace:
    """A dataset root with a COCO and a mask-folder dataset (each copied per hostile file), and an artifact root."""
    root, art = tmp_path / "datasets", tmp_path / "artifacts"
    (root / "uploads").mkdir(parents=True)
    (art / "pseudo").mkdir(parents=True)
    coco = make_synthetic_coco(root / "coco", num_images=4, num_classes=2, size=32, num_test_images=0)
    make_synthetic_mask_folder(root / "masks", num_images=4, num_classes=3, size=32, num_test_images=0)
    settings = get_settings(home=tmp_path / "home", dataset_root=str(root), artifact_root=str(art),
                            extra_dataset_roots=[], remote_dataset_prefixes=["s3://team-data/"])
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.env").write_text(SECRET + "\n")
    os.symlink(tmp_path / "outside", root / "masks" / "escape")
    admin = members.create_member(session, actor=None, name="ada").id
    return SimpleNamespace(root=root, art=art, coco=coco, roots=DataRoots.from_settings(settings), admin=admin,
                           tmp=tmp_path)


def _coco_case(w: SimpleNamespace, name: str, edit: Callable[[dict[str, Any]], Any]) -> Callable[[], Any]:
    """Register a copy of the COCO dataset whose annotation file ``edit`` changed (or replaced, for text)."""
    path = w.root / "coco" / f"{name}.json"
    data = json.loads((w.root / "coco" / "annotations.json").read_text())
    out = edit(data)
    path.write_text(out if isinstance(out, str) else json.dumps(data))
    src = {"format": "coco", "root": "coco", "annotations": path.name}
    return lambda: datasets.register_dataset(w.session, actor=None, name=name, source=src, roots=w.roots)


def _mask_case(w: SimpleNamespace, name: str, write: Callable[[Path], None]) -> Callable[[], Any]:
    """Register a copy of the mask folder whose first mask ``write`` replaced."""
    import shutil

    folder = w.root / f"masks-{name}"
    shutil.copytree(w.root / "masks" / "images", folder / "images")
    shutil.copytree(w.root / "masks" / "masks", folder / "masks")
    write(folder / "masks" / "img_0000.png")
    src = {"format": "mask_folder", "root": folder.name, "ignore_value": 255}
    return lambda: datasets.register_dataset(w.session, actor=None, name=name, source=src, classes=CLASSES,
                                             roots=w.roots)


def _corpus(w: SimpleNamespace) -> list[tuple[str, Callable[[], Any]]]:
    s, roots = w.session, w.roots

    def submit(cfg: Any) -> Callable[[], Any]:
        return lambda: experiments.create_experiment(s, actor=w.admin, config=cfg, roots=roots)

    def register(src: dict[str, Any], name: str = "x") -> Callable[[], Any]:
        return lambda: datasets.register_dataset(s, actor=w.admin, name=name, source=src, classes=CLASSES,
                                                 roots=roots)

    def archive(data: bytes, filename: str, max_mib: int = 4) -> Callable[[], Any]:
        from worker.services import uploads

        limits = uploads.ArchiveLimits(max_total_bytes=max_mib * 2**20, max_file_bytes=max_mib * 2**20)
        return lambda: uploads.extract_archive(data, filename, w.root / "uploads" / "up", limits=limits)

    def csv(text: str, reader: str) -> Callable[[], Any]:
        from segcore import submission

        path = w.tmp / f"sub-{abs(hash(text))}.csv"
        path.write_text(text)
        if reader == "class_map":
            return lambda: submission.read_class_map_csv(path, size=(2, 2), num_classes=3)
        return lambda: submission.read_rle_csv(path, classes=CLASSES, shape=(4, 4))

    deep = "a: " + "[" * 5000 + "]" * 5000
    cases: list[tuple[str, Callable[[], Any]]] = [
        # ---- configs
        ("unknown key", submit(_set(_config(), "training.epochz", 3))),
        ("unknown section", submit({**_config(), "hacks": {"x": 1}})),
        ("wrong type", submit(_set(_config(), "training.epochs", "many"))),
        ("list for a section", submit(_set(_config(), "model", [1, 2]))),
        ("huge epochs", submit(_set(_config(), "training.epochs", 10**30))),
        ("epochs 1e20 from JSON", submit(json.dumps(_set(_config(), "training.epochs", 1e20)))),
        ("huge image", submit(_config(image_size=[100000, 100000]))),
        ("NaN learning rate", submit(_set(_config(), "optimizer.lr", float("nan")))),
        ("infinite clip", submit(_set(_config(), "training.grad_clip", float("inf")))),
        ("negative batch", submit(_set(_config(), "training.batch_size", -4))),
        ("negative seed", submit(_set(_config(), "training.seed", -1))),
        ("python object tag", submit("name: t\ndata: !!python/object/apply:os.system ['true']\n")),
        ("python name tag", submit("!!python/name:os.system\n")),
        ("deep nesting", submit(deep)),
        ("not a mapping", submit("- just\n- a list\n")),
        ("binary junk", submit("\x00\x01\x02\xff")),
        ("huge params", submit(_set(_config(), "model.params", {"x": list(range(10_000))}))),
        ("too many runs", lambda: experiments.create_experiment(s, actor=w.admin, config=_config(), roots=roots,
                                                                 n_folds=20, seeds=list(range(50)))),
        # ---- paths
        ("root traversal", submit(_set(_config(), "data.source.root", "../../etc"))),
        ("root absolute", submit(_set(_config(), "data.source.root", "/etc"))),
        ("images traversal", submit(_set(_config(), "data.source.images", "../../../../etc"))),
        ("symlink out", submit(_set(_config(), "data.source.masks", "escape"))),
        ("secret split list", submit(_config(split={"kind": "predefined",
                                                    "train": str(w.tmp / "outside" / "secret.env")}))),
        ("NUL in a path", submit(_set(_config(), "data.source.root", "masks\x00/etc"))),
        ("very long path", submit(_set(_config(), "data.source.root", "a/" * 3000))),
        ("s3 outside the list", submit(_set(_config(), "data.source.root", "s3://other/data"))),
        ("s3 with ..", submit(_set(_config(), "data.source.root", "s3://team-data/../other"))),
        ("chained URL", submit(_set(_config(), "data.source.root", "simplecache::s3://team-data/x"))),
        ("file URL", submit(_set(_config(), "data.source.root", "file:///etc"))),
        ("weights outside", submit(_set(_config(), "model.encoder_weights_path", "/etc/shadow"))),
        ("register /etc", register({"format": "mask_folder", "root": "/etc"})),
        ("register symlink", register({"format": "mask_folder", "root": "masks/escape"})),
        ("register NUL", register({"format": "mask_folder", "root": "ma\x00sks"})),
        ("mask suffix traversal", register({"format": "mask_folder", "root": "masks", "mask_suffix": "/../../x"})),
        # ---- archives
        ("zip slip", archive(_zip({"../../evil.txt": b"x"}), "a.zip")),
        ("absolute member", archive(_zip({"/etc/evil.txt": b"x"}), "a.zip")),
        ("zip symlink member", archive(_zip({"ok.txt": b"x"}, link="link"), "a.zip")),
        ("zip bomb", archive(_zip({"zeros.bin": bytes(16 * 2**20)}), "a.zip", max_mib=1)),
        ("not an archive", archive(b"this is text, not a zip", "a.zip")),
        ("tar symlink", archive(_tar("link", kind=tarfile.SYMTYPE, target="/etc/passwd"), "a.tar.gz")),
        ("tar device", archive(_tar("dev", kind=tarfile.CHRTYPE), "a.tar.gz")),
        ("tar traversal", archive(_tar("../../evil"), "a.tar.gz")),
        ("wrong extension", archive(_zip({"a": b"x"}), "a.exe")),
        # ---- COCO files
        ("bad json", _coco_case(w, "bad-json", lambda d: "{not json")),
        ("missing images", _coco_case(w, "no-images", lambda d: d.pop("images"))),
        ("polygon out of range", _coco_case(w, "far", lambda d: d["annotations"][0].update(
            segmentation=[[1e9, 1e9, 2e9, 1e9, 2e9, 2e9]]))),
        ("NaN coordinates", _coco_case(w, "nan", lambda d: d["annotations"][0].update(
            segmentation=[[float("nan"), 0, 5, 0, 5, 5]]))),
        ("huge ids", _coco_case(w, "huge", lambda d: d["annotations"][0].update(image_id=10**40, id=10**40))),
        ("text category ids", _coco_case(w, "textcat", lambda d: d["categories"][0].update(id=SECRET))),
        ("secret image id", _coco_case(w, "secretid", lambda d: d["images"][0].update(height=SECRET))),
        ("annotations not a list", _coco_case(w, "annlist", lambda d: d.update(annotations={"a": 1}))),
        # ---- mask files
        ("colour mask", _mask_case(w, "rgb", lambda p: Image.new("RGB", (32, 32), (255, 0, 0)).save(p))),
        ("mask of another size", _mask_case(w, "size", lambda p: Image.new("L", (8, 8)).save(p))),
        ("mask not an image", _mask_case(w, "text", lambda p: p.write_text(SECRET))),
        ("mask empty", _mask_case(w, "empty", lambda p: p.write_bytes(b""))),
        # ---- scores
        ("score as text", lambda: submissions.record_public_score(s, actor=w.admin, submission_id=1, score="good")),
        ("score NaN", lambda: submissions.record_public_score(s, actor=w.admin, submission_id=1, score="nan")),
        ("score out of range", lambda: submissions.record_public_score(s, actor=w.admin, submission_id=1,
                                                                        score="1e400")),
        ("CSV text values", csv("image_id,PredictionString\na," + SECRET + "\n", "class_map")),
        ("CSV NaN values", csv("image_id,PredictionString\na,nan nan nan nan\n", "class_map")),
        ("CSV class out of range", csv("image_id,PredictionString\na,0 1 2 9\n", "class_map")),
        ("CSV wrong header", csv(SECRET + "\n", "class_map")),
        ("RLE CSV secret class", csv("image_name,class,rle\na," + SECRET + ",1 2\n", "rle")),
        # ---- names with markup
        ("experiment <script>", lambda: experiments.create_experiment(s, actor=w.admin, roots=roots, config=_config(),
                                                                      name="<script>alert(1)</script>")),
        ("experiment markdown link", submit({**_config(), "name": "[click](http://evil.example)"})),
        ("dataset markup", lambda: datasets.register_dataset(s, actor=w.admin, name="<b>ds</b>", roots=roots,
                                                            source={"format": "mask_folder", "root": "masks"},
                                                            classes=CLASSES)),
        ("member markup", lambda: members.create_member(s, actor=w.admin, name="<img src=x onerror=alert(1)>")),
        ("tag markdown image", lambda: experiments.create_experiment(s, actor=w.admin, roots=roots, config=_config(),
                                                                     tags=["![x](http://evil.example/t.png)"])),
        ("tag with backticks", submit({**_config(), "tags": ["`rm -rf /`"]})),
    ]
    return cases


def _rows(session: Any) -> dict[str, int]:
    return {t.name: session.scalar(sa.select(sa.func.count()).select_from(t)) for t in Base.metadata.sorted_tables}


def _files(*folders: Path) -> set[str]:
    return {str(p) for folder in folders for p in folder.rglob("*")}


def test_hostile_inputs_get_clear_messages_and_leave_nothing_behind(session: Any, world: SimpleNamespace) -> None:
    from segcore.config import CocoSource, MaskFolderSource
    from segcore.data.validation import validate_dataset

    world.session = session
    # the untouched datasets are valid: each refusal below comes from its one hostile change
    assert validate_dataset(CocoSource(root="coco"), dataset_root=str(world.root)).ok
    assert validate_dataset(MaskFolderSource(root="masks", ignore_value=255), classes=CLASSES,
                            dataset_root=str(world.root)).ok
    corpus = _corpus(world)
    rows, files = _rows(session), _files(world.root, world.art)
    failures: list[str] = []
    for label, call in corpus:
        try:
            call()
        except (ServiceError, SegcoreError) as exc:
            message = str(exc)
            if not message.strip() or len(message) > 3000 or "Traceback" in message or "unexpected" in message:
                failures.append(f"{label}: unclear message {message[:300]!r}")
            if "abc123" in message:
                failures.append(f"{label}: the message quotes a file's contents: {message[:300]!r}")
        except Exception as exc:  # noqa: BLE001 - an untyped error is a failure of this corpus
            failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:300]}")
        else:
            failures.append(f"{label}: accepted")
        session.flush()
        if _rows(session) != rows:
            failures.append(f"{label}: left rows behind")
            session.rollback()
            rows = _rows(session)
        if _files(world.root, world.art) != files:
            failures.append(f"{label}: left files behind: {sorted(_files(world.root, world.art) - files)[:3]}")
            files = _files(world.root, world.art)
    n = len(corpus)
    print(f"hostile inputs tried: {n}")
    assert n >= 40
    assert not failures, "\n".join(failures)
