"""The engine of one ``predict`` call: normalisation, precision, padding, TTA views, windows, batches."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segcore.errors import ConfigError
from segcore.inference.tta import TTAPolicy, View, augment, deaugment
from segcore.inference.window import SlidingWindow, blend_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Normalize = str | tuple[Sequence[float], Sequence[float]]


def resolve_normalization(normalize: Normalize) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``'imagenet'``, ``'unit'`` or ``(mean, std)`` (in [0, 1] units) -> (mean, std).

    Raises:
        ConfigError: an unknown name or mismatched lengths.
    """
    if isinstance(normalize, str):
        if normalize == "imagenet":
            return IMAGENET_MEAN, IMAGENET_STD
        if normalize == "unit":
            return (0.0,), (1.0,)
        raise ConfigError(f"normalize must be 'imagenet', 'unit' or (mean, std), got {normalize!r}")
    try:
        mean, std = normalize
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"normalize must be 'imagenet', 'unit' or (mean, std), got {normalize!r}") from exc
    if len(mean) != len(std) or not mean or any(s <= 0 for s in std):
        raise ConfigError(f"normalize needs mean and std of the same length with std > 0, got {normalize!r}")
    return mean, std


def _cpu_has_fast_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 convolutions are then faster than fp32 on the CPU."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in probes:  # private helpers of torch.cpu; absent in some builds
        fn = getattr(torch.cpu, name, None)
        try:
            if fn is not None and fn():
                return True
        except RuntimeError:
            continue
    return False


def _resolve_precision(precision: Any, device: torch.device) -> torch.dtype | None:
    p = getattr(precision, "value", precision)
    if p == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and _cpu_has_fast_bf16() else None
    table = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if p not in table:
        raise ConfigError(f"precision must be one of auto, fp32, bf16, fp16; got {precision!r}")
    if p == "fp16" and device.type == "cpu":
        raise ConfigError("fp16 autocast is for CUDA; use precision='bf16' or 'fp32' on the CPU")
    return table[p]


def _size_multiple(model: nn.Module, size_multiple: int | None) -> int:
    if size_multiple is not None:
        if size_multiple < 1:
            raise ConfigError(f"size_multiple must be >= 1, got {size_multiple}")
        return int(size_multiple)
    stride = getattr(getattr(model, "encoder", None), "output_stride", None)
    return int(stride) if isinstance(stride, int) and stride > 0 else 32


