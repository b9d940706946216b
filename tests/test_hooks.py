"""The small helpers every layer shares: eval mode and restore, forward-hook capture, target normalisation."""

import numpy as np
import pytest
import torch
from torch import nn

from common.errors import DataError
from common.models.classifier import as_targets
from common.models.hooks import capture_outputs, eval_mode


class Pair(nn.Module):
    """A layer returning a tuple, as a transformers block does."""

    def forward(self, x):
        return x * 2, "extra"


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), Pair())


def test_eval_mode_runs_in_eval_and_gives_every_submodule_its_own_mode_back():
    net = model().train()
    net[1].eval()  # a frozen part inside a training model
    before = [m.training for m in net.modules()]
    x = torch.randn(16, 4)
    with eval_mode(net) as inside:
        assert inside is net and not any(m.training for m in net.modules())
        first, second = net(x)[0], net(x)[0]
        torch.testing.assert_close(first, second)  # no dropout, running statistics
    assert [m.training for m in net.modules()] == before  # net.train(True) would have unfrozen net[1]
    with pytest.raises(RuntimeError, match="boom"), eval_mode(net):
        raise RuntimeError("boom")
    assert [m.training for m in net.modules()] == before


def test_eval_mode_lets_a_stand_in_that_is_no_module_through():
    stand_in = object()
    with eval_mode(stand_in) as inside:
        assert inside is stand_in


def test_capture_outputs_keeps_the_named_layers_outputs_and_removes_its_hooks():
    net = model().eval()
    x = torch.randn(3, 4)
    with capture_outputs(net, ["0", "3"]) as outputs:
        net(x)
    torch.testing.assert_close(outputs["0"], net[0](x))
    torch.testing.assert_close(outputs["3"], net[:3](x) * 2)  # a tuple output: its first element
    assert all(not m._forward_hooks for m in net.modules())
    with capture_outputs(net[0]) as outputs:  # "" is the module itself
        net(x)
        net(x + 1)
    torch.testing.assert_close(outputs[""], net[0](x + 1))  # the last call's output
    with pytest.raises(RuntimeError, match="boom"), capture_outputs(net, ["1"]):
        raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in net.modules())
    with pytest.raises(AttributeError):
        with capture_outputs(net, ["0", "nope"]):
            pass
    assert all(not m._forward_hooks for m in net.modules())  # the hook set before the bad name is gone too


def test_as_targets_gives_one_long_class_per_clip():
    X = torch.zeros(3, 5, 2)
    for target in (2, [2, 2, 2], np.array([2, 2, 2]), torch.tensor([2.0, 2.0, 2.0]), torch.tensor([[2], [2], [2]])):
        out = as_targets(target, X)
        assert out.dtype == torch.long and out.tolist() == [2, 2, 2] and out.is_contiguous()
    assert as_targets(torch.tensor([0, 1, 2]), X).tolist() == [0, 1, 2]
    with pytest.raises(DataError, match="2 targets for a batch of 3 clips"):
        as_targets([0, 1], X)
