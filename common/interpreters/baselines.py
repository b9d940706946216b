"""Control "explanations" that do not read the model: what a leaderboard compares methods against.

* ``input_magnitude``: the saliency is |X - silence|, the input's own level
  above what its front end makes of no energy (|X| for log1p). It
  ignores the classifier entirely, so the model-parameter randomisation
  sanity check (``common.analysis.leaderboard.sanity_check``) must flag it: its maps
  stay identical when the classifier's layers are re-initialised.
* ``random``: uniform noise, fresh on every call (seeded per call count), a
  floor for the faithfulness and localization scores.
"""

import torch

from common.features import silence_of
from common.interpreters.base import Interpreter
from common.registry import INTERPRETERS


@INTERPRETERS.register("input_magnitude")
class InputMagnitude(Interpreter):
    """Saliency = |X - silence| (model-independent: a deliberately broken method).

    Relative to silence, so a z-scored dB front end's quiet bins (negative X) do not look loud.
    """

    def attribute(self, X, target):
        return (X.detach() - silence_of(self.classifier, X)).abs()


@INTERPRETERS.register("random")
class RandomSaliency(Interpreter):
    """Saliency = uniform noise in [0, 1), a new draw on every call (reproducible from ``seed``)."""

    def __init__(self, classifier, seed=0):
        super().__init__(classifier)
        self.generator = torch.Generator().manual_seed(int(seed))

    def attribute(self, X, target):
        return torch.rand(X.shape, generator=self.generator).to(X)
