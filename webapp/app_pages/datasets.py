"""Datasets: register one from a server path or an uploaded archive, read its validation report,
explore it (EDA charts), browse samples with their masks, and preview augmentation pipelines.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
import yaml

from segcore import catalog
from segcore.config import TaskType
from webapp import resources, state
from webapp.components import charts
from webapp.components.layout import fmt_time, member_names, page_header
from webapp.components.overlays import classes_present, overlay_mask, render_legend
from webapp.components.samples import STATS_MAX_IMAGES, augmentation_samples, open_registered, statistics_of
from webapp.errors import guard
from worker.services import uploads
from worker.services.runtime import is_url

__all__ = ["render", "build_source"]

PAGE = "datasets"
FORMATS = {
    "coco": "COCO instances JSON + image folder (background is class 0)",
    "mask_folder": "Images + single-channel PNG masks with the same file names",
    "multilabel_json": "Images + per-image JSON polygons with overlapping classes",
}


def _k(name: str) -> str:
    return state.widget_key(PAGE, name)


def build_source(fmt: str, root: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The ``data.source`` dict of a format from the form's fields (empty fields take the defaults).

    Raises:
        ValueError: ``value_map`` is not a YAML mapping of pixel value to class index.
    """
    src: dict[str, Any] = {"format": fmt, "root": root}
    for key in ("annotations", "images", "masks", "mask_suffix", "test_images"):
        value = (fields.get(key) or "").strip() if isinstance(fields.get(key), str) else fields.get(key)
        if value:
            src[key] = value
    if fmt == "mask_folder":
        text = (fields.get("value_map") or "").strip()
        if text:
            try:
                mapping = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ValueError(f"value_map must be YAML like '{{0: 0, 255: 1}}': {exc}") from exc
            if not isinstance(mapping, dict):
                raise ValueError("value_map must be a mapping of pixel value to class index, like {0: 0, 255: 1}")
            src["value_map"] = {int(k): int(v) for k, v in mapping.items()}
        if fields.get("ignore_value") is not None:
            src["ignore_value"] = int(fields["ignore_value"])
    return src


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "dataset"


