"""Crashes at the worst moments of fit: no lost epoch, no torn metrics line, no window without `last`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segcore import io as segio
from segcore.checkpoint import load_checkpoint
from segcore.training import StopTraining, fit

pytestmark = pytest.mark.slow

_KILLER = """
import json, os, sys
from segcore.config import parse_config
from segcore.training import fit

class KillAfterLast:
    def on_checkpoint(self, path, best):
        if not best:
            os._exit(3)  # the process dies right after `last` of epoch 1 is on disk

cfg = parse_config(json.loads(open(sys.argv[1]).read()))
fit(cfg, sys.argv[2], callbacks=[KillAfterLast()], write_val_store=False)
"""


class _Epochs:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_epoch_end(self, report) -> None:
        self.seen.append(report.epoch)


def _epochs_in_log(workdir: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_a_kill_right_after_the_checkpoint_loses_no_epoch(tiny_config, tmp_path):
    cfg = tiny_config(training={"epochs": 2, "batch_size": 8})
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    script = tmp_path / "killer.py"
    script.write_text(_KILLER)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "cfg.json"), str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists() or _epochs_in_log(tmp_path / "run") == []

    seen = _Epochs()
    result = fit(cfg, tmp_path / "run", resume=True, callbacks=[seen], write_val_store=False)
    assert result.status == "completed" and [r.epoch for r in result.history] == [2]
    assert seen.seen == [1, 2]  # epoch 1 recorded again for the database, from the checkpoint
    assert _epochs_in_log(tmp_path / "run") == [1, 2]


def test_a_torn_metrics_line_is_repaired_on_resume(tiny_config, tmp_path):
    class StopAfterFirst:
        def on_epoch_end(self, report):
            raise StopTraining("interrupted")

    cfg = tiny_config(training={"epochs": 2, "batch_size": 8})
    fit(cfg, tmp_path / "run", callbacks=[StopAfterFirst()], write_val_store=False)
    log = tmp_path / "run" / "metrics.jsonl"
    with log.open("a") as fh:
        fh.write('{"epoch": 2, "epochs": 2, "train_lo')  # a crash in the middle of the next line
    assert [r["epoch"] for r in segio.read_jsonl(log)] == [1]  # readers skip the torn line
    fit(cfg, tmp_path / "run", resume=True, write_val_store=False)
    assert _epochs_in_log(tmp_path / "run") == [1, 2]


def test_checkpoint_files_and_folders_are_fsynced(trained_run, tmp_path, monkeypatch):
    from segcore.checkpoint import save_checkpoint

    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    ckpt = load_checkpoint(trained_run["result"].best_checkpoint)
    target = tmp_path / "ckpts" / "last"
    save_checkpoint(target, model=ckpt.model, config=ckpt.config, train_state={"epoch": 1})
    names = {Path(p).name for p in synced}
    assert {"model.safetensors", "config.json", "train_state.pt", "metrics.json", "provenance.json"} <= names
    assert str(tmp_path / "ckpts") in synced  # the rename itself is durable
    assert any(Path(p).name.startswith(".last.tmp-") for p in synced)  # the folder's entries


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_replacing_a_checkpoint_leaves_no_moment_without_one(trained_run, tmp_path, monkeypatch):
    from segcore.checkpoint import save_checkpoint

    ckpt = load_checkpoint(trained_run["result"].best_checkpoint)
    target = tmp_path / "ckpts" / "last"
    save_checkpoint(target, model=ckpt.model, config=ckpt.config, train_state={"epoch": 1})
    swaps: list[tuple[Path, Path]] = []
    real = segio._exchange
    monkeypatch.setattr(segio, "_exchange", lambda a, b: swaps.append((a, b)) or real(a, b))
    save_checkpoint(target, model=ckpt.model, config=ckpt.config, train_state={"epoch": 2})
    assert swaps and swaps[0][1] == target  # one atomic exchange, no rename-away step
    assert load_checkpoint(target, with_train_state=True).train_state["epoch"] == 2

    # where the kernel cannot exchange, a crash between the two renames leaves the old folder aside;
    # the next reader or writer puts it back
    pid = _dead_pid()
    os.replace(target, target.with_name(f".last.old-{pid}"))
    stale = target.with_name(f".last.tmp-{pid}-x1")
    stale.mkdir()
    assert segio.recover_dir(target)
    assert load_checkpoint(target, with_train_state=True).train_state["epoch"] == 2
    assert sorted(p.name for p in target.parent.iterdir()) == ["last"]


def test_stale_temp_folders_are_removed_by_the_next_save(trained_run, tmp_path):
    from segcore.checkpoint import save_checkpoint

    ckpt = load_checkpoint(trained_run["result"].best_checkpoint)
    target = tmp_path / "ckpts" / "last"
    target.parent.mkdir(parents=True)
    for k in range(3):
        (target.parent / f".last.tmp-{_dead_pid()}-k{k}").mkdir()
    save_checkpoint(target, model=ckpt.model, config=ckpt.config)
    assert sorted(p.name for p in target.parent.iterdir()) == ["last"]
