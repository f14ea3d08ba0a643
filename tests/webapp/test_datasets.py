"""Datasets page: register from a path or an upload (safely), the validation report, EDA, samples."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path


def _zip_of(folder: Path, prefix: str = "ds/") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, prefix + str(p.relative_to(folder)))
    return buf.getvalue()


def _fill(at, name: str, *, root: str | None = None):
    next(t for t in at.text_input if t.label == "Name").input(name)
    if root is not None:
        next(t for t in at.text_input if t.label == "Folder on the server").input(root)
    next(t for t in at.text_input if t.label.startswith("Unlabelled test image folder")).input("test")
    return at


def _first_member(at):
    """Add the team's first member from the sidebar: a write needs an acting member."""
    at.sidebar.text_input[0].input("ada")
    at.sidebar.button[0].click().run()
    return at


def _submit(at):
    next(b for b in at.button if b.label == "Validate and register").click().run()
    return at


def test_register_from_server_path_then_explore(env, ui, tiny_dataset):
    at = _first_member(ui.open_page("datasets"))
    _fill(at, "tiny", root=tiny_dataset.root)
    _submit(at)
    ui.no_exceptions(at)
    assert any("Dataset tiny registered: 12 images" in s.value for s in at.success)
    # the job that counts every image is queued with the registration: the charts need no button
    from worker.services import jobs

    with ui.scope() as s:
        (job,) = jobs.list_jobs(s, kind="dataset_import")
    assert any(f"Job {job.id} counts every image of tiny" in s.value for s in at.success)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "12" and metrics["Test images"] == "3" and metrics["Classes"] == "4"
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    share = next(s for s in specs if s["layout"]["title"]["text"].startswith("Pixel share"))
    colors = share["data"][0]["marker"]["color"]
    labels = share["data"][0]["y"]
    rare = [lab for lab, col in zip(labels, colors) if col == "#d62728"]
    assert rare and all(lab.endswith("(rare)") for lab in rare)
    titles = {s["layout"]["title"]["text"] for s in specs}
    assert {"Instances per class (red: rare)", "Images containing each class", "Image sizes (W x H)",
            "Object area distribution (pixels, log2 bins)", "Class presence per image", "Classes per image"} <= titles
    # the page showed a preview; only the dataset_import job stores statistics
    from worker.services import datasets

    with ui.scope() as s:
        ds = datasets.get_dataset_by_name(s, name="tiny")
    assert ds.statistics is None
    assert any("preview" in c.value for c in at.caption)
    # the sample browser (its tab runs once opened): the image, its overlay and the class legend
    assert not at.image
    at = ui.open_tab(at, "datasets.explore_tabs", "Samples")
    ui.no_exceptions(at)
    captions = [c for img in at.image for c in img.captions]
    assert "mask overlay" in captions and any(c.startswith("img_0000") for c in captions)
    legend = [h.proto.body for h in at.get("html") if "unlabelled (ignored)" in h.proto.body]
    assert legend and all(name in legend[0] for name in ds.classes[1:])


def test_invalid_path_lists_the_problem_and_registers_nothing(env, ui, tmp_path):
    at = _first_member(ui.open_page("datasets"))
    _fill(at, "broken", root=str(tmp_path / "nowhere"))
    _submit(at)
    ui.no_exceptions(at)
    assert any("was not registered" in e.value for e in at.error)
    from worker.services import datasets

    with ui.scope() as s:
        assert datasets.list_datasets(s) == []


def test_upload_archive_registers_the_dataset(env, ui, tiny_dataset):
    at = _first_member(ui.open_page("datasets"))
    next(r for r in at.radio if r.label == "Where is the dataset?").set_value("Upload an archive").run()
    _fill(at, "uploaded")
    at.file_uploader[0].set_value(("tiny.zip", _zip_of(Path(tiny_dataset.root)), "application/zip"))
    _submit(at)
    ui.no_exceptions(at)
    assert any("Dataset uploaded registered" in s.value for s in at.success)
    uploads = list((env["tmp"] / "datasets" / "uploads").iterdir())
    assert len(uploads) == 1 and (uploads[0] / "ds" / "annotations.json").is_file()


def test_unreadable_and_unsafe_uploads_are_refused(env, ui):
    at = _first_member(ui.open_page("datasets"))
    next(r for r in at.radio if r.label == "Where is the dataset?").set_value("Upload an archive").run()
    _fill(at, "junk")
    at.file_uploader[0].set_value(("junk.zip", b"this is not a zip file", "application/zip"))
    _submit(at)
    ui.no_exceptions(at)
    assert any("not a readable zip archive" in e.value for e in at.error)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../../escape.txt", "x")
    at.file_uploader[0].set_value(("evil.zip", buf.getvalue(), "application/zip"))
    _submit(at)
    assert any("leaving its folder" in e.value for e in at.error)
    assert not (env["tmp"] / "escape.txt").exists()
    assert not any((env["tmp"] / "datasets" / "uploads").glob("*")) if (env["tmp"] / "datasets" / "uploads").exists() else True


def test_augmentation_preview(seeded, ui):
    at = ui.open_tab(ui.open_page("datasets", actor=seeded["ada"]), "datasets.explore_tabs", "Augmentation preview")
    next(n for n in at.number_input if n.label == "Samples").set_value(3)
    next(b for b in at.button if b.label == "Show augmented samples").click().run(timeout=120)
    ui.no_exceptions(at)
    captions = [c for img in at.image for c in img.captions]
    assert {"sample 1", "sample 2", "sample 3"} <= set(captions)


def test_a_dataset_is_edited_on_its_page(seeded, ui):
    from worker.services import datasets

    at = ui.open_page("datasets", actor=seeded["ada"])
    next(t for t in at.text_input if t.label == "Name").set_value("tiny-v2")
    folder = next(t for t in at.text_input if t.label.startswith("Test images folder"))
    assert folder.value == "test"
    folder.set_value("missing-folder")
    next(b for b in at.button if b.label == "Save changes").click().run()
    ui.no_exceptions(at)
    assert any("Changing dataset tiny failed" in e.value for e in at.error)
    with ui.scope() as s:
        assert datasets.get_dataset(s, dataset_id=seeded["dataset"]).name == "tiny"  # nothing half-saved

    next(t for t in at.text_input if t.label.startswith("Test images folder")).set_value("test")
    next(b for b in at.button if b.label == "Save changes").click().run()
    ui.no_exceptions(at)
    with ui.scope() as s:
        assert datasets.get_dataset(s, dataset_id=seeded["dataset"]).name == "tiny-v2"


def test_the_presence_charts_come_from_the_stored_statistics(seeded, ui, tiny_dataset):
    from segcore.data.formats import open_dataset
    from segcore.data.statistics import compute_statistics
    from worker.services import datasets

    stats = compute_statistics(open_dataset(tiny_dataset, classes=ui.CLASSES, task="multiclass"))
    stats.presence = dict(list(stats.presence.items())[:5])  # what the job kept is what is drawn
    with ui.scope() as s:
        datasets.set_dataset_statistics(s, actor=None, dataset_id=seeded["dataset"], statistics=stats)
    at = ui.open_page("datasets", actor=seeded["ada"])
    ui.no_exceptions(at)
    specs = {json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec)
             for c in at.get("plotly_chart")}
    assert specs["Class presence per image"]["data"][0]["y"] == list(stats.presence)
    bars = specs["Classes per image"]["data"][0]
    assert dict(zip(bars["x"], bars["y"])) == {k: n for k, n in enumerate(stats.classes_per_image) if n}