def _register_form() -> None:
    from worker.services import confinement, datasets as svc

    settings = resources.app_settings()
    roots = confinement.data_roots(settings)
    mode = st.radio("Where is the dataset?", ["Server path", "Upload an archive"], horizontal=True, key=_k("mode"))
    fmt = st.selectbox("Format", list(FORMATS), key=_k("format"), format_func=lambda f: f"{f}: {FORMATS[f]}")
    with st.form(_k("register")):
        name = st.text_input("Name", key=_k("name"), placeholder="e.g. trash-2026")
        if mode == "Server path":
            root = st.text_input("Folder on the server", key=_k("root"),
                                 help=f"Absolute, or relative to the dataset root {settings.dataset_root}. It must lie "
                                 f"inside one of the folders data may be read from: {svc.allowed_roots(roots)}.")
            upload = None
        else:
            upload = st.file_uploader("Archive (.zip, .tar.gz)", type=["zip", "tar", "gz", "tgz"], key=_k("upload"),
                                      help="Unpacked under the dataset root; paths must stay inside the archive.")
            root = ""
        c = st.columns(3)
        fields: dict[str, Any] = {}
        if fmt == "coco":
            fields["annotations"] = c[0].text_input("Annotations JSON", "annotations.json", key=_k("coco_ann"))
            fields["images"] = c[1].text_input("Image folder", "images", key=_k("coco_img"))
        elif fmt == "mask_folder":
            fields["images"] = c[0].text_input("Image folder", "images", key=_k("mf_img"))
            fields["masks"] = c[1].text_input("Mask folder", "masks", key=_k("mf_masks"))
            fields["mask_suffix"] = c[2].text_input("Mask suffix", ".png", key=_k("mf_suffix"))
            fields["value_map"] = st.text_input("Pixel value -> class (YAML, optional)", key=_k("mf_map"),
                                                placeholder="{0: 0, 255: 1} for ISBI-style masks")
            fields["ignore_value"] = st.number_input("Pixel value meaning 'unlabelled' (optional)", min_value=0,
                                                     max_value=65535, value=None, key=_k("mf_ignore"))
        else:
            fields["images"] = c[0].text_input("Image folder", "images", key=_k("ml_img"))
            fields["annotations"] = c[1].text_input("Annotation folder", "annotations", key=_k("ml_ann"))
        fields["test_images"] = st.text_input("Unlabelled test image folder (optional)", key=_k("test"),
                                              placeholder="e.g. test")
        classes_text = st.text_area("Classes in index order (optional for COCO and multilabel JSON)",
                                    key=_k("classes"), placeholder="background, sky, tree", height=68)
        c = st.columns(3)
        task = c[0].selectbox("Task", [t.value for t in TaskType], index=1 if fmt == "multilabel_json" else 0,
                              key=_k("task"))
        ignore_index = c[1].number_input("Ignore index", min_value=0, max_value=255, value=255, key=_k("ignore"))
        check_pixels = c[2].checkbox("Decode every image and mask", value=True, key=_k("check_pixels"),
                                     help="Slower, but finds truncated files before a training does.")
        submitted = st.form_submit_button("Validate and register", type="primary")
    if not submitted:
        return
    classes = [c.strip() for c in re.split(r"[,\n]", classes_text or "") if c.strip()] or None
    extracted: Path | None = None
    began: Any = None
    with guard("Registering the dataset") as outcome:
        if not (name or "").strip():
            raise ValueError("type a name for the dataset")
        if mode == "Upload an archive":
            if upload is None:
                raise ValueError("choose an archive to upload, or register from a server path")
            # its own transaction: the quota and the limit on uploads in progress are checked here
            began = resources.write(uploads.begin_upload, filename=upload.name, quota_gb=settings.upload_quota_gb,
                                    max_concurrent=settings.max_concurrent_uploads)
            stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
            arts, base = resources.artifacts(), str(settings.dataset_root).rstrip("/")
            sub = f"uploads/{_slug(name)}-{stamp}"
            dest = arts.mirror(f"{base}/{sub}") if is_url(base) else Path(base) / sub
            extracted = uploads.extract_upload(upload=began, data=upload.getvalue(), dest=dest)
            # a remote dataset root gets the unpacked files, so that workers on other machines find them
            folder = uploads.dataset_folder(extracted)
            root = arts.push(folder) if is_url(base) else str(folder)
        elif not (root or "").strip():
            raise ValueError("type the dataset's folder on the server")
        source = build_source(fmt, root.strip(), fields)
        with st.spinner("Validating every file..."):
            ds = resources.write(svc.register_dataset, name=name, source=source, classes=classes, task=task,
                                 ignore_index=int(ignore_index), dataset_root=settings.dataset_root,
                                 check_pixels=check_pixels, artifacts=resources.artifacts(), roots=roots)
        if began is not None and extracted is not None:
            resources.write(uploads.finish_upload, upload_id=began.id, dataset_id=ds.id,
                            unpacked=uploads.unpacked_bytes(extracted))
    if outcome.failed:
        if extracted is not None:  # nothing half-registered: the unpacked upload goes too
            shutil.rmtree(extracted, ignore_errors=True)
        if began is not None:
            with guard("Recording the failed upload"):
                resources.write(uploads.fail_upload, upload_id=began.id, reason=outcome.message or "not registered")
        return
    state.flash(f"Dataset {ds.name} registered: {ds.report.get('num_images', '?')} images, {len(ds.classes)} classes.")
    _queue_statistics(ds)
    st.rerun()


def _queue_statistics(ds: Any) -> None:
    """Queue the job that counts every image of ``ds`` (its charts show a preview until it finished)."""
    from worker.services import jobs

    with guard("Queueing the statistics job") as outcome:
        job, problem = resources.submit(jobs.create_job, kind="dataset_import", target={"dataset_id": ds.id},
                                        queued=lambda j: resources.Queued(job_ids=(j.id,)))
    if not outcome.failed:
        state.flash(f"Job {job.id} counts every image of {ds.name}; the charts update when it finishes.")
        if problem:
            state.flash(problem, "warning")


# ------------------------------------------------------------------ exploring a registered dataset


@st.cache_data(show_spinner=False, max_entries=16)
def _presence(dataset_id: int, fingerprint: str | None, _dataset: Any) -> tuple[list[str], list[list[bool]], list[int]]:
    from worker.services import datasets as svc

    return svc.presence_view(None, _dataset)  # read from the masks: statistics without stored presence


