"""Shared fixtures. Torch threads are pinned so the suite behaves the same on 2 cores and 64."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may fetch weights
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _pin_torch_threads():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory) -> Any:
    """A 32-image, 3-class (+ background) synthetic COCO dataset of 64px images with 4 test images."""
    from segcore.data.synthetic import make_synthetic_coco

    root = tmp_path_factory.mktemp("tiny_coco")
    return make_synthetic_coco(root, num_images=32, num_classes=3, size=64, num_test_images=4, seed=0)


def tiny_config_dict(source: Any, **overrides: Any) -> dict[str, Any]:
    """A config that trains in seconds on ``tiny_coco``; ``overrides`` replace whole sections."""
    cfg: dict[str, Any] = {
        "name": "tiny",
        "data": {
            "source": source.model_dump(mode="json"),
            "classes": ["background", "class_1", "class_2", "class_3"],
            "split": {"kind": "holdout", "val_fraction": 0.25, "seed": 0},
        },
        "model": {"arch": "Unet", "encoder": "resnet18", "encoder_weights": None},
        "loss": "0.6*ce + 0.4*jaccard",
        "augmentation": {"preset": "flips"},
        "optimizer": {"name": "adamw", "lr": 0.003},
        "scheduler": {"name": "cosine", "warmup_epochs": 0},
        "training": {"epochs": 2, "batch_size": 8, "seed": 0},
    }
    cfg.update(overrides)
    return cfg


@pytest.fixture
def tiny_config(tiny_coco):
    from segcore.config import parse_config

    def make(**overrides: Any):
        return parse_config(tiny_config_dict(tiny_coco, **overrides))

    return make


@pytest.fixture(scope="session")
def trained_run(tiny_coco, tmp_path_factory) -> Any:
    """One tiny trained run shared by the inference, worker, webapp and inspection tests."""
    from segcore.config import parse_config
    from segcore.training import fit

    cfg = parse_config(tiny_config_dict(tiny_coco, training={"epochs": 8, "batch_size": 8, "seed": 0}))
    workdir = tmp_path_factory.mktemp("trained_run")
    result = fit(cfg, workdir)
    return {"config": cfg, "workdir": Path(workdir), "result": result, "source": tiny_coco}


# ------------------------------------------------------------------ S3


@dataclass
class S3Server:
    """An S3-compatible server (moto) on 127.0.0.1; clients reach it with :attr:`options`."""

    endpoint: str
    options: dict[str, Any]

    def bucket(self) -> str:
        """A new empty bucket; returns its name."""
        import fsspec

        name = f"t-{uuid.uuid4().hex[:10]}"
        fsspec.filesystem("s3", **self.options).mkdir(name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server in a thread of this process: real HTTP, real s3fs clients, any process."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(endpoint=f"http://{host}:{port}",
                       options={"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing"})
    finally:
        server.stop()
