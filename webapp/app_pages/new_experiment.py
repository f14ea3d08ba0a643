"""New experiment: a form generated from segcore's catalog and config schema, a YAML tab editing the
same config, cloning from any run with the diff shown, k folds x m seeds, and ablation grids (one axis,
or the full grid of several).

Validation errors are shown next to the field they concern. Nothing is queued unless every run
config of the expansion is valid.
"""

from __future__ import annotations

import copy
from typing import Any

import pandas as pd
import streamlit as st
import yaml
from pydantic import ValidationError

from segcore import catalog
from segcore.config import ExperimentConfig, Precision, TaskType
from webapp import resources, state
from webapp.components import links
from webapp.components.crop_controls import crop_controls
from webapp.components.forms import (
    apply_split,
    config_changes,
    field_errors,
    loss_rows,
    loss_terms,
    parse_int_list,
    parse_tags,
    show_field_errors,
    transform_rows,
    transform_specs,
)
from webapp.components.grid_axes import GRID_AXES, grid_editor, grid_values
from webapp.components.layout import empty_state, page_header
from webapp.components.overlays import overlay_mask, render_legend
from webapp.errors import guard
from worker.errors import ConfigError, Conflict
from worker.services import recipes as recipe_svc, weights as weights_service

__all__ = ["render", "GRID_AXES", "grid_values", "base_config"]

PAGE = "new_experiment"
_SECTIONS = ("name", "data", "model", "loss", "augmentation", "optimizer", "scheduler", "training", "evaluation")


def _k(name: str) -> str:
    return state.widget_key(PAGE, name)


def base_config(ds: Any) -> dict[str, Any]:
    """A starting config for a registered dataset (catalog defaults elsewhere)."""
    return {
        "name": f"{ds.name}-unet",
        "data": {"source": copy.deepcopy(ds.source), "classes": list(ds.classes), "task": ds.task.value,
                 "ignore_index": ds.ignore_index},
        "model": {"arch": "Unet", "encoder": "resnet18", "encoder_weights": None},
        "loss": {"terms": [{"name": "ce" if ds.task is TaskType.MULTICLASS else "bce", "weight": 0.6},
                           {"name": "jaccard", "weight": 0.4}]},
    }


# ------------------------------------------------------------------------- the draft


def _draft() -> dict[str, Any]:
    return state.get(state.EXPERIMENT_DRAFT) or {}


def _load(cfg: dict[str, Any], *, dataset_id: int | None, clone_of: int | None = None) -> None:
    """Put a config into the form's widgets (before they are drawn) and keep the rest as the base."""
    version = _draft().get("version", 0) + 1
    full = ExperimentConfig.model_validate(cfg).to_dict() if _valid(cfg) else copy.deepcopy(cfg)
    state.put(state.EXPERIMENT_DRAFT, {
        "version": version, "base": full, "dataset_id": dataset_id, "clone_of": clone_of,
        "loss_rows": loss_rows(full.get("loss")).to_dict("records"),
        "transform_rows": transform_rows((full.get("augmentation") or {}).get("transforms") or []).to_dict("records"),
    })
    ss = st.session_state
    model = full.get("model") or {}
    aug = full.get("augmentation") or {}
    opt = full.get("optimizer") or {}
    sched = full.get("scheduler") or {}
    train = full.get("training") or {}
    data = full.get("data") or {}
    ev = full.get("evaluation") or {}
    if dataset_id is not None:
        ss[_k("dataset")] = dataset_id
    ss[_k("name")] = full.get("name", "experiment")
    ss[_k("arch")] = model.get("arch", "Unet")
    ss[_k("encoder")] = model.get("encoder", "resnet18")
    ss[_k("weights")] = model.get("encoder_weights") or "none"
    ss[_k("preset")] = aug.get("preset", "basic")
    ss[_k("optimizer")] = opt.get("name", "adamw")
    ss[_k("lr")] = float(opt.get("lr", 1e-3))
    ss[_k("wd")] = float(opt.get("weight_decay", 1e-4))
    ss[_k("scheduler")] = sched.get("name", "cosine")
    ss[_k("warmup")] = float(sched.get("warmup_epochs", 0.0))
    ss[_k("epochs")] = int(train.get("epochs", 20))
    ss[_k("batch")] = int(train.get("batch_size", 8))
    ss[_k("precision")] = train.get("precision", "auto")
    size = data.get("image_size") or [0, 0]
    ss[_k("height")], ss[_k("width")] = int(size[0]), int(size[1])
    crop = data.get("crop_size")
    ss[_k("crop_mode")] = "auto" if crop == "auto" else "fixed" if crop else "none"
    fixed = crop if isinstance(crop, (list, tuple)) and len(crop) == 2 else [256, 256]
    ss[_k("crop_h")], ss[_k("crop_w")] = int(fixed[0]), int(fixed[1])
    ss[_k("rare_p")] = float((data.get("rare_class_crop") or {}).get("p", 0.0))
    split = data.get("split") or {}
    ss[_k("folds")] = int(split.get("n_folds", 1)) if split.get("kind") == "kfold" else 1
    ss[_k("val_fraction")] = float(split.get("val_fraction", 0.2)) if split.get("kind") == "holdout" else 0.2
    ss[_k("monitor")] = ev.get("monitor", "miou")
    ss[_k("tags")] = ", ".join(full.get("tags") or [])
    ss[_k("note")] = full.get("note") or ""
    ss[_k("yaml")] = yaml.safe_dump(full, sort_keys=False)


