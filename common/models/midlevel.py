"""Music emotion through a mid-level bottleneck (Chowdhury, Vall, Haunschmid & Widmer, ISMIR 2019), and its black box.

``MidLevelEmotionModel`` maps waveforms through a front-end and a CNN encoder
to a pooled embedding, then either

* ``bottleneck=True``: a linear layer to the seven mid-level features, and one
  linear layer (``emotion_layer``, 7 -> 8) from them to the eight emotions, so
  each emotion is sum_k w_ek m_k + b_e and its explanation is the effects
  w_ek m_k (the paper's A2Mid2E); or
* ``bottleneck=False``: a linear layer straight to the emotions, the same
  network without the concepts (the paper's A2E, the black box).

Targets are standardised with the training set's means and standard
deviations (buffers, saved with the checkpoint), so the losses of features on
different scales weigh alike; ``predict`` answers in the ratings' own units,
and ``rating_weights`` gives the emotion layer in those units (emotion rating
points per mid-level rating point).
"""

import torch
from torch import nn

N_MIDLEVEL = 7
N_EMOTIONS = 8


def masked_mse(predicted, target):
    """Mean squared error over the entries whose target is known (not NaN); 0 when none is."""
    known = ~torch.isnan(target)
    if not known.any():
        return predicted.sum() * 0.0  # keeps the graph, adds nothing
    return ((predicted - torch.nan_to_num(target)) ** 2)[known].mean()


class MidLevelEmotionModel(nn.Module):
    """Waveforms -> (mid-level features, emotions), through the bottleneck or straight (see the module doc).

    Arguments
    ---------
    front_end : FrontEnd
    encoder : nn.Module
        (B, T, F) -> (B, C, T', F'), e.g. ``common.models.genre_cnn.LogMelCNN``.
    emb_dim : int
        C; the pooled embedding is the mean and the maximum over (T', F'), 2C values.
    bottleneck : bool
        Whether the emotions are read from the mid-level features (A2Mid2E) or from the embedding (A2E).
    dropout : float
        On the embedding, before the first linear layer.
    """

    def __init__(self, front_end, encoder, emb_dim, bottleneck=True, dropout=0.2):
        super().__init__()
        self.front_end = front_end
        self.encoder = encoder
        self.bottleneck = bool(bottleneck)
        self.dropout = nn.Dropout(dropout)
        if self.bottleneck:
            self.mid_head = nn.Linear(2 * emb_dim, N_MIDLEVEL)
            self.emotion_layer = nn.Linear(N_MIDLEVEL, N_EMOTIONS)
        else:
            self.emotion_head = nn.Linear(2 * emb_dim, N_EMOTIONS)
        for name, n in (("mid", N_MIDLEVEL), ("emotion", N_EMOTIONS)):
            self.register_buffer(f"{name}_mean", torch.zeros(n))
            self.register_buffer(f"{name}_std", torch.ones(n))

    def set_target_scaling(self, mid, emotion):
        """Means and standard deviations of the training targets ((N, 7), (N, 8), NaN where unknown)."""
        for name, values in (("mid", mid), ("emotion", emotion)):
            values = torch.as_tensor(values, dtype=torch.float32)
            mean = torch.nanmean(values, dim=0)
            std = torch.sqrt(torch.nanmean((values - mean) ** 2, dim=0))
            getattr(self, f"{name}_mean").copy_(torch.nan_to_num(mean, nan=0.0))
            getattr(self, f"{name}_std").copy_(torch.nan_to_num(std, nan=1.0).clamp(min=1e-3))

    def standardise(self, name, values):
        """Ratings of ``name`` ("mid" or "emotion") -> standard units."""
        return (values - getattr(self, f"{name}_mean")) / getattr(self, f"{name}_std")

    def to_ratings(self, name, values):
        """Standard units -> ratings of ``name``: the inverse of ``standardise``."""
        return values * getattr(self, f"{name}_std") + getattr(self, f"{name}_mean")

    def features(self, wavs):
        return self.front_end(wavs)

    def embed(self, X):
        maps = self.encoder(X)
        return torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)

    def forward_standardised(self, X, detach_mid=False):
        """{"mid": (B, 7) or None, "emotion": (B, 8)} in standard units. ``detach_mid``: the emotion layer
        reads the mid-level predictions without passing its gradient back (the separate training)."""
        h = self.dropout(self.embed(X))
        if not self.bottleneck:
            return {"mid": None, "emotion": self.emotion_head(h)}
        mid = self.mid_head(h)
        return {"mid": mid, "emotion": self.emotion_layer(mid.detach() if detach_mid else mid)}

    def predict(self, X):
        """{"mid": (B, 7) or None, "emotion": (B, 8)} in the ratings' units."""
        out = self.forward_standardised(X)
        mid = self.to_ratings("mid", out["mid"]) if out["mid"] is not None else None
        return {"mid": mid, "emotion": self.to_ratings("emotion", out["emotion"])}

    def forward(self, wavs):
        return self.predict(self.features(wavs))

    def rating_weights(self):
        """(8, 7) emotion rating points per mid-level rating point, and (8,) the intercept: emotion = W m + b."""
        if not self.bottleneck:
            raise ValueError("the black-box model has no mid-level layer")
        w = self.emotion_layer.weight * self.emotion_std[:, None] / self.mid_std[None, :]
        b = self.emotion_mean + self.emotion_std * self.emotion_layer.bias - w @ self.mid_mean
        return w, b
