"""Listenable explanations: how close is the interpretation audio to the true event?"""

import torch

from common.metrics.base import Metric, register_metric


def si_snr(estimate, reference, eps=1e-12):
    """Scale-invariant SNR in dB of each row of ``estimate`` against ``reference`` (B, samples).

    Both are made zero-mean; the reference's scaled projection is the signal,
    the rest of the estimate the noise.
    """
    if estimate.shape != reference.shape:
        raise ValueError(
            f"interpretation wavs {tuple(estimate.shape)} and event wavs {tuple(reference.shape)} must have the same shape"
        )
    # float64: the residual of a near-perfect estimate is far below float32 resolution
    estimate = estimate.double() - estimate.double().mean(dim=-1, keepdim=True)
    reference = reference.double() - reference.double().mean(dim=-1, keepdim=True)
    scale = (estimate * reference).sum(dim=-1, keepdim=True) / ((reference**2).sum(dim=-1, keepdim=True) + eps)
    target = scale * reference
    noise = estimate - target
    return 10 * torch.log10(((target**2).sum(dim=-1) + eps) / ((noise**2).sum(dim=-1) + eps))


@register_metric
class SiSnr(Metric):
    """SI-SNR (dB) of the listenable interpretation against the true event waveform.

    Requires ``event_wavs`` and either ``interpretation_wavs`` or ``wavs``
    (the suite then makes them with ``explanation.to_wav``); NaN otherwise.
    """

    name = "si_snr"
    display_name = "SI-SNR (dB)"
    higher_is_better = True
    requires = frozenset({"event_wavs", "interpretation_wavs"})

    def compute(self, inputs):
        return si_snr(inputs.interpretation_wavs, inputs.event_wavs).to(inputs.X.dtype)