def _valid(cfg: dict[str, Any]) -> bool:
    try:
        ExperimentConfig.model_validate(cfg)
    except ValidationError:
        return False
    return True


def _on_dataset_change() -> None:
    """Another dataset, the same experiment: only where the data comes from changes (the form keeps every
    other field); what the new dataset cannot run is refused at submit, next to its field."""
    ds_id = st.session_state.get(_k("dataset"))
    ds = next((d for d in resources.datasets() if d.id == ds_id), None)
    if ds is None:
        return
    draft = _draft()
    if not draft.get("base"):
        _load(base_config(ds), dataset_id=ds.id)
        return
    base = copy.deepcopy(draft["base"])
    data = base.setdefault("data", {})
    data.update({"source": copy.deepcopy(ds.source), "classes": list(ds.classes), "task": ds.task.value,
                 "ignore_index": ds.ignore_index})
    data.pop("fingerprint", None)
    state.put(state.EXPERIMENT_DRAFT, {**draft, "base": base, "dataset_id": ds.id})
    st.session_state.pop(_k("yaml"), None)  # the YAML tab shows the new data source


def _on_recipe() -> None:
    name = st.session_state.get(_k("recipe"))
    ds_id = st.session_state.get(_k("dataset"))
    if name and ds_id is not None:
        _load(resources.read(recipe_svc.recipe_config, name=name, dataset_id=int(ds_id)), dataset_id=int(ds_id))


def _on_clone() -> None:
    from worker.services import runs

    run_id = st.session_state.get(_k("clone_id"))
    if not run_id:
        return
    try:
        run = resources.read(runs.get_run, run_id=int(run_id))
    except Exception as exc:  # noqa: BLE001 - shown next to the clone field on this run
        st.session_state[_k("clone_error")] = str(exc)
        return
    st.session_state.pop(_k("clone_error"), None)
    cfg = copy.deepcopy(run.config)
    cfg["name"] = f"{cfg.get('name', run.name)}-clone"
    cfg.get("data", {}).pop("fingerprint", None)  # the split stays: a fold run's clone is k-fold again
    _load(cfg, dataset_id=run.dataset_id, clone_of=run.id)


def _on_yaml_load() -> None:
    text = st.session_state.get(_k("yaml"), "")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        st.session_state[_k("yaml_error")] = f"The YAML cannot be read: {exc}"
        return
    if not isinstance(data, dict):
        st.session_state[_k("yaml_error")] = "The YAML must be a mapping of config sections (name, data, model, ...)."
        return
    ds = next((d for d in resources.datasets() if d.id == _draft().get("dataset_id")), None)
    checked = copy.deepcopy(data)
    if ds is not None and isinstance(checked.get("data", {}), dict):  # the data's origin is the Dataset picker's
        checked["data"] = {**(checked.get("data") or {}), "source": copy.deepcopy(ds.source),
                           "classes": list(ds.classes), "task": ds.task.value, "ignore_index": ds.ignore_index}
    try:
        ExperimentConfig.model_validate(checked)
    except ValidationError as exc:  # nothing is loaded and the pasted text stays as it is
        lines = "\n".join(f"- {field}: {message}" for field, message in field_errors(exc).items())
        st.session_state[_k("yaml_error")] = f"The YAML was not loaded into the form; fix these fields:\n{lines}"
        return
    st.session_state.pop(_k("yaml_error"), None)
    _load(data, dataset_id=_draft().get("dataset_id"), clone_of=_draft().get("clone_of"))