def _report(ds: Any) -> None:
    report = ds.report or {}
    c = st.columns(3)
    c[0].metric("Images", report.get("num_images", "?"))
    c[1].metric("Test images", report.get("num_test_images", 0))
    c[2].metric("Classes", len(ds.classes))
    st.caption(f"Format {ds.source.get('format', '?')} · root {ds.source.get('root')} · task {ds.task.value} · "
               f"ignore index {ds.ignore_index} · "
               f"fingerprint {str(ds.fingerprint)[:16]}… · registered {fmt_time(ds.created_at)}")
    problems = report.get("problems") or []
    if problems:
        st.warning(f"{len(problems)} warning(s) from validation (the dataset is usable):")
        st.dataframe(pd.DataFrame([{"severity": p.get("severity"), "code": p.get("code"), "file": p.get("file") or "",
                                    "message": p.get("message")} for p in problems]),
                     hide_index=True, width="stretch", key=_k("problems"))
    else:
        st.success("Validation found no problem.")


def _eda(ds: Any, stats: dict[str, Any], dataset: Any) -> None:
    if stats.get("sampled"):
        c = st.columns([3, 1])
        c[0].caption(f"Statistics from a sample of {stats.get('num_images')} images.")
        if c[1].button("Count every image on a worker", key=_k("stats_job")):
            _queue_statistics(ds)
            st.rerun()
    rare = stats.get("rare_classes") or []
    if rare:
        st.warning(f"Rare classes: {', '.join(rare)}. Consider a weighted loss, copy-paste of rare objects and a "
                   "stratified split.", icon=":material/warning:")
    c = st.columns(2)
    c[0].plotly_chart(charts.class_pixel_share(stats), key=_k("share"))
    c[1].plotly_chart(charts.class_instance_counts(stats), key=_k("instances"))
    c = st.columns(2)
    c[0].plotly_chart(charts.class_image_presence(stats), key=_k("presence"))
    c[1].plotly_chart(charts.image_sizes(stats.get("image_sizes") or {}), key=_k("sizes"))
    st.plotly_chart(charts.object_areas(stats), key=_k("areas"))
    with guard("Reading class presence per image"):
        from worker.services import datasets as svc

        if stats.get("presence") is not None and stats.get("classes_per_image") is not None:
            ids, presence, by_k = svc.presence_view(stats, dataset)  # counted by the statistics job: no mask read
        else:
            ids, presence, by_k = _presence(ds.id, ds.fingerprint, dataset)
        c = st.columns([3, 2])
        c[0].plotly_chart(charts.presence_heatmap(presence, ids, ds.classes), key=_k("heatmap"))
        c[1].plotly_chart(charts.classes_per_image(counts_by_k=by_k), key=_k("per_image"))


def _samples(ds: Any, dataset: Any) -> None:
    ids = list(dataset.ids)
    if not ids:
        st.info("The dataset has no labelled image.")
        return
    c = st.columns([3, 1, 2])
    image_id = c[0].selectbox("Image", ids, key=_k("sample"))
    alpha = c[1].slider("Opacity", 0.0, 1.0, 0.5, 0.05, key=_k("alpha"))
    visible = c[2].multiselect("Classes drawn", list(range(len(ds.classes))), default=list(range(len(ds.classes))),
                               format_func=lambda i: ds.classes[i], key=_k("visible"))
    with guard(f"Reading {image_id}"):
        image = dataset.load_image(image_id)
        mask = dataset.load_mask(image_id)
        over = overlay_mask(image, mask, num_classes=len(ds.classes), alpha=alpha, ignore_index=ds.ignore_index,
                            background=ds.background, visible=visible)
        c = st.columns(2)
        c[0].image(image, caption=f"{image_id} ({image.shape[1]}x{image.shape[0]})", width="stretch")
        c[1].image(over, caption="mask overlay", width="stretch")
        render_legend(ds.classes, present=classes_present(mask, len(ds.classes)), background=ds.background)


def _augmentation_preview(ds: Any, dataset: Any) -> None:
    st.caption("See what the training pipeline makes of a few images (the same code the workers run).")
    c = st.columns([2, 1, 1])
    preset = c[0].selectbox("Pipeline", list(catalog.AUGMENTATION_PRESETS), index=2, key=_k("aug_preset"),
                            format_func=lambda p: f"{p}: {catalog.AUGMENTATION_PRESETS[p]}")
    n = int(c[1].number_input("Samples", 1, 16, 6, key=_k("aug_n")))
    seed = int(c[2].number_input("Seed", 0, 10_000, 0, key=_k("aug_seed")))
    if not st.button("Show augmented samples", key=_k("aug_go")):
        return
    with guard("Previewing the augmentations"), st.spinner("Augmenting..."):
        samples = augmentation_samples(ds, dataset, {"preset": preset}, n=n, seed=seed)
        cols = st.columns(3)
        for i, (img, mask) in enumerate(samples):
            over = overlay_mask(img, mask, num_classes=len(ds.classes), alpha=0.5, ignore_index=ds.ignore_index,
                                background=ds.background)
            cols[i % 3].image(over, caption=f"sample {i + 1}", width="stretch")
        render_legend(ds.classes, background=ds.background)


