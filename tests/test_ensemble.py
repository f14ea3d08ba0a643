"""Ensembles from stored probabilities: combination rules, validation, streaming output, weight search."""

from __future__ import annotations

import numpy as np
import pytest

from segcore.ensemble import (
    SearchCache,
    check_members,
    ensemble_probs,
    ensemble_to_store,
    evaluate,
    greedy_selection,
    iter_ensemble,
    iter_ensemble_labels,
    optimize_weights,
)
from segcore.errors import EnsembleError, StoreError
from segcore.inference.store import ProbabilityStore

CLASSES = ["bg", "a", "b", "c"]


def _truth(n: int, size: int = 32, c: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        t = np.zeros((size, size), np.uint8)
        for k in range(1, c):
            y, x = rng.integers(0, size - 10, 2)
            t[y : y + 10, x : x + 10] = k
        t[:2, :2] = 255  # unlabelled corner
        out[f"img{i}"] = t
    return out


def _noisy_store(path, truth, noise: float, seed: int, c: int = 4, task: str = "multiclass"):
    rng = np.random.default_rng(seed)
    with ProbabilityStore.create(path, classes=CLASSES[:c], task=task, source=path.name) as w:
        for i, t in truth.items():
            onehot = np.eye(c, dtype=np.float32)[np.where(t == 255, 0, t)].transpose(2, 0, 1)
            z = onehot * 3 + rng.normal(scale=noise, size=onehot.shape).astype(np.float32)
            if task == "multiclass":
                e = np.exp(z - z.max(0))
                w.write(i, e / e.sum(0))
            else:
                w.write(i, 1 / (1 + np.exp(-(z - 1.5))))
    return ProbabilityStore.open(path)


@pytest.fixture()
def members(tmp_path):
    truth = _truth(6)
    stores = [_noisy_store(tmp_path / f"m{j}", truth, noise, seed=j) for j, noise in enumerate([1.5, 2.5, 3.5])]
    return truth, stores


def test_soft_and_geometric_means(members):
    _, stores = members
    for (image_id, soft), *_ in zip(iter_ensemble(stores, weights=[2, 1, 1]), range(2)):
        ps = [s.read(image_id) for s in stores]
        np.testing.assert_allclose(soft, 0.5 * ps[0] + 0.25 * ps[1] + 0.25 * ps[2], atol=1e-6)
    geo = ensemble_probs(ps, task="multiclass", method="geometric")
    ref = np.exp(np.mean([np.log(np.clip(p, 1e-4, 1 - 1e-4)) for p in ps], 0))
    np.testing.assert_allclose(geo, ref / ref.sum(0), atol=1e-5)
    geo_ml = ensemble_probs([np.full((1, 2, 2), 0.8), np.full((1, 2, 2), 0.2)], task="multilabel", method="geometric")
    np.testing.assert_allclose(geo_ml, 0.5, atol=1e-6)


def test_multiclass_vote_tie_rules():
    # pixel 0: member votes a, b (tie) -> soft mean decides (b has more mass);
    # pixel 1: votes a, b with equal soft means -> the lower class index (a=1) wins.
    p1 = np.array([[[0.0, 0.0]], [[0.6, 0.5]], [[0.4, 0.0]]], np.float32).repeat(1, 1)  # C=3, H=1, W=2
    p2 = np.array([[[0.0, 0.0]], [[0.1, 0.0]], [[0.9, 0.5]]], np.float32)
    p1[:, 0, 1] = [0.0, 0.6, 0.4]
    p2[:, 0, 1] = [0.0, 0.4, 0.6]
    votes = ensemble_probs([p1, p2], task="multiclass", method="vote")
    np.testing.assert_allclose(votes[:, 0, 0], [0, 0.5, 0.5])
    from segcore.ensemble._combine import _labels

    w = np.array([0.5, 0.5])
    thr = np.full(3, 0.5)
    labels = _labels([p1, p2], task="multiclass", method="vote", weights=w, thresholds=thr)
    assert labels[0, 0] == 2  # soft mean: a=0.35, b=0.65
    assert labels[0, 1] == 1  # soft mean: a=b=0.5 -> lowest index
    # a weighted majority beats the soft mean
    labels = _labels([p1, p2], task="multiclass", method="vote", weights=np.array([0.75, 0.25]), thresholds=thr)
    assert labels[0, 0] == 1


def _tied_stores(tmp_path, task: str, seed: int = 0):
    """Three uint8 stores whose codes come from a few values, so exact ties are everywhere."""
    rng = np.random.default_rng(seed)
    codes = rng.choice(np.array([51, 102, 153, 204]), size=(3, 3, 48, 48)).astype(np.int64)  # M x C x H x W
    stores = []
    for m in range(3):
        with ProbabilityStore.create(tmp_path / f"t{m}", classes=["a", "b", "c"], task=task) as w:
            w.write("x", codes[m] / 255.0)
        stores.append(ProbabilityStore.open(tmp_path / f"t{m}"))
    return codes, stores


@pytest.mark.parametrize("weights", [[1, 1, 1], [1, 2, 3], [2, 1, 1]])
def test_exact_integer_ties_follow_the_documented_rule(tmp_path, weights):
    """uint8 members whose weighted means tie exactly in integers: the rule decides, not float32 rounding."""
    codes, stores = _tied_stores(tmp_path, "multiclass")
    w = np.array(weights, np.int64)
    sums = np.einsum("m,mchw->chw", w, codes)  # weighted sums of codes: exact integers
    winners = codes.argmax(1)  # each member's vote (lowest index among its own equal codes)
    votes = np.stack([(w[:, None, None] * (winners == k)).sum(0) for k in range(3)])
    vote_tied = votes == votes.max(0)
    want_vote = np.where(vote_tied, sums, -1).argmax(0)  # most votes, then highest mean, then lowest index
    want_soft = sums.argmax(0)  # highest mean, then lowest index
    assert (vote_tied.sum(0) > 1).sum() > 100 and ((sums == sums.max(0)).sum(0) > 1).sum() > 100  # ties are common
    (_, vote), = iter_ensemble_labels(stores, method="vote", weights=weights)
    (_, soft), = iter_ensemble_labels(stores, method="soft", weights=weights)
    np.testing.assert_array_equal(vote, want_vote)
    np.testing.assert_array_equal(soft, want_soft)


@pytest.mark.parametrize("weights", [[1, 1, 0], [3, 1, 2], [2, 1, 1]])
def test_exact_multilabel_half_vote_ties(tmp_path, weights):
    """Exactly half the weight votes yes: the exact weighted mean against the threshold decides."""
    codes, stores = _tied_stores(tmp_path, "multilabel", seed=1)
    w = np.array(weights, np.int64)[:, None, None, None]
    yes = (w * (codes >= 128)).sum(0)  # weight voting yes at threshold 0.5 (no code lies in (127.5, 128))
    total = (w * codes).sum(0)  # weighted sum of codes: the mean is total / (255 * sum(w))
    half = 2 * yes == w.sum()
    assert half.sum() > 100 and (half & (2 * total == 255 * w.sum())).sum() > 10  # ties at the threshold too
    want = np.where(half, 2 * total >= 255 * w.sum(), 2 * yes > w.sum())
    (_, lab), = iter_ensemble_labels(stores, method="vote", weights=weights, thresholds=0.5)
    np.testing.assert_array_equal(lab, want.astype(np.uint8))


def test_multilabel_vote_and_thresholds(tmp_path):
    vals = [0.9, 0.6, 0.2, 0.55]
    stores = []
    for j, v in enumerate(vals):
        with ProbabilityStore.create(tmp_path / f"s{j}", classes=["p", "q"], task="multilabel") as w:
            w.write("x", np.stack([np.full((4, 4), v), np.full((4, 4), 1 - v)]).astype(np.float32))
        stores.append(ProbabilityStore.open(tmp_path / f"s{j}"))
    (_, lab), = iter_ensemble_labels(stores[:3], method="vote", thresholds=[0.5, 0.5])
    assert lab[0].all() and not lab[1].any()  # p: 2 of 3 votes; q: 1 of 3
    (_, lab), = iter_ensemble_labels(stores[:3], method="vote", thresholds=[0.7, 0.7])
    assert not lab[0].any()  # only one member reaches 0.7
    # 2 members, 1 vote each: a tie at half the weight -> the mean (0.55 / 0.45) against the threshold
    (_, lab), = iter_ensemble_labels([stores[0], stores[2]], method="vote", thresholds=[0.5, 0.5])
    assert lab[0].all() and not lab[1].any()
    (_, lab), = iter_ensemble_labels(stores[:2], method="soft", thresholds=[0.75, 0.3])
    assert lab[0].all() and not lab[1].any()  # mean p = 0.75 >= 0.75, mean q = 0.25 < 0.3
    (_, lab), = iter_ensemble_labels(stores[:2], method="soft", thresholds=[0.8, 0.2])
    assert not lab[0].any() and lab[1].all()


def test_errors_name_the_problem(members, tmp_path):
    truth, stores = members
    with pytest.raises(EnsembleError, match="one weight per member"):
        list(iter_ensemble(stores, weights=[1, 1]))
    with pytest.raises(EnsembleError, match="non-negative"):
        list(iter_ensemble(stores, weights=[1, -1, 1]))
    with pytest.raises(EnsembleError, match=r"\[0, 1\]"):
        list(iter_ensemble(stores, thresholds=1.5))
    with pytest.raises(EnsembleError, match="unknown ensemble method"):
        list(iter_ensemble(stores, method="max"))
    fewer = _noisy_store(tmp_path / "fewer", dict(list(truth.items())[:4]), 1.0, seed=9)
    with pytest.raises(EnsembleError, match="missing"):
        check_members([stores[0], fewer])
    three = _noisy_store(tmp_path / "three", {k: np.where(v == 3, 2, v) for k, v in truth.items()}, 1.0, seed=9, c=3)
    with pytest.raises(EnsembleError, match="same classes"):
        check_members([stores[0], three])
    bigger = _noisy_store(tmp_path / "big", {k: np.kron(v, np.ones((2, 2), np.uint8)) for k, v in truth.items()}, 1.0, 9)
    with pytest.raises(EnsembleError, match="original sizes"):
        check_members([stores[0], bigger])
    with pytest.raises(EnsembleError, match="at least one"):
        check_members([])
    (stores[1].path / "entries" / "img3.npz").write_bytes(b"broken")
    with pytest.raises(StoreError, match=r"'img3'.*m1"):
        list(iter_ensemble(stores))


def test_ensemble_to_store_streams_and_records(members, tmp_path):
    _, stores = members
    out = ensemble_to_store(stores, tmp_path / "ens", method="soft", weights=[1, 1, 2], meta={"note": "x"})
    assert out.ids == stores[0].ids and out.meta["note"] == "x"
    assert out.meta["ensemble"]["weights"] == [0.25, 0.25, 0.5]
    assert [m["source"] for m in out.meta["ensemble"]["members"]] == ["m0", "m1", "m2"]
    for image_id, probs in iter_ensemble(stores, weights=[1, 1, 2]):
        assert np.abs(out.read(image_id) - probs).max() <= 0.5 / 255 + 1e-6
    votes = ensemble_to_store(stores, tmp_path / "vote", method="vote")
    assert votes.read(stores[0].ids[0]).sum(0).max() == pytest.approx(1.0, abs=0.01)


def test_cache_matches_full_resolution_when_grid_is_full(members):
    truth, stores = members
    cache = SearchCache.build(stores, truth, max_side=32)
    for j, s in enumerate(stores):
        assert cache.member_scores()[j] == pytest.approx(evaluate([s], truth)["score"], abs=1e-9)
    assert cache.score([1, 1, 1]) == pytest.approx(evaluate(stores, truth)["score"], abs=2e-3)


def test_greedy_never_below_best_member_and_optimize_improves(members):
    truth, stores = members
    cache = SearchCache.build(stores, truth.__getitem__, max_side=16)
    greedy = greedy_selection(cache, max_rounds=8, rescore=True)
    assert greedy.score >= max(greedy.member_scores)
    assert sum(greedy.counts) >= 1 and abs(sum(greedy.weights) - 1) < 1e-9
    assert greedy.full_score is not None and len(greedy.full_member_scores) == 3
    assert greedy.history == sorted(greedy.history)
    opt = optimize_weights(cache, max_evaluations=60)
    assert opt.score >= cache.score([1, 1, 1]) - 1e-12 and opt.score >= max(opt.member_scores) - 1e-12
    assert all(w >= 0 for w in opt.weights) and abs(sum(opt.weights) - 1) < 1e-9
    assert greedy.to_dict()["metric"] == "miou"


def test_greedy_multilabel_dice(tmp_path):
    truth = _truth(4, c=3)
    ml_truth = {k: np.stack([(np.where(v == 255, 0, v) == c) for c in range(3)]).astype(np.uint8) for k, v in truth.items()}
    stores = [_noisy_store(tmp_path / f"ml{j}", truth, n, seed=j, c=3, task="multilabel") for j, n in enumerate([1.0, 3.0])]
    cache = SearchCache.build(stores, ml_truth, max_side=32, thresholds=0.5)
    res = greedy_selection(cache, max_rounds=4)
    assert res.metric == "dice" and res.score >= max(res.member_scores)
    assert cache.member_scores()[0] == pytest.approx(evaluate([stores[0]], ml_truth)["score"], abs=1e-9)
    with pytest.raises(EnsembleError, match="shape"):
        SearchCache.build(stores, truth, max_side=16)  # multiclass targets for a multilabel store


def test_iteration_reads_one_image_per_member_at_a_time(members):
    _, stores = members
    reads = []
    for s in stores:
        original = s.read

        def counted(image_id, _orig=original, **kw):
            reads.append(image_id)
            return _orig(image_id, **kw)

        s.read = counted
    it = iter_ensemble(stores, method="geometric")
    next(it)
    assert reads == ["img0"] * 3
    next(it)
    assert reads[3:] == ["img1"] * 3
