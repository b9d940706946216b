"""Posthoc Interpretation via Quantization (Paissan, Subakan, Ravanelli 2023).

The frozen classifier's hidden map h (B, C, t, f) is adapted, vector-quantized
with a class-partitioned codebook (K keys; each position snaps to keys of the
predicted class, straight-through gradients) and decoded to a time-frequency
mask. Training loss, as in the paper:

    BCE(mask, 1[X > mask_th * max X]) + ||sg(h_e) - z_q||^2 + ||h_e - sg(z_q)||^2

(reconstruction of the thresholded input spectrogram, VQ, commitment).

``psi`` is either speechbrain's ``VectorQuantizedPSI_Audio`` lobe (the layout
of the published speechbrain/PIQ-ESC50 interpreter) or ``PIQPsi`` below,
which has the same codebook and adapter but a decoder that narrows its
channels as it upsamples: the lobe decodes at 256 channels up to full
resolution (about 200 GFLOPs per clip, over a minute per batch of two on two
CPU cores), this one at a few GFLOPs.
"""

import torch
import torch.nn.functional as F
from speechbrain.lobes.models.PIQ import ResBlockAudio, VQEmbedding, weights_init

from common.interpreters.base import Explanation, Interpreter
from common.registry import INTERPRETERS


class PIQPsi(torch.nn.Module):
    """Adapter -> class-partitioned VQ -> tapered transposed-conv decoder -> mask logits."""

    def __init__(self, dim=256, K=1024, numclasses=50, shared_keys=0, decoder_channels=(64, 32, 16, 8)):
        super().__init__()
        self.codebook = VQEmbedding(
            K, dim, numclasses=numclasses, activate_class_partitioning=True, shared_keys=shared_keys
        )
        self.adapter = ResBlockAudio(dim)
        layers, c_in = [], dim
        for c_out in decoder_channels:  # each stage doubles time and frequency
            layers += [
                torch.nn.ConvTranspose2d(c_in, c_out, 4, 2, 1),
                torch.nn.ReLU(),
                torch.nn.BatchNorm2d(c_out),
            ]
            c_in = c_out
        layers.append(torch.nn.Conv2d(c_in, 1, 3, 1, 1))
        self.decoder = torch.nn.Sequential(*layers)
        self.apply(weights_init)

    def forward(self, hs, labels):
        """Returns (mask logits (B, 1, t', f'), adapted h_e, codebook vectors z_q) as the lobe does."""
        h_e = self.adapter(hs)
        z_q_st, z_q = self.codebook.straight_through(h_e, labels)
        return self.decoder(z_q_st), h_e, z_q


@INTERPRETERS.register("piq")
class PIQInterpreter(torch.nn.Module, Interpreter):
    """PIQ around a frozen AudioClassifier; ``attribute`` returns the decoded mask."""

    def __init__(self, classifier, psi, mask_th=0.35):
        torch.nn.Module.__init__(self)
        Interpreter.__init__(self, classifier)
        self.psi = psi
        self.mask_th = mask_th

    def decode(self, X, hidden, target):
        """Mask logits (B, T, F) on X's grid, and the VQ terms."""
        logits, h_e, z_q = self.psi(self.classifier.hidden_map(hidden), target)
        logits = F.interpolate(logits, size=X.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)
        return logits, h_e, z_q

    def loss_terms(self, frozen):
        """The paper's three terms, and the explanation, for one batch of FrozenOutputs."""
        X, target = frozen.X, frozen.target
        logits, h_e, z_q = self.decode(X, frozen.hidden, target)
        peak = X.flatten(1).max(dim=1).values.view(-1, 1, 1)
        target_mask = (X > self.mask_th * peak).to(X.dtype)
        terms = {
            "rec": F.binary_cross_entropy_with_logits(logits, target_mask),
            "vq": F.mse_loss(z_q, h_e.detach()),
            "commit": F.mse_loss(h_e, z_q.detach()),
        }
        mask = torch.sigmoid(logits)
        return terms, Explanation(saliency=mask, mask=mask, target=target)

    def attribute(self, X, target, hidden=None):
        if hidden is None:
            with torch.no_grad():
                hidden = self.classifier.hidden(X)
        return torch.sigmoid(self.decode(X, hidden, target)[0])

    def explain(self, wavs=None, X=None, target=None, hidden=None):
        if X is None:
            with torch.no_grad():
                X = self.classifier.features(wavs)
        if hidden is None:
            with torch.no_grad():
                hidden, logits = self.classifier.hidden_and_logits(X)
            if target is None:
                target = logits.argmax(-1)
        elif target is None:
            target = self.predict(X)
        mask = self.attribute(X, target, hidden=hidden)
        return Explanation(saliency=mask, mask=mask, target=target)
