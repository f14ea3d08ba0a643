# %% [markdown]
# # SegBoard from a notebook
#
# A walkthrough of the Python client (docs/client.md) in notebook cells: open it in Jupyter or VS Code
# (the `# %%` markers are cells), or run it as a script. It submits a small encoder ablation, waits
# for it, compares the results in pandas, opens the best run's validation probabilities, builds an
# ensemble and records a public score.
#
# Before you start, an admin gives you a token on the server:
#
#     segboard token create --member ada --name laptop
#
# and you set `SEGBOARD_URL` (the web app's address, e.g. `http://segboard.lan:8501`) and
# `SEGBOARD_TOKEN`. The dataset name below must be a registered dataset (Datasets page).

# %%
import os

from worker import errors
from worker.client import Client

sb = Client(os.environ.get("SEGBOARD_URL", "http://127.0.0.1:8501"))
print("acting as", sb.me().name)
print("datasets:", [d.name for d in sb.datasets()])
DATASET = os.environ.get("SEGBOARD_DATASET", "camvid")
dataset = next(d for d in sb.datasets() if d.name == DATASET)

# %% [markdown]
# ## Submit an ablation
# One config, three encoders: a grid axis makes one group of runs per value. The config uses the
# dataset's own source and classes; the server runs the same submit-time check as the web form.

# %%
config = {
    "name": "encoder-ablation",
    "data": {"source": dataset.source, "classes": dataset.classes, "image_size": [256, 256],
             "split": {"kind": "holdout", "val_fraction": 0.2}},
    "model": {"arch": "Unet", "encoder": "resnet18"},
    "loss": "0.5*ce + 0.5*dice",
    "training": {"epochs": 20, "batch_size": 8},
}
try:
    exp = sb.submit(config, dataset=dataset.id, tags=["ablation"],
                    grid={"axis": "model.encoder", "values": ["resnet18", "resnet34", "efficientnet-b0"]})
except errors.InvalidFields as exc:  # what the form would show next to each field
    for field, message in exc.fields.items():
        print(f"{field}: {message}")
    raise
print(f"experiment {exp.id}: runs {exp.run_ids}")

# %% [markdown]
# ## Watch the runs
# `follow` yields a run whenever its status or epoch changes; `watch` just waits.

# %%
for run in sb.follow(exp, poll_s=15):
    best = f"{run.monitor_metric}={run.monitor_value:.4f}" if run.monitor_value is not None else ""
    print(f"run {run.id:>4} {run.status.value:<10} epoch {run.current_epoch or 0}/{run.total_epochs} {best}")
finals = sb.watch(exp)
failed = [r for r in finals if r.status.value != "succeeded"]
for r in failed:
    print(f"run {r.id} {r.status.value}: {r.error_message}")

# %% [markdown]
# ## Compare in pandas
# Epoch curves of every run, then the leaderboard of the dataset.

# %%
import pandas as pd  # noqa: E402 - a notebook imports where it needs

curves = pd.concat({r.id: sb.metrics(r.id)["val_miou"] for r in finals if r.status.value == "succeeded"}, axis=1)
curves.plot(title="validation mIoU per epoch")

board = sb.leaderboard(DATASET, metric="miou", kinds=["run", "group"])
board[["kind", "id", "name", "encoder", "miou", "dice", "public_score"]].head(10)

# %% [markdown]
# ## Open a run's stored probabilities
# The validation store is downloaded once into `~/.cache/segboard` and read with segcore's store reader.

# %%
best = max((r for r in finals if r.monitor_value is not None), key=lambda r: r.monitor_value)
store = sb.open_store(best.id, split="val")
first = store.ids[0]
probs = store.read(first)  # C x H x W probabilities
labels = store.read_labels(first)  # H x W class indices
print(f"run {best.id}: {len(store)} images, {store.num_classes} classes; {first}: {probs.shape}")

# %% [markdown]
# ## An ensemble of the two best runs
# Scored on the server from the stored validation probabilities, saved as a leaderboard row, and its
# test prediction queued.

# %%
top2 = sorted((r for r in finals if r.monitor_value is not None), key=lambda r: -r.monitor_value)[:2]
ens = sb.ensemble([r.id for r in top2], method="soft", name="ablation top-2")
print(f"ensemble {ens.id}: validation {ens.monitor_metric} {ens.val_score:.4f}, {ens.status.value}")

# %% [markdown]
# ## A submission and its public score
# Predict the test images of the best run, make a submission file, then enter the score the
# competition site gave it: the leaderboard's public column and the val/public correlation use it.

# %%
job = sb.wait_job(sb.predict([best.id]).id)
sub = sb.wait_submission(sb.submit_submission(run=best.id, format="csv_rle").id)
print(f"submission {sub.id}: {sub.status.value}, file {sub.file_path}")
sb.record_public_score(sub.id, 0.8123, note="public LB")  # the number from the competition site
sb.leaderboard(DATASET, kinds=["run"])[["id", "miou", "public_score", "gap"]].head()
