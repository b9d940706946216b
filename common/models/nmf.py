"""A starting NMF dictionary from classical NMF (scikit-learn), for the amortized NMF recipe.

Amortized NMF (an encoder predicting H, the decoder holding W) needs tens of
thousands of steps from a random W. Fitting W first on a sample of training
frames with scikit-learn's coordinate-descent NMF gives the encoder a good
dictionary to learn activations for, in a minute on a CPU.
"""

import numpy as np
import torch


def fit_nmf_dictionary(frames, n_components, max_iter=200, seed=0):
    """frames (N, F) >= 0 -> W (F, K) >= 0, unit-norm columns, minimising ||frames - H W^T||_F (scikit-learn)."""
    from sklearn.decomposition import NMF

    data = np.asarray(frames, dtype=np.float32)
    if data.ndim != 2 or (data < 0).any() or not np.isfinite(data).all():
        raise ValueError("NMF needs a finite, non-negative (frames, frequencies) matrix")
    model = NMF(n_components=n_components, init="nndsvda", max_iter=max_iter, random_state=seed)
    model.fit(data)
    W = torch.from_numpy(model.components_.T.copy()).float()
    # NMF's scale is free (W s, H / s): unit-norm columns put the scale in H, where a freshly
    # initialised encoder's outputs have about the right size, so its first steps stay small.
    return W / W.norm(dim=0, keepdim=True).clamp(min=1e-8)


def sample_frames(spectrograms, frames_per_clip, generator=None):
    """A random subset of the frames of each (T, F) spectrogram, stacked (N, F)."""
    picked = []
    for spec in spectrograms:
        n = min(frames_per_clip, spec.shape[0])
        picked.append(spec[torch.randperm(spec.shape[0], generator=generator)[:n]])
    return torch.cat(picked)
