"""Context managers that change a model for the length of a block and undo it after (zennit's style).

``with eval_mode(classifier): ...`` runs the block in eval mode; ``with
capture_outputs(model, ["encoder.layer3"]) as outputs: model(X)`` leaves that
layer's output in ``outputs["encoder.layer3"]``.
"""

import contextlib

import torch


@contextlib.contextmanager
def eval_mode(module):
    """``module`` in eval mode (BatchNorm's running statistics, no dropout) inside; every submodule's mode after.

    Each submodule gets back its own flag, so a part kept in eval mode inside a training model (a
    frozen backbone) stays so. An object that is no ``nn.Module`` (a stand-in classifier) passes
    through unchanged.
    """
    if not isinstance(module, torch.nn.Module):
        yield module
        return
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def capture_outputs(module, layers=("",)):
    """``{name: output}`` of the submodules ``layers`` of ``module`` in the forward passes of the block.

    Names are ``module.get_submodule``'s ("" is ``module`` itself). A tuple output keeps its first
    element (a transformers block returns ``(hidden, ...)``); a layer called twice keeps its last
    output. The hooks are removed on exit, also on an error.
    """
    captured = {}

    def keep(name):
        def hook(_module, _args, output):
            captured[name] = output[0] if isinstance(output, tuple) else output

        return hook

    handles = []
    try:
        for name in layers:
            handles.append(module.get_submodule(name).register_forward_hook(keep(name)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()