def _edit(ds: Any) -> None:
    """Rename the dataset, add or drop its test folder, or correct its classes (while no experiment uses it)."""
    from worker.services import datasets as svc

    with st.expander("Edit", icon=":material/edit:"), st.form(_k(f"edit_{ds.id}"), border=False):
        name = st.text_input("Name", value=ds.name, key=_k(f"edit_name_{ds.id}"))
        test = st.text_input("Test images folder (relative to the dataset's root; empty for none)",
                             value=ds.source.get("test_images") or "", key=_k(f"edit_test_{ds.id}"),
                             help="Unlabelled images for test predictions, submissions and pseudo-labels.")
        classes = st.text_input("Classes in index order, comma-separated", value=", ".join(ds.classes),
                                key=_k(f"edit_classes_{ds.id}"),
                                help="Only while no experiment uses the dataset; the data is checked again.")
        options: list[int | None] = [None, *range(len(ds.classes))] if ds.task is TaskType.MULTICLASS else [None]
        background = st.selectbox(
            "Background class", options, index=options.index(ds.background) if ds.background in options else 0,
            format_func=lambda i: "none (every class is drawn)" if i is None else f"{i}: {ds.classes[i]}",
            key=_k(f"edit_background_{ds.id}"),
            help="Left uncoloured in overlays and out of legends and foreground counts; the background of the "
                 "error analysis (under- and over-prediction). COCO's class 0 is; a class like Stanford "
                 "Background's sky is not.")
        if not st.form_submit_button("Save changes"):
            return
    new_classes = [c.strip() for c in classes.split(",") if c.strip()]
    with guard(f"Changing dataset {ds.name}") as outcome:
        updated = resources.write(svc.update_dataset, dataset_id=ds.id, name=name, test_images=test.strip() or None,
                                  classes=new_classes if new_classes != list(ds.classes) else None,
                                  background=background, artifacts=resources.artifacts())
    if not outcome.failed:
        state.flash(f"Dataset {updated.name} saved.")
        st.rerun()


def _browse(datasets: list) -> None:
    names = member_names(resources.members())
    by_id = {d.id: d for d in datasets}
    ds_id = st.selectbox("Dataset", list(by_id), key=_k("browse"),
                         format_func=lambda i: f"{by_id[i].name} ({names.get(by_id[i].created_by, '?')})")
    ds = by_id[ds_id]
    _report(ds)
    _edit(ds)
    with guard(f"Opening dataset {ds.name}") as outcome:
        dataset = open_registered(ds)
    if outcome.failed:
        return
    # only the open tab runs (Streamlit's lazy tabs)
    tabs = st.tabs(["Statistics", "Samples", "Augmentation preview"], key=_k("explore_tabs"), on_change="rerun")
    if tabs[0].open:
        with tabs[0]:
            with guard("Computing the statistics") as o, st.spinner("Computing the statistics (once per dataset)..."):
                stats, preview = statistics_of(ds)
            if not o.failed:
                if preview:
                    st.caption(f"A preview on at most {STATS_MAX_IMAGES} images: the dataset job computes the full "
                               "statistics (Queue page); they replace this preview when it finished.")
                _eda(ds, stats, dataset)
    if tabs[1].open:
        with tabs[1]:
            _samples(ds, dataset)
    if tabs[2].open:
        with tabs[2]:
            _augmentation_preview(ds, dataset)


def render() -> None:
    """Draw the page."""
    page_header("Datasets", "Register a dataset once; every run records its fingerprint.")
    datasets = resources.datasets()
    browse, register = st.tabs(["Explore", "Register a dataset"], key=_k("tabs"), on_change="rerun")
    with register:
        _register_form()
    with browse:
        if not datasets:
            st.info("No dataset is registered yet. Register one in the next tab, from a folder on the server or an "
                    "uploaded archive (COCO, mask folder or multilabel JSON).", icon=":material/info:")
        else:
            _browse(datasets)


if __name__ == "__main__":
    render()