# ------------------------------------------------------------------------- the form


def _form(ds: Any, slots: dict[str, Any]) -> dict[str, Any]:
    """Draw the fields; return the config dict they describe (over the draft's base)."""
    d = _draft()
    cfg = copy.deepcopy(d.get("base") or base_config(ds))
    task = ds.task.value
    cfg.setdefault("data", {})
    cfg["data"].update({"source": copy.deepcopy(ds.source), "classes": list(ds.classes), "task": task,
                        "ignore_index": ds.ignore_index})

    cfg["name"] = st.text_input("Name", key=_k("name"))
    slots["name"] = st.container()

    st.markdown("##### Model")
    c = st.columns(3)
    archs = list(catalog.ARCHITECTURES)
    cfg.setdefault("model", {})["arch"] = c[0].selectbox(
        "Architecture", archs, key=_k("arch"),
        help="\n".join(f"- **{a}**: {t}" for a, t in catalog.ARCHITECTURES.items()))
    encoders = catalog.encoder_names()
    if st.session_state.get(_k("encoder")) not in encoders:
        encoders = [st.session_state.get(_k("encoder")), *encoders]
    families = ", ".join(catalog.ENCODER_FAMILIES)
    cfg["model"]["encoder"] = c[1].selectbox("Encoder", encoders, key=_k("encoder"),
                                             help="Families used by the recipes: " + families)
    weights = c[2].selectbox("Encoder weights", ["none", "imagenet"], key=_k("weights"),
                             help="'imagenet': read from the weights cache, else downloaded on first use.")
    cached = weights_service.cached_encoders(settings=resources.app_settings())
    c[2].caption(f"Cached imagenet weights: {', '.join(cached)}" if cached else "No weights cached (docs/weights.md)")
    cfg["model"]["encoder_weights"] = None if weights == "none" else weights
    slots["model"] = st.container()

    st.markdown("##### Loss: a weighted sum of terms")
    names = [n for n, m in catalog.LOSSES.items() if task in m["tasks"]]
    rows = pd.DataFrame(d.get("loss_rows") or loss_rows(cfg.get("loss")).to_dict("records"),
                        columns=["term", "weight", "params"])
    edited = st.data_editor(
        rows, num_rows="dynamic", key=_k(f"loss_editor_{d.get('version', 0)}"), width="stretch", hide_index=True,
        column_config={
            "term": st.column_config.SelectboxColumn("term", options=names, required=True,
                                                     help="\n".join(f"{n}: {catalog.LOSSES[n]['description']}"
                                                                    for n in names)),
            "weight": st.column_config.NumberColumn("weight", min_value=0.0, step=0.05, format="%.3f"),
            "params": st.column_config.TextColumn("params (JSON)", help='e.g. {"gamma": 2} for focal'),
        },
    )
    try:
        cfg["loss"] = {"terms": loss_terms(edited)}
    except ConfigError as exc:
        cfg["loss"] = {"terms": []}
        slots.setdefault("_parse", {})["loss"] = str(exc).split(": ", 1)[-1]
    slots["loss"] = st.container()

    st.markdown("##### Augmentation")
    c = st.columns([2, 1])
    cfg.setdefault("augmentation", {})["preset"] = c[0].selectbox(
        "Pipeline preset", list(catalog.AUGMENTATION_PRESETS), key=_k("preset"),
        format_func=lambda p: f"{p}: {catalog.AUGMENTATION_PRESETS[p]}")
    trows = pd.DataFrame(d.get("transform_rows") or [], columns=["transform", "p", "params"])
    tedited = st.data_editor(
        trows, num_rows="dynamic", key=_k(f"transform_editor_{d.get('version', 0)}"), width="stretch",
        hide_index=True,
        column_config={
            "transform": st.column_config.SelectboxColumn("extra transform", options=list(catalog.TRANSFORMS),
                                                          help="Appended after the preset."),
            "p": st.column_config.NumberColumn("p", min_value=0.0, max_value=1.0, step=0.05),
            "params": st.column_config.TextColumn("params (JSON)"),
        },
    )
    try:
        cfg["augmentation"]["transforms"] = transform_specs(tedited)
    except ConfigError as exc:
        cfg["augmentation"]["transforms"] = []
        slots.setdefault("_parse", {})["augmentation"] = str(exc).split(": ", 1)[-1]
    slots["augmentation"] = st.container()
    if c[1].button("Preview augmentations", key=_k("preview")):
        _preview(ds, cfg)

    st.markdown("##### Optimisation")
    c = st.columns(5)
    cfg.setdefault("optimizer", {})["name"] = c[0].selectbox(
        "Optimizer", list(catalog.OPTIMIZERS), key=_k("optimizer"),
        format_func=lambda o: f"{o}: {catalog.OPTIMIZERS[o]}")
    cfg["optimizer"]["lr"] = c[1].number_input("Learning rate", min_value=0.0, format="%.2e", step=1e-4, key=_k("lr"))
    cfg["optimizer"]["weight_decay"] = c[2].number_input("Weight decay", min_value=0.0, format="%.2e", step=1e-5,
                                                         key=_k("wd"))
    cfg.setdefault("scheduler", {})["name"] = c[3].selectbox(
        "Scheduler", list(catalog.SCHEDULERS), key=_k("scheduler"),
        format_func=lambda s: f"{s}: {catalog.SCHEDULERS[s]}")
    cfg["scheduler"]["warmup_epochs"] = c[4].number_input("Warm-up epochs", min_value=0.0, step=1.0,
                                                          key=_k("warmup"))
    slots["optimizer"] = st.container()
    slots["scheduler"] = st.container()

    st.markdown("##### Training")
    c = st.columns(6)
    cfg.setdefault("training", {})["epochs"] = int(c[0].number_input("Epochs", min_value=0, step=1, key=_k("epochs")))
    cfg["training"]["batch_size"] = int(c[1].number_input("Batch size", min_value=0, step=1, key=_k("batch")))
    h = int(c[2].number_input("Image height (0 keeps)", min_value=0, step=32, key=_k("height")))
    w = int(c[3].number_input("Image width (0 keeps)", min_value=0, step=32, key=_k("width")))
    cfg["data"]["image_size"] = [h, w] if h or w else None
    cfg["training"]["precision"] = c[4].selectbox("Precision", [p.value for p in Precision], key=_k("precision"))
    cfg.setdefault("evaluation", {})["monitor"] = c[5].selectbox(
        "Monitor", [m for m in catalog.METRICS], key=_k("monitor"), help="The metric that picks the best checkpoint.")
    crop_controls(ds, cfg, key=_k)
    slots["data"] = st.container()
    slots["training"] = st.container()
    slots["evaluation"] = st.container()
    return cfg


