"""Ensembles of stored predictions, and weight search on validation / out-of-fold probabilities.

Members are probability stores (:mod:`segcore.inference.store`) over the same images with the
same classes. Everything streams image by image: memory holds one image of every member
(plus the output), whatever the number of images.

Methods (``method=``):

- ``soft``: weighted arithmetic mean of probabilities.
- ``geometric``: weighted geometric mean, normalised: multiclass ``softmax(sum_m w_m log p_m)``,
  multilabel ``sigmoid(sum_m w_m logit p_m)`` (probabilities clipped to [1e-4, 1 - 1e-4]).
- ``vote``: hard voting. Multiclass: each member votes its argmax class with its weight.
  The class with the most weight wins; a tie goes to the tied class with the highest weighted
  mean probability, then to the lowest class index. Multilabel: each member votes per class
  ``p >= threshold[c]``; a pixel is in the class when more than half the weight votes for it,
  and at exactly half when the weighted mean probability reaches the threshold. The
  "probabilities" of a vote ensemble (what :func:`iter_ensemble` yields and stores) are the
  weighted vote shares; decode labels with :func:`iter_ensemble_labels` to get the tie rule.

Labels (:func:`iter_ensemble_labels`, :func:`evaluate`) compare weighted means and vote shares
exactly: they are summed in float64 from the members' stored values (uint8 codes, not their
float32 dequantization), so an exact tie follows the rule above (soft: the lowest class index)
instead of whichever class float32 rounding favours.

Weight search (:func:`greedy_selection`, :func:`optimize_weights`) scores the soft mean with the
dataset-level mIoU (multiclass) or mean Dice (multilabel), from a confusion matrix counted in
NumPy with the definitions of :mod:`segcore.metrics` (a class absent from both prediction and
ground truth is left out of the mean). Searching re-scores the ensemble hundreds of times,
so :class:`SearchCache` first caches every member and the ground truth on a reduced grid
(longest side ``max_side``, uint8); scores are reported at that resolution, and
``rescore=True`` adds the full-resolution scores from one streamed pass.

Example:
    >>> out = ensemble_to_store(["runs/a/pred", "runs/b/pred"], "ens", weights=[2, 1])  # doctest: +SKIP
    >>> cache = SearchCache.build(stores, load_mask)  # doctest: +SKIP
    >>> greedy_selection(cache).weights  # doctest: +SKIP
    [0.6, 0.4, 0.0]
"""

# Member and Targets (type aliases of the signatures) stay importable from here, as before the split.
from segcore.ensemble._combine import (
    Member as Member,
    Method,
    check_members,
    ensemble_probs,
    ensemble_to_store,
    iter_ensemble,
    iter_ensemble_labels,
)
from segcore.ensemble._search import (
    SearchCache,
    Targets as Targets,
    WeightSearchResult,
    evaluate,
    greedy_selection,
    optimize_weights,
)

__all__ = [
    "Method",
    "SearchCache",
    "WeightSearchResult",
    "check_members",
    "ensemble_probs",
    "ensemble_to_store",
    "evaluate",
    "greedy_selection",
    "iter_ensemble",
    "iter_ensemble_labels",
    "optimize_weights",
]
