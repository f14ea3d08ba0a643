"""Storage page: disk use per experiment with the total, a delete behind its confirmation (refused while
something uses the run), the retention dry run; the run page's disk-use line and pin button."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _finished_run(seeded: dict[str, Any], ui: Any, tmp: Path) -> tuple[int, Path]:
    """A finished run of ada's with 5000 bytes in its folder, used by nothing."""
    from worker.db.models import Run
    from worker.services import experiments

    with ui.scope() as s:
        exp = experiments.create_experiment(s, actor=seeded["ada"], name="spare", dataset_id=seeded["dataset"],
                                            config=ui.config_dict(seeded["source"]))
    run_id = exp.run_ids[0]
    ui.finish(run_id, 0.5)
    folder = tmp / "artifacts" / "runs" / str(run_id)
    (folder / "checkpoints" / "best").mkdir(parents=True)
    (folder / "checkpoints" / "best" / "model.safetensors").write_bytes(b"w" * 5000)
    with ui.scope() as s:
        s.get(Run, run_id).artifact_dir = str(folder)
    return run_id, folder


def test_storage_page_shows_disk_use_and_deletes_after_a_confirmation(seeded, ui, env):
    run_id, folder = _finished_run(seeded, ui, env["tmp"])
    at = ui.open_page("storage", actor=seeded["ada"])
    ui.no_exceptions(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Total"] != "0 B" and int(metrics["Experiments"]) == 5
    usage = next(t.value for t in at.dataframe if "MiB" in t.value.columns and "open" in t.value.columns)
    assert {"unet-folds", "fpn", "spare"} <= set(usage["name"])
    spare = usage[usage["name"] == "spare"].iloc[0]
    assert abs(spare["MiB"] - 5000 / 2**20) < 1e-9 and spare["files"] == 1

    # a run that a submission uses: listed, and the delete is refused
    at.number_input(key="storage.id").set_value(seeded["linknet_run"]).run()
    ui.no_exceptions(at)
    assert any("In use by: submission" in w.value for w in at.warning)
    assert at.button(key="storage.delete.go").disabled

    at.number_input(key="storage.id").set_value(run_id).run()
    assert at.button(key="storage.delete.go").disabled  # not before the confirmation
    at.checkbox(key="storage.delete.sure").check().run()
    at.button(key="storage.delete.go").click().run()
    ui.no_exceptions(at)
    assert any("Deleted 1 object(s); freed 4.9 KiB" in s.value for s in at.success)
    assert not folder.exists()
    from worker.db.models import Run

    with ui.scope() as s:
        assert s.get(Run, run_id) is None


def test_retention_tab_lists_what_the_policy_frees(seeded, ui, env):
    run_id, folder = _finished_run(seeded, ui, env["tmp"])
    (folder / "checkpoints" / "last").mkdir()
    (folder / "checkpoints" / "last" / "model.safetensors").write_bytes(b"l" * 3000)
    from worker.db.models import Run

    with ui.scope() as s:
        s.get(Run, run_id).checkpoint_dir = str(folder / "checkpoints" / "best")
    at = ui.open_page("storage", actor=seeded["ada"])
    ui.no_exceptions(at)
    items = next(t.value for t in at.dataframe if "what" in t.value.columns)
    assert list(items["id"]) == [run_id] and list(items["what"]) == ["last checkpoint"]
    at.button(key="storage.gc_go").click().run()
    ui.no_exceptions(at)
    assert not (folder / "checkpoints" / "last").exists() and (folder / "checkpoints" / "best").is_dir()


def test_run_page_shows_its_size_and_pins_for_its_owner_only(seeded, ui, env):
    run_id, _ = _finished_run(seeded, ui, env["tmp"])
    at = ui.open_page("run_detail", actor=seeded["bob"], run=run_id)
    ui.no_exceptions(at)
    assert any("Disk use: 4.9 KiB in 1 file" in c.value for c in at.caption)
    next(b for b in at.button if b.label == "Pin this run").click().run()
    assert any("only its owner or an admin" in e.value for e in at.error)

    at = ui.open_page("run_detail", actor=seeded["ada"], run=run_id)
    next(b for b in at.button if b.label == "Pin this run").click().run()
    ui.no_exceptions(at)
    assert any("pinned: no retention policy touches it" in c.value for c in at.caption)
    assert any(b.label == "Unpin this run" for b in at.button)
