"""New experiment page: the catalog form, validation next to fields, YAML, clone with diff, grids."""

from __future__ import annotations


def _btn(at, prefix: str):
    return next(b for b in at.button if b.label.startswith(prefix))


def _num(at, label: str):
    return next(n for n in at.number_input if n.label.startswith(label))


def _experiments(ui):
    from worker.services import experiments

    with ui.scope() as s:
        return experiments.list_experiments(s)


def test_default_form_queues_one_run(seeded, ui, published):
    at = ui.open_page("new_experiment", actor=seeded["bob"])
    ui.no_exceptions(at)
    assert _btn(at, "Queue 1 run(s)")
    loss = next(t.value for t in at.dataframe if "term" in t.value.columns)
    assert list(loss["term"]) == ["ce", "jaccard"]
    _btn(at, "Queue").click().run()
    ui.no_exceptions(at)
    assert any("1 run(s) in 1 group(s) queued" in s.value for s in at.success)
    exp = _experiments(ui)[0]
    assert exp.owner_id == seeded["bob"] and exp.config["loss"]["terms"][1]["name"] == "jaccard"
    assert published[-1]["run_ids"] == exp.run_ids


def test_folds_times_seeds(seeded, ui, published):
    at = ui.open_page("new_experiment", actor=seeded["ada"])
    _num(at, "k folds").set_value(2)
    next(t for t in at.text_input if t.label == "Seeds").input("0, 1").run()
    _btn(at, "Queue 4 run(s)").click().run()
    ui.no_exceptions(at)
    exp = _experiments(ui)[0]
    assert len(exp.run_ids) == 4 and exp.expansion.n_folds == 2 and exp.expansion.seeds == [0, 1]


def test_invalid_values_are_shown_next_to_their_fields_and_nothing_is_queued(seeded, ui, published):
    at = ui.open_page("new_experiment", actor=seeded["ada"])
    before = len(_experiments(ui))
    _num(at, "Epochs").set_value(0)
    _num(at, "Image height").set_value(100)
    _num(at, "Image width").set_value(96)
    next(t for t in at.text_input if t.label == "Seeds").input("one, two")
    _btn(at, "Queue").click().run()
    ui.no_exceptions(at)
    errors = [e.value for e in at.error]
    assert any("greater than or equal to 1" in e for e in errors)  # training.epochs
    assert any("multiples of 32" in e for e in errors)  # data.image_size
    assert any("seeds must be whole numbers" in e for e in errors)
    assert any("Nothing was queued" in e for e in errors)
    assert len(_experiments(ui)) == before and not published


def test_yaml_tab_loads_into_the_form(seeded, ui):
    at = ui.open_page("new_experiment", actor=seeded["ada"])
    area = next(t for t in at.text_area if t.label == "Config (YAML)")
    import yaml

    cfg = yaml.safe_load(area.value)
    cfg["model"]["arch"] = "FPN"
    cfg["training"]["epochs"] = 7
    area.input(yaml.safe_dump(cfg))
    _btn(at, "Load the YAML into the form").click().run()
    ui.no_exceptions(at)
    assert next(s for s in at.selectbox if s.label == "Architecture").value == "FPN"
    assert _num(at, "Epochs").value == 7
    next(t for t in at.text_area if t.label == "Config (YAML)").input("model: [unclosed")
    _btn(at, "Load the YAML into the form").click().run()
    ui.no_exceptions(at)
    assert any("The YAML cannot be read" in e.value for e in at.error)


def test_clone_shows_the_diff_and_records_the_parent(seeded, ui, published):
    at = ui.open_page("run_detail", actor=seeded["ada"], run=seeded["fpn_run"])
    _btn(at, "Clone into a new experiment").click().run()
    ui.no_exceptions(at)
    assert at.title[0].value == "New experiment"
    assert next(s for s in at.selectbox if s.label == "Architecture").value == "FPN"
    at.switch_page("app_pages/new_experiment.py")  # AppTest stays on the page it was told to run
    next(s for s in at.selectbox if s.label == "Architecture").set_value("Unet").run()
    diff = next(t.value for t in at.dataframe if "field" in t.value.columns)
    assert {"model.arch", "name"} <= set(diff["field"])
    _btn(at, "Queue").click().run()
    ui.no_exceptions(at)
    from worker.services import runs

    exp = _experiments(ui)[0]
    with ui.scope() as s:
        run = runs.get_run(s, run_id=exp.run_ids[0])
    assert run.parent_run_id == seeded["fpn_run"] and run.arch == "Unet"
    # the form keeps its values, but the next experiment from it is not a clone any more
    assert not any(t.value.columns.tolist() == ["field", "from", "to"] for t in at.dataframe)
    next(t for t in at.text_input if t.label == "Name").input("tiny-again").run()  # names are unique
    _btn(at, "Queue").click().run()
    ui.no_exceptions(at)
    with ui.scope() as s:
        again = runs.get_run(s, run_id=_experiments(ui)[0].run_ids[0])
    assert again.parent_run_id is None


