"""audioLIME (Haunschmid, Manilow & Widmer 2020): LIME and Kernel SHAP whose components are separated sources.

A clip is separated into stems (``common.models.separation``: oracle, HPSS,
NMF, Open-Unmix) that sum to it with what the separator leaves (the
residual). A coalition z in {0, 1}^K is the waveform ``sum_k z_k stem_k +
residual``, which goes through the classifier's own front end, so every
perturbed input is audio the classifier could be given, as in the authors'
package (their ``compose_model_input`` sums the chosen sources). The
estimators are the toolkit's: ``estimator: lime`` fits LIME's kernel-weighted
ridge (``lime_shap.LimeInterpreter``: lime_image's sampling), ``kernel_shap``
Kernel SHAP with the efficiency constraint (exact Shapley values for the few
sources a separator gives). The residual is kept in every coalition, so the
weights explain the sources, not the separator's leftovers [audioLIME's
components are only the sources; their separators leave a residual too].

The explainer takes waveforms (``input_kind = "waveform"``, declared), so it stands beside the registry's
interpreters rather than in it:
``attribute_sources(wavs, target, clips)`` gives each clip's source weights,
names, stems and the listenable explanation (the sum of the ``top_k``
sources with the largest positive weights, plus the residual when
``listen_with_residual``). ``attribute(wavs, target)`` spreads the weights
on the classifier's (T, F) grid: each bin gets the sources' weights in
proportion to their power in it, for maps and metrics that want one.
"""

import torch

from common.errors import ConfigError
from common.interpreters.lime_shap import KernelShapInterpreter, LimeInterpreter, target_output
from common.interpreters.posthoc import as_targets, frozen_eval
from common.models.separation import make_separator

ESTIMATORS = ("lime", "kernel_shap")


class _WaveformCoalitions:
    """Scores coalitions of stems: ``x`` is a clip's (K, samples) stems and ``base`` its residual (samples,)."""

    def score_coalitions(self, x, base, ids, coalitions, target):
        scores = []
        for lo in range(0, coalitions.shape[0], self.batch_size):
            rows = coalitions[lo : lo + self.batch_size].to(x.dtype)  # (n, K)
            wavs = rows @ x + base
            logits = self.classifier.logits(self.classifier.features(wavs))
            scores.append(target_output(logits, target, self.output, self.classifier.multilabel))
        return torch.cat(scores).double().cpu().numpy()


class _SourceLime(_WaveformCoalitions, LimeInterpreter):
    pass


class _SourceKernelShap(_WaveformCoalitions, KernelShapInterpreter):
    pass


class AudioLimeExplainer(torch.nn.Module):
    """LIME or Kernel SHAP over a separator's sources (see the module doc).

    Its inputs are waveforms, not the classifier's X, so it is not one of the registry's interpreters (whose
    verb is ``attribute(X, target)`` on spectrograms, and whose components partition X's bins: sources
    overlap in every bin and add up in the waveform); it reuses their estimators.

    Arguments
    ---------
    classifier : AudioClassifier
    separator : str or Separator
        ``oracle``, ``hpss``, ``nmf``, ``openunmix`` (options in ``separator_options``) or an instance.
    estimator : str
        ``lime`` or ``kernel_shap``.
    n_samples, batch_size, output, seed :
        As for LIME / Kernel SHAP (``output``: ``probability``, ``logit`` or ``log_odds``).
    top_k : int
        Sources in the listenable explanation.
    kernel_width : float
        LIME's kernel width (lime_image's 0.25).
    """

    input_kind = "waveform"

    def __init__(
        self,
        classifier,
        separator="hpss",
        separator_options=None,
        estimator="lime",
        n_samples=256,
        batch_size=16,
        output="probability",
        top_k=1,
        kernel_width=0.25,
        listen_with_residual=False,
        seed=0,
    ):
        super().__init__()
        self.classifier = classifier
        if estimator not in ESTIMATORS:
            raise ConfigError(f"estimator {estimator!r} is unknown; use one of {list(ESTIMATORS)}")
        self.separator = make_separator(separator, separator_options)
        options = {"n_samples": n_samples, "batch_size": batch_size, "output": output, "top_k": 0, "seed": seed}
        if estimator == "lime":
            self.estimator = _SourceLime(classifier, kernel_width=kernel_width, **options)
        else:
            self.estimator = _SourceKernelShap(classifier, **options)
        self.estimator_name = estimator
        self.top_k = int(top_k)
        self.listen_with_residual = bool(listen_with_residual)
        self.seed = int(seed)

    def attribute_sources(self, wavs, target, clips=None):
        """Per clip of ``wavs`` (B, samples): {weights (K,), names, stems (K, samples), residual, explanation_wav,
        top (indices of the listened sources), diagnostics}."""
        target = as_targets(target, wavs)
        rate = self.classifier.front_end.sample_rate
        results = []
        with frozen_eval(self.classifier, gradients=False):
            for b in range(wavs.shape[0]):
                stems, names = self.separator(wavs[b].detach(), rate, None if clips is None else clips[b])
                residual = wavs[b].detach() - stems.sum(0)
                ids = torch.arange(len(names))
                weights, diagnostics = self.estimator.explain_components(
                    stems, residual, ids, int(target[b]), seed=self.seed + b
                )
                weights = torch.as_tensor(weights, dtype=wavs.dtype)
                order = torch.argsort(weights, descending=True, stable=True)[: self.top_k]
                top = order[weights[order] > 0]
                listened = stems[top].sum(0) + (residual if self.listen_with_residual else 0.0)
                results.append(
                    {
                        "weights": weights,
                        "names": names,
                        "stems": stems,
                        "residual": residual,
                        "top": top,
                        "explanation_wav": listened,
                        "diagnostics": diagnostics,
                    }
                )
        return results

    def attribute(self, wavs, target, clips=None):
        """(B, T, F): each bin of the classifier's input gets the sources' weights by their share of its power."""
        maps = []
        for result in self.attribute_sources(wavs, target, clips):
            power = 10 ** (self.classifier.front_end.to_db(self.classifier.features(result["stems"])) / 10)
            share = power / power.sum(0, keepdim=True).clamp(min=1e-30)  # (K, T, F)
            maps.append((result["weights"][:, None, None] * share).sum(0))
        return torch.stack(maps).detach()