def _preview(ds: Any, cfg: dict[str, Any]) -> None:
    from webapp.components.samples import augmentation_samples, open_registered

    with guard("Previewing the augmentations"), st.spinner("Augmenting..."):
        samples = augmentation_samples(ds, open_registered(ds), cfg["augmentation"], n=6,
                                       image_size=cfg["data"].get("image_size"))
        cols = st.columns(6)
        for i, (img, mask) in enumerate(samples):
            cols[i].image(overlay_mask(img, mask, num_classes=len(ds.classes), ignore_index=ds.ignore_index,
                                       background=ds.background), width="stretch")
        render_legend(ds.classes, background=ds.background)


def _expansion(slots: dict[str, Any]) -> dict[str, Any]:
    st.markdown("##### Runs")
    c = st.columns([1, 2, 1])
    n_folds = int(c[0].number_input("k folds (1: one validation split)", min_value=1, max_value=20,
                                    key=_k("folds")))
    base_split = ((_draft().get("base") or {}).get("data") or {}).get("split") or {}
    val_fraction = 0.2
    if n_folds == 1 and base_split.get("kind") == "predefined":
        c[0].caption("Validation: the config's predefined split lists (edit them in the YAML tab).")
    elif n_folds == 1:
        val_fraction = float(c[0].number_input("Validation share (hold-out)", min_value=0.01, max_value=0.99,
                                               step=0.05, key=_k("val_fraction")))
    seeds_text = c[1].text_input("Seeds", value="0", key=_k("seeds"),
                                 help="One run per seed (per fold), e.g. '0, 1, 2'.")
    priority = int(c[2].number_input("Priority (0-9)", min_value=0, max_value=9, value=0, key=_k("priority")))
    c = st.columns(2)
    tags = parse_tags(c[0].text_input("Tags", key=_k("tags"), placeholder="baseline, fpn"))
    note = c[1].text_input("Note", key=_k("note"))
    problems: dict[str, str] = {}
    try:
        seeds = parse_int_list(seeds_text, what="seeds")
        if not seeds:
            raise ValueError("give at least one seed, e.g. 0")
    except ValueError as exc:
        seeds, problems["seeds"] = [0], str(exc)
    grid, problem = grid_editor(_k)
    if problem:
        problems["grid"] = problem
    slots["expansion"] = st.container()
    return {"n_folds": n_folds, "seeds": seeds, "priority": priority, "tags": tags, "note": note, "grid": grid,
            "problems": problems, "val_fraction": val_fraction}


