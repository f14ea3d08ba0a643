"""Stores made of stores: a group's union of validation stores and an ensemble's combination.

Both read like a :class:`~segcore.inference.store.StoreReader` (``ids``, ``classes``, ``task``, ``size``,
``read``), so ensemble search, analysis and scoring take them as they take a store, image by image,
without writing anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from segcore.errors import EnsembleError, StoreError
from segcore.inference.store import StoreReader

__all__ = ["StoreView", "UnionView", "EnsembleView"]


class StoreView(StoreReader):
    """A read-only view over other stores; it has no manifest of its own.

    Subclasses give ``size`` and ``read``; the descriptive attributes come from the first store, and
    the TTA policy is kept only when every store recorded the same one.
    """

    def __init__(self, name: str, readers: Sequence[StoreReader], ids: list[str], *, what: str, hint: str) -> None:
        if not readers:
            raise EnsembleError(f"{name}: {what} needs at least one store")
        first = readers[0]
        for r in readers[1:]:
            if list(r.classes) != list(first.classes) or r.task != first.task:
                raise EnsembleError(f"{name}: {r.path} stores other classes or another task than {first.path}; {hint}")
        super().__init__(Path(name), {"classes": list(first.classes), "task": first.task, "dtype": first.dtype,
                                      "max_side": first.max_side, "entries": [], "source": name,
                                      "tta": first.tta if len({str(r.tta) for r in readers}) == 1 else None})
        self.ids = ids
        self._known = set(ids)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r}, {len(self.ids)} images, {len(self.classes)} classes)"

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._known

    def _check(self, image_id: str) -> None:
        if image_id not in self._known:
            raise StoreError(f"image {image_id!r} is not among the {len(self.ids)} images of {self.source}")

    def stored_size(self, image_id: str) -> tuple[int, int]:
        return self.size(image_id)

    def read_stored(self, image_id: str) -> np.ndarray:
        return self.read(image_id)


class UnionView(StoreView):
    """A group's out-of-fold probabilities: the union of its runs' validation stores.

    An image in several stores (a fold trained with several seeds) reads as their mean; its size must
    agree across them.

    Raises:
        EnsembleError: no stores, other classes or task, or an image stored at different sizes.
    """

    def __init__(self, name: str, readers: Sequence[StoreReader]) -> None:
        owners: dict[str, list[StoreReader]] = {}
        for r in readers:
            for image_id in r.ids:
                owners.setdefault(image_id, []).append(r)
        for image_id, held in owners.items():
            if len({h.size(image_id) for h in held}) > 1:
                raise EnsembleError(f"{name}: image {image_id!r} has different sizes in "
                                    f"{[str(h.path) for h in held]}; predict the runs again on one dataset version")
        super().__init__(name, readers, sorted(owners), what="a group's union",
                         hint="only runs of the same dataset and task form a group")
        self._owners = owners

    def size(self, image_id: str) -> tuple[int, int]:
        self._check(image_id)
        return self._owners[image_id][0].size(image_id)

    def read(self, image_id: str, *, resolution: Literal["original", "stored"] = "original") -> np.ndarray:
        self._check(image_id)
        held = self._owners[image_id]
        if len(held) == 1:
            return held[0].read(image_id)
        out = held[0].read(image_id).astype(np.float32, copy=True)
        for r in held[1:]:
            out += r.read(image_id)
        out /= np.float32(len(held))
        return out


class EnsembleView(StoreView):
    """An ensemble's probabilities: its members' combined image by image (:func:`segcore.ensemble.ensemble_probs`).

    Covers the images every member has, in the first member's order; sizes must agree.

    Raises:
        EnsembleError: no members, other classes or task, or an image stored at different sizes.
    """

    def __init__(self, name: str, members: Sequence[StoreReader], *, method: str, weights: Sequence[float]) -> None:
        shared = set(members[0].ids) if members else set()
        for m in members[1:]:
            shared &= set(m.ids)
        ids = [i for i in members[0].ids if i in shared] if members else []
        for image_id in ids:
            if len({m.size(image_id) for m in members}) > 1:
                raise EnsembleError(f"{name}: image {image_id!r} has different sizes in its members; "
                                    "members must be predicted at the images' original sizes")
        super().__init__(name, members, ids, what="an ensemble",
                         hint="an ensemble must combine predictions of the same classes")
        self._members = list(members)
        self._method = method
        self._weights = [float(w) for w in weights]

    def size(self, image_id: str) -> tuple[int, int]:
        self._check(image_id)
        return self._members[0].size(image_id)

    def read(self, image_id: str, *, resolution: Literal["original", "stored"] = "original") -> np.ndarray:
        from segcore.ensemble import ensemble_probs

        self._check(image_id)
        probs = [m.read(image_id) for m in self._members]
        return ensemble_probs(probs, task=self.task, method=self._method,  # type: ignore[arg-type]  # name checked by the caller
                              weights=self._weights)
