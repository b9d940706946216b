"""Becker et al. (2018)'s two AudioMNIST networks, as in the authors' repository (soerenab/AudioMNIST,
``audiomnist/models/audionet.py`` and ``alexnet.py``): every layer a module in forward order.

* AudioNet, on the raw waveform (1 s at 8 kHz): six blocks of Conv1d (kernel 3, same padding) -> ReLU ->
  MaxPool1d(2), with 100, 64, 128, 128, 128, 128 channels; flattened; dense 1024 -> 512 -> classes.
* AlexNet, on the dB spectrogram (``common.features.LinearDbSpectrogram``) taken relative to the clip's
  maximum: Conv 96 11x11 stride 4 ->
  ReLU -> MaxPool 3/2 -> BatchNorm, Conv 256 5x5 -> ReLU -> MaxPool 3/2 -> BatchNorm, Conv 384 3x3, Conv
  384 3x3, Conv 256 3x3 (each -> ReLU; all 'valid'); flattened; dense 1024 -> 1024 -> classes.

Deviation: a ReLU follows each hidden dense layer. The repository's Keras port leaves them linear, which
makes its two hidden layers one linear map; the paper's networks (Caffe) are the usual AlexNet-style MLP.
"""

import torch
from torch import nn

AUDIONET_CHANNELS = (100, 64, 128, 128, 128, 128)


class PercentileNormalizedWaveform(nn.Module):
    """AudioNet's input: the waveform divided by its ``percentile``-th percentile (+ 0.001), as the authors'
    preprocessing does. (B, samples) -> (B, samples); the classifier's front end (silence: 0)."""

    def __init__(self, percentile=95.0, offset=0.001):
        super().__init__()
        self.q, self.offset = float(percentile) / 100.0, float(offset)

    def forward(self, wavs):
        return wavs / (torch.quantile(wavs, self.q, dim=-1, keepdim=True) + self.offset)


class RelativeToMax(nn.Module):
    """(B, T, F) dB -> dB below each clip's maximum: the authors' ``amplitude_to_db(ref=np.max)``.

    The maximum is a per-clip constant to gradients (detached), so relevance and gradients pass through
    unchanged; otherwise its bin would be charged with minus the whole clip's relevance."""

    def forward(self, X):
        return X - X.amax(dim=(1, 2), keepdim=True).detach()


class AudioNetEncoder(nn.Module):
    """(B, samples) -> (B, channels[-1] * samples / 2^6), the flattened conv stack."""

    def __init__(self, channels=AUDIONET_CHANNELS, kernel_size=3):
        super().__init__()
        layers, previous = [], 1
        for width in channels:
            layers += [nn.Conv1d(previous, width, kernel_size, padding=kernel_size // 2), nn.ReLU(), nn.MaxPool1d(2)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.out_channels = previous
        self.n_pools = len(channels)

    def flat_size(self, n_samples):
        return self.out_channels * (n_samples >> self.n_pools)

    def forward(self, wav):
        return self.flatten(self.features(wav.unsqueeze(1)))


class AlexNetEncoder(nn.Module):
    """(B, T, F) spectrogram -> (B, 256 * h * w), the flattened conv stack (5 x 5 for 227-229 x 227-229)."""

    def __init__(self, in_channels=1):
        super().__init__()
        relu = nn.ReLU
        self.relative = RelativeToMax()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 96, 11, stride=4),
            relu(),
            nn.MaxPool2d(3, stride=2),
            nn.BatchNorm2d(96),
            nn.Conv2d(96, 256, 5),
            relu(),
            nn.MaxPool2d(3, stride=2),
            nn.BatchNorm2d(256),
            nn.Conv2d(256, 384, 3),
            relu(),
            nn.Conv2d(384, 384, 3),
            relu(),
            nn.Conv2d(384, 256, 3),
            relu(),
        )
        self.flatten = nn.Flatten()

    def flat_size(self, n_frames, n_bins):
        h, w = n_frames, n_bins
        for conv, pool in (((11, 4), True), ((5, 1), True), ((3, 1), False), ((3, 1), False), ((3, 1), False)):
            h, w = (h - conv[0]) // conv[1] + 1, (w - conv[0]) // conv[1] + 1
            if pool:
                h, w = (h - 3) // 2 + 1, (w - 3) // 2 + 1
        return 256 * h * w

    def forward(self, X):
        return self.flatten(self.features(self.relative(X).unsqueeze(1)))


class DenseHead(nn.Module):
    """Flattened features -> logits: (Linear -> ReLU -> Dropout) per hidden width, then Linear."""

    def __init__(self, in_features, n_classes, hidden=(1024, 512), dropout=0.5):
        super().__init__()
        layers, previous = [], int(in_features)
        for width in hidden:
            layers += [nn.Linear(previous, width), nn.ReLU(), nn.Dropout(dropout)]
            previous = width
        layers.append(nn.Linear(previous, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, features):
        return self.layers(features)


def audionet_flat_size(sample_rate, signal_length_s, channels=AUDIONET_CHANNELS):
    """AudioNet's flattened width for clips of ``signal_length_s`` at ``sample_rate`` (16000 for 1 s at 8 kHz)."""
    return AudioNetEncoder(channels).flat_size(int(round(sample_rate * signal_length_s)))


def alexnet_flat_size(front_end, signal_length_s):
    """AlexNet's flattened width on ``front_end``'s grid for clips of ``signal_length_s`` (6400 for the paper's)."""
    n_samples = int(round(front_end.sample_rate * signal_length_s))
    return AlexNetEncoder().flat_size(front_end.n_frames(n_samples), front_end.n_bins)
