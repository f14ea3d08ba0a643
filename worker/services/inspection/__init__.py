"""Error inspection of runs, fold/seed groups and ensembles, from their stored validation probabilities.

Nothing here runs a model: the analysis reads the probability stores the runs wrote and the
dataset's ground truth, in the calling process (``segcore.analysis``), and caches each report as
a JSON file under ``<artifact_root>/inspection/``. A cache file is named by a digest of what the
report depends on: every probability store read (its path, the SHA-256 of its manifest and the
manifest's modification time), how they are combined (an ensemble's method and weights), the
ground truth's location and the analysis parameters. A store rewritten in place gets a new
manifest (new entry checksums and creation time), so a stale report is never served.

What is inspected:

- a **run**: its validation store (``predictions/val`` of its run folder);
- a **group** (k folds x m seeds): its out-of-fold store when one was recorded, else the union of
  its finished fold runs' validation stores (an image predicted by several seeds gets the mean
  of their probabilities);
- an **ensemble**: its members' validation / out-of-fold probabilities combined image by image
  with the ensemble's method and weights, on the images every member has (an ensemble keeps no
  validation store of its own, only its scores).

Every function takes the session first and keyword-only arguments, reads only, and leaves the
transaction to the caller. The session is needed only to load the object
(:func:`load`, through :func:`worker.services.probabilities.resolve_probabilities`); the analysis
itself can run after the transaction closed: ``analyse(load(session, ...), ...)``,
:func:`compare_loaded`, :func:`overlay_loaded`, :func:`compare_overlay_loaded`.

The package's parts: ``_target`` (what is inspected, opened datasets and folds, cache keys),
``_reports`` (error reports and comparisons), ``_overlays`` (the viewer's images).

Example:
    >>> report = inspect_run(session, run_id=3, settings=settings)  # doctest: +SKIP
    >>> report.taxonomy.shares  # doctest: +SKIP
    {'under_prediction': 0.45, 'over_prediction': 0.33, 'wrong_class': 0.21}
    >>> view = overlay(session, source=("run", 3), image_id="img_007", settings=settings,
    ...                region=(0, 0, 512, 512), downscale=2)  # doctest: +SKIP
"""

from segcore.analysis import COMPARISON_LEGEND, ERROR_LEGEND
from worker.services.inspection._overlays import (
    OverlayView,
    compare_overlay,
    compare_overlay_loaded,
    overlay,
    overlay_loaded,
)
from worker.services.inspection._reports import (
    analyse,
    compare,
    compare_loaded,
    inspect,
    inspect_ensemble,
    inspect_group,
    inspect_run,
    precompute,
    worst_images,
)
from worker.services.inspection._target import (
    BACKGROUND_NAMES,
    Inspectable,
    InspectionTarget,
    Source,
    cache_folder,
    describe,
    load,
)

__all__ = [
    "ERROR_LEGEND",
    "COMPARISON_LEGEND",
    "Source",
    "BACKGROUND_NAMES",
    "InspectionTarget",
    "Inspectable",
    "OverlayView",
    "load",
    "describe",
    "inspect",
    "analyse",
    "precompute",
    "inspect_run",
    "inspect_ensemble",
    "inspect_group",
    "compare",
    "compare_loaded",
    "overlay",
    "overlay_loaded",
    "compare_overlay",
    "compare_overlay_loaded",
    "worst_images",
    "cache_folder",
]