def test_ablation_grid_expands_one_axis_into_groups(seeded, ui, published):
    at = ui.open_page("new_experiment", actor=seeded["ada"])
    next(t for t in at.toggle if t.label.startswith("Ablation grid")).set_value(True).run()
    next(s for s in at.selectbox if s.label == "Axis").set_value("each loss").run()
    next(m for m in at.multiselect if m.label == "Values").set_value(["ce", "dice", "focal"]).run()
    _btn(at, "Queue 3 run(s)").click().run()
    ui.no_exceptions(at)
    from worker.services import experiments

    with ui.scope() as s:
        exp = experiments.get_experiment(s, experiment_id=_experiments(ui)[0].id)
    assert exp.expansion.kind.value == "grid" and [g.label for g in exp.groups] == ["loss=ce", "loss=dice", "loss=focal"]


def test_grid_value_invalid_for_the_task_is_named(seeded, ui, published):
    at = ui.open_page("new_experiment", actor=seeded["ada"])
    next(t for t in at.toggle if t.label.startswith("Ablation grid")).set_value(True).run()
    next(s for s in at.selectbox if s.label == "Axis").set_value("each loss").run()
    next(m for m in at.multiselect if m.label == "Values").set_value(["ce", "bce"]).run()
    _btn(at, "Queue").click().run()
    ui.no_exceptions(at)
    assert any("bce" in e.value and "multilabel" in e.value for e in at.error)
    assert not published


def test_without_a_dataset(env, ui):
    at = ui.open_page("new_experiment")
    ui.no_exceptions(at)
    assert any("Register a dataset first" in i.value for i in at.info)


def _crop_mode(at):
    return next(s for s in at.selectbox if s.label == "Training crop")


def test_auto_crop_shows_the_size_it_resolves_to_and_is_queued_as_auto(seeded, ui, published):
    at = ui.open_page("new_experiment", actor=seeded["ada"])
    assert _crop_mode(at).value == "none" and _num(at, "Rare-class crop").value == 0.0
    assert not any("Training crop on" in c.value for c in at.caption)
    _crop_mode(at).set_value("auto").run()
    ui.no_exceptions(at)
    assert _num(at, "Crop height").disabled
    # the tiny dataset's images are 64x64: 0.75 x 64, raised to the floor of 256, is capped at the short side
    assert any("Training crop on tiny: auto: 64x64 (median short side 64 px over 12 images, multiple of 32)"
               in c.value for c in at.caption)
    _num(at, "Rare-class crop").set_value(0.3)
    _btn(at, "Queue").click().run()
    ui.no_exceptions(at)
    data = _experiments(ui)[0].config["data"]
    assert data["crop_size"] == "auto" and data["rare_class_crop"]["p"] == 0.3


def test_fixed_crop_and_a_clone_keeps_the_crop(seeded, ui, published):
    at = ui.open_page("new_experiment", actor=seeded["ada"])
    _crop_mode(at).set_value("fixed").run()
    _num(at, "Crop height").set_value(64)
    _num(at, "Crop width").set_value(32)
    _btn(at, "Queue").click().run()
    ui.no_exceptions(at)
    exp = _experiments(ui)[0]
    assert exp.config["data"]["crop_size"] == [64, 32]
    at = ui.open_page("new_experiment", actor=seeded["ada"])
    next(n for n in at.number_input if n.label == "Run id").set_value(exp.run_ids[0])
    _btn(at, "Load its config").click().run()
    ui.no_exceptions(at)
    assert _crop_mode(at).value == "fixed"
    assert (_num(at, "Crop height").value, _num(at, "Crop width").value) == (64, 32)


def test_rare_class_crops_without_a_crop_are_refused_at_the_data_fields(seeded, ui, published):
    at = ui.open_page("new_experiment", actor=seeded["ada"])
    _num(at, "Rare-class crop").set_value(0.5)
    _btn(at, "Queue").click().run()
    ui.no_exceptions(at)
    assert any("rare_class_crop.p > 0 places training crops" in e.value for e in at.error)
    assert any("Nothing was queued" in e.value for e in at.error) and not published