def _show_errors(slots: dict[str, Any], errors: dict[str, str]) -> None:
    shown: set[str] = set()
    for section in _SECTIONS:
        if section in slots:
            with slots[section]:
                show_field_errors(errors, section)
            shown |= {p for p in errors if p == section or p.startswith(section + ".")}
    rest = {p: m for p, m in errors.items() if p not in shown}
    if rest:
        with slots["general"]:
            for p, m in rest.items():
                st.error(m if p == "(config)" else f"{p}: {m}", icon=":material/error:")


def _submit(ds: Any, cfg: dict[str, Any], exp: dict[str, Any], slots: dict[str, Any]) -> None:
    from worker.services import confinement, experiments

    errors: dict[str, str] = dict(slots.get("_parse", {}))
    try:
        ExperimentConfig.model_validate(cfg)
    except ValidationError as exc:
        errors.update(field_errors(exc))
    if exp["problems"] or errors:
        _show_errors(slots, errors)
        if exp["problems"]:
            with slots["expansion"]:
                for msg in exp["problems"].values():
                    st.error(msg, icon=":material/error:")
        st.error("Nothing was queued: fix the fields marked above.")
        return
    clone_of = _draft().get("clone_of")
    with guard("Queueing the experiment") as outcome:
        try:
            created, problem = resources.submit(
                experiments.create_experiment, name=cfg.get("name"), config=cfg, n_folds=exp["n_folds"],
                seeds=exp["seeds"], grid=exp["grid"], priority=exp["priority"], tags=exp["tags"], note=exp["note"],
                dataset_id=ds.id, parent_run_id=clone_of, queued=lambda c: resources.Queued.of(run_ids=c.run_ids),
                roots=confinement.data_roots(resources.app_settings()),
            )
        except ConfigError as exc:  # a grid value or a fold made a run config invalid: show it at its field
            _show_errors(slots, field_errors(exc))
            raise
        except Conflict as exc:  # the name is taken: say so at the field, with a free one
            _show_errors(slots, {"name": str(exc)})
            return
    if outcome.failed:
        return
    draft = _draft()
    draft["clone_of"] = None  # the next experiment from this form is not a clone unless loaded again
    state.put(state.EXPERIMENT_DRAFT, draft)
    state.flash(f"Experiment {created.name}: {len(created.run_ids)} run(s) in {len(created.groups)} group(s) queued.")
    if problem:
        state.flash(problem, "warning")
    st.rerun()