def _to_tensor(image: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """H x W x C (or H x W) image -> 1 x C x H x W normalised float32.

    Integer images are scaled to [0, 1] by their dtype's maximum (255 for uint8, 65535 for
    16-bit X-rays); float images are taken as already in [0, 1].
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ConfigError(f"an image must be H x W or H x W x C, got shape {arr.shape}")
    if arr.shape[2] == 1 and mean.numel() > 1:
        arr = np.repeat(arr, mean.numel(), axis=2)
    if np.issubdtype(arr.dtype, np.integer):
        scale = float(np.iinfo(arr.dtype).max)
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0) / scale
    else:
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
    if mean.numel() not in (1, t.shape[1]):
        raise ConfigError(f"normalize has {mean.numel()} channels, the image has {t.shape[1]}")
    return (t - mean) / std


class Engine:
    """Holds the resolved settings of one ``predict`` call."""

    def __init__(
        self,
        model: nn.Module,
        *,
        task: str,
        normalize: Normalize,
        tta: TTAPolicy | dict[str, Any] | None,
        window: SlidingWindow | dict[str, Any] | None,
        device: str | torch.device,
        batch_size: int,
        precision: Any,
        size_multiple: int | None,
        input_size: tuple[int, int] | None,
        channels_last: bool,
        fuse_batchnorm: bool = False,
    ) -> None:
        task = getattr(task, "value", task)
        if task not in ("multiclass", "multilabel"):
            raise ConfigError(f"task must be 'multiclass' or 'multilabel', got {task!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.model = fused(model) if fuse_batchnorm else model
        self.task = task
        self.device = torch.device(device)
        self.policy = TTAPolicy.model_validate(tta) if isinstance(tta, dict) else (tta or TTAPolicy())
        self.views = self.policy.views()
        self.window = SlidingWindow.model_validate(window) if isinstance(window, dict) else window
        self.batch_size = batch_size
        self.amp_dtype = _resolve_precision(precision, self.device)
        self.multiple = _size_multiple(model, size_multiple)
        self.input_size = tuple(input_size) if input_size is not None else None
        self.channels_last = channels_last
        mean, std = resolve_normalization(normalize)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    # ------------------------------------------------------------ model calls

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            out = self.model(x)
        if isinstance(out, dict):
            out = out.get("mask", next(iter(out.values())))
        elif isinstance(out, (tuple, list)):
            out = out[0]
        return out.float()

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if not ph and not pw:
            return x
        mode = "reflect" if ph < h and pw < w else "replicate"
        return F.pad(x, (0, pw, 0, ph), mode=mode)

    def _merge_term(self, logits: torch.Tensor) -> torch.Tensor:
        if self.policy.merge == "gmean":
            return torch.log_softmax(logits, 1) if self.task == "multiclass" else logits
        return torch.softmax(logits, 1) if self.task == "multiclass" else torch.sigmoid(logits)

    def _finish(self, acc: torch.Tensor, n: int) -> torch.Tensor:
        acc = acc / n
        if self.policy.merge == "gmean":
            return torch.softmax(acc, 1) if self.task == "multiclass" else torch.sigmoid(acc)
        return acc

    def forward_views(self, x: torch.Tensor) -> torch.Tensor:
        """N x C x H x W normalised input (on the device) -> N x K x H x W merged probabilities."""
        n, _, h, w = x.shape
        per_pass = max(1, self.batch_size // n)
        acc: torch.Tensor | None = None
        for scale in sorted({v.scale for v in self.views}):
            views = [v for v in self.views if v.scale == scale]
            if scale == 1.0:
                xs = x
            else:
                size = (max(1, round(h * scale)), max(1, round(w * scale)))
                xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
            hs, ws = xs.shape[-2:]
            xp = self._pad(xs)
            # rotations by 90/270 swap height and width: batch views of equal shape together
            groups: dict[bool, list[View]] = {}
            for v in views:
                groups.setdefault(v.k % 2 == 1 and xp.shape[-1] != xp.shape[-2], []).append(v)
            for group in groups.values():
                for start in range(0, len(group), per_pass):
                    chunk = group[start : start + per_pass]
                    batch = torch.cat([augment(xp, v) for v in chunk]) if len(chunk) > 1 else augment(xp, chunk[0])
                    logits = self._run(batch)
                    for i, v in enumerate(chunk):
                        y = deaugment(logits[i * n : (i + 1) * n], v)[..., :hs, :ws]
                        if scale != 1.0:
                            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
                        term = self._merge_term(y)
                        acc = term if acc is None else acc.add_(term)
        assert acc is not None
        return self._finish(acc, len(self.views))

    # ------------------------------------------------------------ per image

    def _prepare(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        t = _to_tensor(image, self.mean, self.std)
        size = (int(t.shape[-2]), int(t.shape[-1]))
        if self.input_size is not None and size != self.input_size:
            t = F.interpolate(t, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        return t, size

    def _restore(self, probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(probs.shape[-2:]) != size:
            probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
        return probs

    @torch.inference_mode()
    def predict_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        tensors, sizes = zip(*(self._prepare(im) for im in images))
        x = torch.cat(tensors).to(self.device, non_blocking=True)
        probs = self.forward_views(x)
        out = []
        for i, size in enumerate(sizes):
            p = self._restore(probs[i : i + 1], size)[0]
            out.append(p.cpu().numpy())
        return out

    @torch.inference_mode()
    def predict_windowed(self, image: np.ndarray) -> np.ndarray:
        assert self.window is not None
        x, size = self._prepare(image)
        _, _, h, w = x.shape
        win = self.window
        wh, ww = win.window_shape(h, w)
        weights = blend_weights((wh, ww), win.blend, win.sigma_scale)
        acc: np.ndarray | None = None
        positions = win.positions(h, w)
        per_pass = max(1, self.batch_size // len(self.views))
        weights_t = torch.from_numpy(weights)
        for start in range(0, len(positions), per_pass):
            chunk = positions[start : start + per_pass]
            batch = torch.cat([x[..., y : y + wh, xx : xx + ww] for y, xx in chunk]).to(self.device)
            probs = self.forward_views(batch).cpu()
            probs.mul_(weights_t)
            if acc is None:  # the class count is known after the first forward pass
                acc, wsum = accumulator(int(probs.shape[1]), h, w, win.memory_budget_mb)
            for i, (y, xx) in enumerate(chunk):
                acc[:, y : y + wh, xx : xx + ww] += probs[i].numpy()
                wsum[y : y + wh, xx : xx + ww] += weights
        assert acc is not None
        for c in range(acc.shape[0]):  # in place, one class plane at a time: no full-size temporaries
            acc[c] /= wsum
        if (h, w) != size:
            return self._restore(torch.from_numpy(np.asarray(acc))[None], size)[0].numpy()
        return acc


def accumulator(k: int, h: int, w: int, budget_mb: float) -> tuple[np.ndarray, np.ndarray]:
    """Zeroed K x H x W sum and H x W weight planes: in memory, or memory-mapped above the budget.

    The memory-mapped file is unlinked at once; the mapping lives as long as the arrays, and the
    OS writes its pages to disk under memory pressure instead of failing.
    """
    need_mb = (k + 1) * h * w * 4 / 2**20
    if need_mb <= budget_mb:
        return np.zeros((k, h, w), np.float32), np.zeros((h, w), np.float32)
    fd, name = tempfile.mkstemp(prefix="segcore-window-", suffix=".f32")
    try:
        os.ftruncate(fd, (k + 1) * h * w * 4)
        mm = np.memmap(name, dtype=np.float32, mode="r+", shape=(k + 1, h, w))
    finally:
        os.close(fd)
        os.unlink(name)
    return mm[:k], mm[k]


def fused(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with BatchNorm folded into the preceding convolutions (inference only).

    Falls back to ``model`` itself when it cannot be traced by torch.fx.
    """
    import copy

    from torch.fx.experimental.optimization import fuse

    was_training = model.training
    try:
        fused = fuse(copy.deepcopy(model).eval())
    except Exception:  # noqa: BLE001 - any failure to trace (untraceable control flow): run the model as it is
        return model
    finally:
        model.train(was_training)
    return fused


@contextlib.contextmanager
def eval_mode(model: nn.Module, device: torch.device, channels_last: bool) -> Iterator[None]:
    """``model`` in eval mode on ``device`` for the block; its training flag is restored after."""
    was_training = model.training
    model.eval()
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.train(was_training)
