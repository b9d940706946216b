"""Interpreters: every explanation method behind one interface (see base.py)."""

from common.interpreters.base import Explanation, Interpreter, saliency_to_mask

__all__ = ["Explanation", "Interpreter", "saliency_to_mask"]
