"""The interpreter Brain for post-hoc methods: the shared evaluation, plus their own example figures.

Post-hoc interpreters (``common.interpreters.posthoc``, ``lime_shap``) have
nothing to train: the interpreter Brain explains and scores the test set with
the shared suite. For the first ``n_examples`` clips it already writes
original.wav, interpretation.wav (for LIME / Kernel SHAP the top-k positive
components, mask -> original phase -> ISTFT) and explanation.png; this Brain
adds saliency.png (the signed heatmap over the spectrogram) and, for
LIME / Kernel SHAP over time segments or mel bands, components.png (one bar
per segment or band; a grid or superpixels are read on the heatmap). It reads only
what the explanation returns (its saliency and extras), never the interpreter.
"""

from pathlib import Path

from common.reports.figures import save_component_bars, save_saliency_heatmap
from common.training.interpreter import InterpreterBrain


def component_axis(ids):
    """The axis a clip's components (T, F) ids split: "time segment" when each spans whole frames,
    "mel band" when each spans whole bins, "component" for a single one; None for a grid or superpixels."""
    whole_frames = bool((ids == ids[:, :1]).all())
    whole_bins = bool((ids == ids[:1, :]).all())
    if whole_frames and whole_bins:
        return "component"
    return "time segment" if whole_frames else "mel band" if whole_bins else None


class PosthocInterpreterBrain(InterpreterBrain):
    """``InterpreterBrain`` whose saved examples also hold the saliency heatmap and the component weights."""

    def _save_examples(self, frozen, batch, explanation, interpretation_wavs):
        already_saved = self.n_examples_saved
        super()._save_examples(frozen, batch, explanation, interpretation_wavs)
        folder = Path(self.hparams.output_folder) / "interpretations"
        labels = self.hparams.label_encoder.ind2lab
        weights, components = explanation.extras.get("component_weights"), explanation.extras.get("components")
        method = type(self.modules.interpreter).__name__  # for the titles only
        for k in range(self.n_examples_saved - already_saved):  # the clips of this batch just saved, in order
            clip_dir = folder / batch.id[k]
            title = f"{batch.id[k]}: {method} for {labels[int(explanation.target[k])]}"
            save_saliency_heatmap(frozen.X[k], explanation.saliency[k].detach(), clip_dir / "saliency.png", title)
            axis = component_axis(components[k]) if components is not None else None
            if weights is not None and axis is not None:
                save_component_bars(weights[k], clip_dir / "components.png", title=title, xlabel=axis)
