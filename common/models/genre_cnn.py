"""Log-mel CNNs for music genre classification (GTZAN), as encoder and head of an AudioClassifier.

``LogMelCNN`` maps a spectrogram X (B, T, F) to a feature map (B, C, T', F')
through ``self.features``, an ``nn.Sequential`` of blocks
``Conv2d(3x3, padding 1) -> BatchNorm2d -> ReLU`` (once, or twice for the
VGG-style variant) ``-> MaxPool2d(2)``. All layers are modules in forward
order with no functional operations between them (only the channel
``unsqueeze`` of the input), so LRP rules and a BatchNorm canonizer attach to
them by module type (each Conv2d directly followed by its BatchNorm2d).
``GenreHead`` maps the pooled map (B, C) to logits.
"""

from torch import nn


class LogMelCNN(nn.Module):
    """A stack of conv blocks over a (B, T, F) spectrogram.

    Arguments
    ---------
    channels : list of int
        Output channels of each block (one MaxPool2d(2) per block).
    convs_per_block : int
        1: the small log-mel CNN; 2: the deeper VGG-style variant.
    in_channels : int
        Input channels (1 for a spectrogram).
    """

    def __init__(self, channels=(32, 64, 128, 256), convs_per_block=1, in_channels=1):
        super().__init__()
        if not channels or convs_per_block < 1:
            raise ValueError(f"channels={channels} must be non-empty and convs_per_block={convs_per_block} >= 1")
        layers = []
        previous = in_channels
        for width in channels:
            for _ in range(convs_per_block):
                layers += [nn.Conv2d(previous, width, kernel_size=3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
                previous = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.out_channels = previous

    def forward(self, X):
        """(B, T, F) -> (B, C, T / 2^n_blocks, F / 2^n_blocks)."""
        return self.features(X.unsqueeze(1))


class GenreHead(nn.Module):
    """Pooled features (B, C) -> logits: Dropout -> Linear -> ReLU -> Dropout -> Linear (hidden=0: Dropout -> Linear)."""

    def __init__(self, in_features, n_classes, hidden=128, dropout=0.3):
        super().__init__()
        if hidden:
            layers = [
                nn.Dropout(dropout),
                nn.Linear(in_features, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, n_classes),
            ]
        else:
            layers = [nn.Dropout(dropout), nn.Linear(in_features, n_classes)]
        self.layers = nn.Sequential(*layers)

    def forward(self, pooled):
        return self.layers(pooled)