def render() -> None:
    """Draw the page."""
    page_header("New experiment",
                "Define a training once; expand it into folds, seeds or an ablation grid of one or more axes.")
    datasets = resources.datasets()
    if not datasets:
        empty_state("Register a dataset first: an experiment trains on a registered dataset.", page=links.DATASETS,
                    label="Register a dataset")
        return
    by_id = {d.id: d for d in datasets}
    pending_clone = state.get(state.CLONE_SOURCE)
    if pending_clone:  # arriving from "Clone" on a run's page: load it once
        state.drop(state.CLONE_SOURCE)
        st.session_state[_k("clone_id")] = pending_clone
        _on_clone()
    if _k("dataset") not in st.session_state or st.session_state[_k("dataset")] not in by_id:
        first = datasets[0]
        st.session_state[_k("dataset")] = first.id
        _load(base_config(first), dataset_id=first.id)

    recipes = resources.read(recipe_svc.list_recipes)
    st.selectbox("Start from a recipe", [None, *(r.name for r in recipes)], key=_k("recipe"),
                 on_change=_on_recipe, format_func=lambda n: "keep the form as it is" if n is None else
                 f"{n}: {next(r.description for r in recipes if r.name == n)}",
                 help="Loads the recipe's whole config (model, loss, augmentation, crop, schedule) into the form "
                      "for the dataset picked below; docs/recipes.md compares them.")
    with st.expander("Clone from a run", expanded=bool(_draft().get("clone_of"))):
        c = st.columns([1, 1, 3])
        c[0].number_input("Run id", min_value=1, step=1, value=None, key=_k("clone_id"))
        c[1].button("Load its config", on_click=_on_clone, key=_k("clone_go"))
        if st.session_state.get(_k("clone_error")):
            st.error(st.session_state[_k("clone_error")])

    ds_id = st.selectbox("Dataset", list(by_id), key=_k("dataset"), on_change=_on_dataset_change,
                         format_func=lambda i: (
                             f"{by_id[i].name} ({len(by_id[i].classes)} classes, {by_id[i].task.value})"
                         ))
    ds = by_id[ds_id]
    slots: dict[str, Any] = {"general": st.container()}
    form_tab, yaml_tab = st.tabs(["Form", "YAML"], key=_k("tabs"), on_change="rerun")
    with form_tab:
        cfg = _form(ds, slots)
    with yaml_tab:
        st.caption("The same config as YAML. Edit it and load it into the form, or paste one from a file. "
                   "The data source and classes always come from the Dataset picked above.")
        if _k("yaml") not in st.session_state:
            st.session_state[_k("yaml")] = yaml.safe_dump(cfg, sort_keys=False)
        st.text_area("Config (YAML)", key=_k("yaml"), height=420)
        c = st.columns(2)
        c[0].button("Load the YAML into the form", on_click=_on_yaml_load, key=_k("yaml_load"))
        if c[1].button("Copy the form into the YAML", key=_k("yaml_refresh")):
            st.session_state.pop(_k("yaml"), None)
            st.rerun()
        if st.session_state.get(_k("yaml_error")):
            st.error(st.session_state[_k("yaml_error")])
    cfg["tags"] = []  # tags and note travel with the experiment below
    exp = _expansion(slots)
    apply_split(cfg, n_folds=exp["n_folds"], val_fraction=exp["val_fraction"])
    from worker.services.experiments import plan_expansion

    plan = plan_expansion(n_folds=exp["n_folds"], seeds=exp["seeds"], grid=exp["grid"])
    clone_of = _draft().get("clone_of")
    if clone_of:
        from worker.services import runs

        with guard(f"Reading run {clone_of}"):
            source = resources.read(runs.get_run, run_id=int(clone_of))
            st.markdown(f"##### Changes from run {clone_of} ({source.name})")
            diff = config_changes(source.config, cfg)
            if diff.empty:
                st.caption("No change yet.")
            else:
                st.dataframe(diff, hide_index=True, width="stretch", key=_k("clone_diff"))
    st.caption(f"This queues {plan.runs} run(s): {plan.groups} group(s) x {plan.n_folds} fold(s) "
               f"x {plan.n_seeds} seed(s).")
    if plan.problem:
        st.error(plan.problem, icon=":material/error:")
    if st.button(f"Queue {plan.runs} run(s)", type="primary", key=_k("submit"), disabled=plan.problem is not None):
        _submit(ds, cfg, exp, slots)
    st.page_link(links.QUEUE, label="Open the queue", icon=":material/queue:")


if __name__ == "__main__":
    render()

