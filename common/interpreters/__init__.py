"""Interpreters: every explanation method behind one interface (see base.py).

The method modules are imported on demand (some pull in captum, zennit or
transformers): ``import_all()`` imports every one of them, so that each
registered name in ``common.registry.INTERPRETERS`` resolves.
"""

import importlib

from common.interpreters.base import Explanation, Interpreter, saliency_to_mask

# Every module that registers interpreters, and the names it registers.
MODULES = {
    "common.interpreters.piq": ["piq"],
    "common.interpreters.l2i": ["l2i"],
    "common.interpreters.lmac": ["lmac"],
    "common.interpreters.amt": ["amt"],
    "common.interpreters.prototypes": ["prototypes"],
    "common.interpreters.posthoc": [
        "saliency",
        "smoothgrad",
        "integrated_gradients",
        "deeplift",
        "gradient_shap",
        "deeplift_shap",
        "occlusion",
        "gradcam",
    ],
    "common.interpreters.lime_shap": ["lime", "kernel_shap"],
    "common.interpreters.lrp": ["lrp"],
    "common.interpreters.drsa": ["drsa"],
    "common.interpreters.baselines": ["input_magnitude", "random"],
}


def import_all():
    """Import every interpreter module (registering all names); return the registry."""
    from common.registry import INTERPRETERS

    for module in MODULES:
        importlib.import_module(module)
    return INTERPRETERS


def import_for(name):
    """Import the module that registers interpreter ``name`` (all of them if the name is unknown here)."""
    for module, names in MODULES.items():
        if name in names:
            importlib.import_module(module)
            return
    import_all()


__all__ = ["MODULES", "Explanation", "Interpreter", "import_all", "import_for", "saliency_to_mask"]