def test_the_yaml_tab_refuses_what_the_config_refuses_and_keeps_the_text(seeded, ui):
    import yaml

    at = ui.open_page("new_experiment", actor=seeded["ada"])
    area = next(t for t in at.text_area if t.label == "Config (YAML)")
    cfg = yaml.safe_load(area.value)
    cfg["trainning"] = {"epochs": 3}  # misspelt
    cfg["model"]["arch"] = "NotAnArch"
    cfg["training"]["epochs"] = -3
    cfg["training"]["batch_size"] = "lots"
    text = yaml.safe_dump(cfg)
    area.input(text)
    _btn(at, "Load the YAML into the form").click().run()
    ui.no_exceptions(at)  # no traceback for batch_size: lots
    message = next(e.value for e in at.error if "was not loaded" in e.value)
    for field in ("trainning", "model.arch", "training.epochs", "training.batch_size"):
        assert field in message, message
    assert next(t for t in at.text_area if t.label == "Config (YAML)").value == text  # the pasted YAML stays
    assert next(s for s in at.selectbox if s.label == "Architecture").value == "Unet"  # nothing was loaded


def test_changing_the_dataset_keeps_the_loaded_config(seeded, ui, tmp_path):
    from segcore.data.synthetic import make_synthetic_coco
    from worker.services import datasets

    other = make_synthetic_coco(tmp_path / "datasets" / "zz", num_images=6, num_classes=3, size=64)
    with ui.scope() as s:
        zz = datasets.register_dataset(s, actor=seeded["ada"], name="zz-other", source=other,
                                       classes=["background", "class_1", "class_2", "class_3"], check_pixels=False)
    at = ui.open_page("new_experiment", actor=seeded["ada"])
    next(s for s in at.selectbox if s.label == "Architecture").set_value("FPN").run()
    _num(at, "Epochs").set_value(7).run()
    next(s for s in at.selectbox if s.label == "Dataset").set_value(zz.id).run()
    ui.no_exceptions(at)
    assert next(s for s in at.selectbox if s.label == "Architecture").value == "FPN"
    assert _num(at, "Epochs").value == 7
    import yaml

    shown = yaml.safe_load(next(t for t in at.text_area if t.label == "Config (YAML)").value)
    assert shown["data"]["source"]["root"] == str(other.root)


def test_a_clone_of_a_fold_run_stays_k_fold(seeded, ui, published):
    at = ui.open_page("new_experiment", actor=seeded["ada"])
    _num(at, "Run id").set_value(seeded["fold_runs"][1]).run()
    _btn(at, "Load its config").click().run()
    ui.no_exceptions(at)
    assert _num(at, "k folds").value == 2
    diff = next((t.value for t in at.dataframe if "field" in t.value.columns), None)
    assert diff is None or not any(str(f).startswith("data.split.kind") for f in diff["field"])
    _btn(at, "Queue 2 run(s)").click().run()
    ui.no_exceptions(at)
    exp = _experiments(ui)[0]
    assert exp.expansion.n_folds == 2


def test_the_hold_out_share_is_a_form_field(seeded, ui, published):
    at = ui.open_page("new_experiment", actor=seeded["ada"])
    _num(at, "Validation share").set_value(0.3).run()
    _btn(at, "Queue").click().run()
    ui.no_exceptions(at)
    exp = _experiments(ui)[0]
    assert exp.config["data"]["split"]["kind"] == "holdout" and exp.config["data"]["split"]["val_fraction"] == 0.3


def test_a_recipe_loads_into_the_form_for_the_picked_dataset(seeded, ui, published):
    at = ui.open_page("new_experiment", actor=seeded["ada"])
    next(s for s in at.selectbox if s.label == "Start from a recipe").set_value("fast").run()
    ui.no_exceptions(at)
    assert next(t for t in at.text_input if t.label == "Name").value == "tiny-fast"
    # trained on crops sized from the data, validated at full resolution
    assert next(s for s in at.selectbox if s.label == "Training crop").value == "auto"
    assert _num(at, "Image height").value == 0 and _num(at, "Image width").value == 0
    assert next(s for s in at.selectbox if s.label == "Pipeline preset").value == "flips"
    _btn(at, "Queue").click().run()
    ui.no_exceptions(at)
    exp = _experiments(ui)[0]
    assert exp.config["data"]["classes"] == ui.CLASSES and exp.config["data"]["split"]["kind"] == "holdout"


def test_a_taken_name_is_refused_at_the_name_field_and_nothing_is_queued(seeded, ui, published):
    at = ui.open_page("new_experiment", actor=seeded["ada"])
    next(t for t in at.text_input if t.label == "Name").input("unet-baseline").run()
    _btn(at, "Queue").click().run()
    ui.no_exceptions(at)
    before, queued = len(_experiments(ui)), len(published)
    at = ui.open_page("new_experiment", actor=seeded["ada"])
    next(t for t in at.text_input if t.label == "Name").input("unet-baseline").run()
    _btn(at, "Queue").click().run()
    ui.no_exceptions(at)
    assert any("'unet-baseline' exists already; choose another name, e.g. 'unet-baseline-2'" in e.value
               for e in at.error)
    assert len(_experiments(ui)) == before and len(published) == queued
