"""Posthoc Interpretation via Quantization (Paissan, Subakan, Ravanelli 2023).

The frozen classifier's hidden map h (B, C, t, f) is adapted, vector-quantized
with a class-partitioned codebook (K keys; each position snaps to keys of the
predicted class, straight-through gradients) and decoded to a time-frequency
mask. Training loss, as in the paper:

    BCE(mask, 1[X > mask_th * max X]) + ||sg(h_e) - z_q||^2 + ||h_e - sg(z_q)||^2

(reconstruction of the thresholded input spectrogram, VQ, commitment).

Mask geometry, as SpeechBrain's train_piq.py: the decoder's output frame
(bin) i is the input's frame (bin) i, and X is cropped to the decoder's
extent (``X_stft_logpower[:, :Tmax, :]``; the published lobe gives 417 of a
5-s clip's 431 frames, all 513 bins), for the loss and its threshold alike.
Stretching 417 frames onto 431 would drift by up to 14 frames (0.16 s) by the
clip's end. The frames the decoder does not reach get mask 0 on X's grid
(explained by nothing; SpeechBrain drops them from its masked inputs). The
published lobe is always aligned so; ``PIQPsi``, which inverts the encoder's
strides (416 x 512 of 431 x 513 for the conv2d encoder), is aligned so when its
output is within one upsampling step of X's size on both axes, and otherwise (a
ViT/FocalNet patch grid, whose map is not the spectrogram's layout, or a
(freq, time) map such as BirdNET's) put onto X's grid by the classifier's
``map_to_spectrogram`` (bilinear resizing for (time, freq) maps).

The classifier's logits choose the class whose codebook keys quantize the map
(its decision, the top output; for a multi-label classifier such as BirdNET
its top-scoring class); nothing else of them enters the loss, whose target
comes from X alone. The codebook's K keys are split evenly over
``numclasses`` classes (SpeechBrain's ``get_irrelevant_regions``), so K must
be at least the number of classes or some classes get no key: a map explained
for such a class is quantized to an arbitrary key (``PIQPsi`` warns; SpeechBrain's
recipe tests run K = 1).

``psi`` is either speechbrain's ``VectorQuantizedPSI_Audio`` lobe (the layout
of the published speechbrain/PIQ-ESC50 interpreter) or ``PIQPsi`` below,
which has the same codebook and adapter but a decoder that narrows its
channels as it upsamples: the lobe decodes at 256 channels up to full
resolution (about 200 GFLOPs per clip, over a minute per batch of two on two
CPU cores), this one at a few GFLOPs.
"""

import logging

import torch
import torch.nn.functional as F
from speechbrain.lobes.models.PIQ import ResBlockAudio, VectorQuantizedPSI_Audio, VQEmbedding, weights_init

from common.interpreters.base import Explanation, Interpreter
from common.registry import INTERPRETERS

logger = logging.getLogger(__name__)


class PIQPsi(torch.nn.Module):
    """Adapter -> class-partitioned VQ -> tapered transposed-conv decoder -> mask logits."""

    def __init__(self, dim=256, K=1024, numclasses=50, shared_keys=0, decoder_channels=(64, 32, 16, 8)):
        super().__init__()
        if K - shared_keys < numclasses:  # a warning, not an error: SpeechBrain's own recipe tests run K=1
            logger.warning(
                "PIQ's codebook has %d class keys for %d classes: some classes get no key and their maps are "
                "quantized to an arbitrary one (set K >= numclasses + shared_keys, e.g. a few keys per class)",
                K - shared_keys,
                numclasses,
            )
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
class PIQInterpreter(Interpreter):
    """PIQ around a frozen AudioClassifier; ``attribute`` returns the decoded mask."""

    trainable = True

    def __init__(self, classifier, psi, mask_th=0.35):
        super().__init__(classifier)
        self.psi = psi
        self.mask_th = mask_th

    def aligned(self, X, logits, hidden_map):
        """True when the decoder's output starts at X's first frame and bin (SpeechBrain's crop), not a resize."""
        if isinstance(self.psi, VectorQuantizedPSI_Audio):
            return True
        if getattr(
            self.classifier, "map_is_freq_time", False
        ):  # a (freq, time) map (BirdNET, ConvNeXt) is never X's own grid
            return False
        # the decoder inverts the encoder's strides when X's size is its output's to within one upsampling step
        cells = hidden_map.shape[-2:]
        return all(abs(n - m) < m / c for n, m, c in zip(X.shape[-2:], logits.shape[-2:], cells, strict=True))

    def decode(self, X, hidden, target):
        """Mask logits (B, t, f) for X's first t frames and f bins (all of X when resized), and the VQ terms."""
        hidden_map = self.classifier.hidden_map(hidden)
        logits, h_e, z_q = self.psi(hidden_map, target)
        if self.aligned(X, logits, hidden_map):
            logits = logits[..., : X.shape[-2], : X.shape[-1]].squeeze(1)
        else:
            # on the encoder's grid: the classifier puts it on X's (bilinear for (time, freq) maps)
            logits = self.classifier.map_to_spectrogram(logits.squeeze(1), *X.shape[-2:])
        return logits, h_e, z_q

    @staticmethod
    def mask_on_grid(X, logits):
        """sigmoid(logits) on X's grid; the frames/bins past the decoder's extent get 0."""
        mask = torch.sigmoid(logits)
        t, f = mask.shape[-2:]
        return F.pad(mask, (0, X.shape[-1] - f, 0, X.shape[-2] - t))

    def loss_terms(self, frozen):
        """The paper's three terms, and the explanation, for one batch of FrozenOutputs."""
        X, target = frozen.X, frozen.target
        logits, h_e, z_q = self.decode(X, frozen.hidden, target)
        covered = X[:, : logits.shape[-2], : logits.shape[-1]]  # SpeechBrain's target_spec
        peak = covered.flatten(1).max(dim=1).values.view(-1, 1, 1)
        target_mask = (covered > self.mask_th * peak).to(X.dtype)
        terms = {
            # SpeechBrain's -(m log(x + 1e-10) + (1 - m) log(1 - x + 1e-10)).mean(), on logits for stability
            "rec": F.binary_cross_entropy_with_logits(logits, target_mask),
            "vq": F.mse_loss(z_q, h_e.detach()),
            "commit": F.mse_loss(h_e, z_q.detach()),
        }
        mask = self.mask_on_grid(X, logits)
        return terms, Explanation(saliency=mask, mask=mask, target=target)

    def attribute_with_extras(self, X, target):
        """The decoded mask for ``target`` (PIQ's codebook is class-conditional); it is its own mask."""
        with torch.no_grad():
            hidden = self.classifier.hidden(X)
        mask = self.mask_on_grid(X, self.decode(X, hidden, target)[0])
        return mask, {"mask": mask}
