"""Asymmetric Loss and BirdSet's multi-label metrics, checked against direct formulas and scikit-learn."""

import importlib.util
import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

# Not importorskip: the processes of the distributed test import this module, and
# importing torchmetrics costs them seconds.
if importlib.util.find_spec("torchmetrics") is None:
    pytest.skip("needs torchmetrics", allow_module_level=True)

from common.metrics.multilabel import (  # noqa: E402
    MultilabelAccumulator,
    auroc,
    cmap,
    multilabel_scores,
    top1_accuracy,
)
from common.models.losses import AsymmetricLoss  # noqa: E402


def random_data(seed=0, n=60, c=6):
    """Random logits and multi-hot targets where class 2 has no positive and class 4 no negative."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, c, generator=g) * 3
    targets = (torch.rand(n, c, generator=g) < 0.3).long()
    targets[:, 2] = 0
    targets[:, 4] = 1
    return scores, targets


# --- Asymmetric Loss ---------------------------------------------------------


def test_asl_matches_direct_formula():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.2, 4.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    gamma_neg, gamma_pos, clip = 4.0, 1.0, 0.05
    expected = []
    for x, y in zip(logits.flatten().tolist(), targets.flatten().tolist(), strict=True):
        p = 1 / (1 + math.exp(-x))
        if y == 1:
            expected.append(-math.log(p) * (1 - p) ** gamma_pos)
        else:
            p_neg = min(1 - p + clip, 1.0)
            expected.append(-math.log(p_neg) * (1 - p_neg) ** gamma_neg)
    expected = torch.tensor(expected, dtype=torch.float64).reshape(2, 3)

    none = AsymmetricLoss(gamma_neg, gamma_pos, clip, reduction="none")(logits.double(), targets.double())
    torch.testing.assert_close(none, expected)
    mean = AsymmetricLoss(gamma_neg, gamma_pos, clip)(logits.double(), targets.double())
    torch.testing.assert_close(mean, expected.mean())
    total = AsymmetricLoss(gamma_neg, gamma_pos, clip, reduction="sum")(logits.double(), targets.double())
    torch.testing.assert_close(total, expected.sum())


def test_asl_without_focusing_or_clipping_is_bce():
    scores, targets = random_data()
    loss = AsymmetricLoss(gamma_neg=0, gamma_pos=0, clip=0)(scores, targets.float())
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(scores, targets.float()))


def test_asl_clipping_drops_easy_negatives():
    # p = sigmoid(-4) ~ 0.018 < clip: the shifted negative probability clamps to 1, log(1) = 0.
    logits = torch.tensor([[-4.0, -6.0, -1.0]])
    targets = torch.zeros(1, 3)
    loss = AsymmetricLoss(clip=0.05, reduction="none")(logits, targets)
    assert loss[0, 0].item() == 0.0
    assert loss[0, 1].item() == 0.0
    assert loss[0, 2].item() > 0.0


def test_asl_gradient_is_finite():
    logits = torch.tensor([[30.0, -30.0, 0.0, 5.0], [-50.0, 50.0, 1e-3, -5.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]])
    for gamma_pos in (0.0, 1.0):
        logits.grad = None
        loss = AsymmetricLoss(gamma_pos=gamma_pos)(logits, targets)
        loss.backward()
        assert torch.isfinite(loss)
        assert torch.isfinite(logits.grad).all()
        assert logits.grad.abs().sum() > 0


def test_asl_shape_and_option_errors():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        AsymmetricLoss()(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="reduction"):
        AsymmetricLoss(reduction="max")


# --- metrics -----------------------------------------------------------------


def test_cmap_matches_sklearn_and_ignores_classes_without_positives():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    scores, targets = random_data()
    per_class = [
        sklearn_metrics.average_precision_score(targets[:, k].numpy(), scores[:, k].numpy())
        for k in range(targets.shape[1])
        if targets[:, k].any()
    ]
    assert len(per_class) == targets.shape[1] - 1
    assert cmap(scores, targets) == pytest.approx(sum(per_class) / len(per_class), abs=1e-6)
    # Probabilities rank the same as logits.
    assert cmap(scores.sigmoid(), targets) == pytest.approx(cmap(scores, targets), abs=1e-6)


def test_cmap_of_a_perfect_ranking_is_one():
    _, targets = random_data()
    scores = targets.float() * 10 - 5 + torch.rand(targets.shape) * 0.1
    assert cmap(scores, targets) == pytest.approx(1.0)


def test_cmap_keeps_the_ranking_of_large_logits():
    # In float32 a sigmoid ties these at 1.0; the positive is still ranked first.
    scores = torch.tensor([[40.0], [30.0], [20.0]])
    targets = torch.tensor([[1], [0], [0]])
    assert cmap(scores, targets) == pytest.approx(1.0)


def test_a_single_scorable_class():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    scores, targets = random_data()
    targets[:, [0, 1, 3, 5]] = 0
    targets[:10, 4] = 0
    column = (targets[:, 4].numpy(), scores[:, 4].numpy())
    assert cmap(scores, targets) == pytest.approx(sklearn_metrics.average_precision_score(*column), abs=1e-6)
    assert auroc(scores, targets) == pytest.approx(sklearn_metrics.roc_auc_score(*column), abs=1e-6)


def test_cmap_and_auroc_are_nan_without_scorable_classes():
    scores = torch.randn(4, 3)
    assert math.isnan(cmap(scores, torch.zeros(4, 3)))
    assert math.isnan(auroc(scores, torch.ones(4, 3)))


def test_auroc_matches_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    scores, targets = random_data(seed=1)
    per_class = [
        sklearn_metrics.roc_auc_score(targets[:, k].numpy(), scores[:, k].numpy())
        for k in range(targets.shape[1])
        if 0 < targets[:, k].sum() < targets.shape[0]
    ]
    assert len(per_class) == targets.shape[1] - 2
    assert auroc(scores, targets) == pytest.approx(sum(per_class) / len(per_class), abs=1e-6)


def test_top1_accuracy_by_hand():
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.3],  # top class 0, labelled: hit
            [0.2, 0.8, 0.1],  # top class 1, labels {0, 2}: miss
            [0.1, 0.2, 0.7],  # top class 2, labels {0, 2}: hit
            [0.9, 0.0, 0.0],  # no-call: ignored
        ]
    )
    targets = torch.tensor([[1, 0, 0], [1, 0, 1], [1, 0, 1], [0, 0, 0]], dtype=torch.bool)
    assert top1_accuracy(scores, targets) == pytest.approx(2 / 3)
    assert math.isnan(top1_accuracy(scores, torch.zeros(4, 3)))


def test_multilabel_scores_keys():
    scores, targets = random_data()
    result = multilabel_scores(scores, targets)
    assert result == {
        "cmAP": pytest.approx(cmap(scores, targets)),
        "AUROC": pytest.approx(auroc(scores, targets)),
        "T1-Acc": pytest.approx(top1_accuracy(scores, targets)),
        "n_segments": 60,
        "n_classes_scored": 5,
    }


def test_accumulator_equals_one_shot():
    scores, targets = random_data(seed=2)
    acc = MultilabelAccumulator()
    for start, stop in ((0, 7), (7, 30), (30, 31), (31, 60)):
        acc.update(scores[start:stop], targets[start:stop].to(torch.uint8))
    assert acc.compute() == multilabel_scores(scores, targets)
    acc.reset()
    acc.update(scores[:10], targets[:10])
    assert acc.compute()["n_segments"] == 10


def test_shape_and_value_errors():
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(4, 2\)"):
        cmap(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"\(4,\).*\(4,\)"):
        auroc(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="0 or 1"):
        top1_accuracy(torch.zeros(2, 2), torch.tensor([[0.0, 0.5], [1.0, 0.0]]))
    acc = MultilabelAccumulator()
    acc.update(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="classes"):
        acc.update(torch.zeros(2, 4), torch.zeros(2, 4))


# --- distributed -------------------------------------------------------------

# Rows each process sees: unequal, and process 1 gets two batches.
SPLITS = {0: [(0, 13)], 1: [(13, 40), (40, 60)]}


def _gather_worker(rank, world_size, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        scores, targets = random_data(seed=3)
        acc = MultilabelAccumulator()
        for start, stop in SPLITS[rank]:
            acc.update(scores[start:stop], targets[start:stop])
        # collected() is the collective behind compute(); compute() itself would make every
        # process import torchmetrics, seconds each.
        # A process that saw no batch (rank 0 here) does not know C and still takes part.
        only_one = MultilabelAccumulator()
        if rank == 1:
            only_one.update(scores[:5], targets[:5])
        torch.save((acc.collected(), only_one.collected()), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accumulator_gathers_across_processes(tmp_path):
    mp.spawn(_gather_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    scores, targets = random_data(seed=3)
    for rank in range(2):
        (gathered_scores, gathered_targets), (few_scores, few_targets) = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(gathered_scores, scores)
        assert gathered_targets.dtype == torch.uint8
        assert torch.equal(gathered_targets, targets.to(torch.uint8))
        assert multilabel_scores(gathered_scores, gathered_targets) == multilabel_scores(scores, targets)
        assert torch.equal(few_scores, scores[:5])
        assert torch.equal(few_targets, targets[:5].to(torch.uint8))
