"""Interpreters: every explanation method behind one interface (see base.py).

The method modules are imported on demand (some pull in captum, zennit or
transformers): ``import_all()`` imports every module of this package, so that
each registered name in ``common.registry.INTERPRETERS`` resolves; no list of
modules is kept by hand.
"""

import importlib
import pkgutil

from common.interpreters.base import Explanation, FitData, ForeignTargetError, Interpreter, saliency_to_mask


def import_all():
    """Import every module of this package (registering all interpreter names); return the registry."""
    from common.registry import INTERPRETERS

    for info in pkgutil.iter_modules(__path__, prefix=f"{__name__}."):
        importlib.import_module(info.name)
    return INTERPRETERS


def import_for(name):
    """Make interpreter ``name`` resolvable: every module is imported unless it is registered already."""
    from common.registry import INTERPRETERS

    if name not in INTERPRETERS.names():
        import_all()


__all__ = [
    "Explanation",
    "FitData",
    "ForeignTargetError",
    "Interpreter",
    "import_all",
    "import_for",
    "saliency_to_mask",
]
