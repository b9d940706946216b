"""Listenable outputs: wav files, written atomically."""

import numpy as np

from common.io import atomic_path


def save_wav(path, wav, sample_rate):
    """Write a mono waveform (tensor or array) as 16-bit PCM, atomically; peak-limited to [-1, 1]."""
    import soundfile as sf

    data = wav.detach().cpu().numpy() if hasattr(wav, "detach") else np.asarray(wav)
    data = np.clip(np.nan_to_num(data.astype(np.float32)), -1.0, 1.0)
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(str(tmp), data, int(sample_rate), subtype="PCM_16", format="WAV")


def save_top_components_wav(path, classifier, wav, components, weights, k, sample_rate=None):
    """Write the top-``k`` positive components of one clip as a wav; return their (T, F) mask.

    ``wav`` (samples,), ``components`` (T, F) ids on the classifier's grid,
    ``weights`` (K,) per component. The binary mask goes the way of every
    listenable explanation (``Explanation.to_wav``): mask -> STFT grid ->
    original phase -> ISTFT.
    """
    import torch

    from common.interpreters.base import Explanation
    from common.interpreters.components import top_components_mask

    mask = top_components_mask(weights, components, k)[None].to(wav.dtype)
    explanation = Explanation(saliency=mask, mask=mask, target=torch.zeros(1, dtype=torch.long))
    with torch.no_grad():
        audio = explanation.to_wav(classifier, wav[None])[0]
    save_wav(path, audio, sample_rate or classifier.front_end.sample_rate)
    return mask[0]
