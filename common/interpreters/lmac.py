"""Listenable Maps for Audio Classifiers (L-MAC; Paissan, Della Libera, Ravanelli, Subakan, ICML 2024).

A decoder reads the frozen classifier's hidden maps (for Cnn14, conv blocks
6..3, deepest first, as SpeechBrain's recipe does) and outputs a mask
M in [0, 1] on the classifier's spectrogram grid. With c the classifier's own
decision, the training loss is the paper's

    l_in_w * CE(f(M * X), c) - l_out_w * CE(f((1 - M) * X), c)
        + reg_w_l1 * |M|_1 + reg_w_tv * TV(M)

(the masked-in input must keep the decision, the masked-out input must lose
it, the mask must be small and smooth).

Weights, against SpeechBrain's train_lmac.py: its CE terms are batch means, as
here. Its sparsity terms are not: ``xhat.abs().mean((-1, -2, -3))`` on the
(B, T, F) mask is the *batch* mean of the mask, multiplied by the (B,)
not-guided indicator and summed, i.e. ``reg_w_l1 * n_unguided * mean(M)``;
its TV is the batch's summed squared differences / (2 B), summed the same
way. Without fine-tuning that is ``(reg_w * B) x`` the batch mean of the
per-clip terms below, so the recipes weigh the L1 and TV terms
``reg_w * speechbrain_batch_size`` (0.4 x 16 = 6.4 with SpeechBrain's
lmac_cnn14.yaml), fixed rather than scaled with ``--batch_size`` (the one
deviation, besides: with fine-tuning SpeechBrain's batch mean also counts the
guided clips' masks; here only the not-guided clips' masks are penalised).
The guidance term is SpeechBrain's ``(BCE * g_w * guided).mean()`` exactly. The optional fine-tuning term of the
paper (L-MAC FT, ``guidance=True``) trains on contaminated inputs: for the
clips whose masked-in spectrogram correlates with the clean one above
``crosscor_th``, the mask is also pulled towards the binarized clean
spectrogram (BCE), and the sparsity terms apply to the other clips only.

Multi-label classifiers (``classifier.multilabel``, e.g. BirdNET): the paper's
classifiers are single-label, and its CE over the softmax would count every
other output's logit against the decision (a clip where a second species is
also loud would look "not kept" however strong the target's own score). Here,
the one deviation for them, CE is replaced by the target output's binary
cross-entropy towards 1, ``softplus(-z_c)``: ``l_in_w * BCE(z_c(M * X), 1)
- l_out_w * BCE(z_c((1 - M) * X), 1)``, mirroring the single-label terms.

The masked input is ``M * X`` on the classifier's own grid (in general
``silence + M (X - silence)``, ``common.features.keep_masked``), exactly what
the shared suite scores. (SpeechBrain masks the linear log-STFT and re-applies
the mel filterbank; masking the classifier's input keeps the objective and
the faithfulness metrics the same quantity.) For mel front-ends the
listenable wav spreads M back over the STFT bins each band covers.
"""

import torch
import torch.nn.functional as F

from common.features import keep_masked, silence_of
from common.interpreters.base import Explanation, Interpreter
from common.registry import INTERPRETERS


class LMACDecoder(torch.nn.Module):
    """Hidden maps (deepest first) -> mask logits (B, 1, h, w), U-Net style.

    Each map is projected to ``dim`` channels; the running map is resized to
    the next (shallower) map and summed with it, then refined. Transposed
    convolutions (halving channels) upsample the result ``n_upsample`` times.
    """

    def __init__(self, in_channels=(256,), dim=64, n_upsample=2):
        super().__init__()
        self.in_channels = list(in_channels)
        self.lateral = torch.nn.ModuleList(torch.nn.Conv2d(c, dim, 1) for c in self.in_channels)
        self.refine = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Conv2d(dim, dim, 3, padding=1), torch.nn.BatchNorm2d(dim), torch.nn.ReLU())
            for _ in self.in_channels
        )
        layers, c = [], dim
        for _ in range(n_upsample):
            layers += [torch.nn.ConvTranspose2d(c, max(c // 2, 8), 4, 2, 1), torch.nn.ReLU()]
            c = max(c // 2, 8)
        layers.append(torch.nn.Conv2d(c, 1, 3, padding=1))
        self.up = torch.nn.Sequential(*layers)

    def forward(self, maps):
        if len(maps) != len(self.in_channels):
            raise ValueError(f"LMACDecoder expects {len(self.in_channels)} hidden maps, got {len(maps)}")
        y = None
        for lateral, refine, h in zip(self.lateral, self.refine, maps, strict=True):
            z = lateral(h)
            if y is not None:
                z = z + F.interpolate(y, size=z.shape[-2:], mode="bilinear", align_corners=False)
            y = refine(z)
        return self.up(y)


def total_variation(mask):
    """Per clip (B,): SpeechBrain's ``tv_loss`` (power 2) per clip, i.e. the summed squared differences
    between neighbouring bins, along time plus along frequency, halved (its batch mean is ``tv_loss``)."""
    along_time = (mask[:, 1:, :] - mask[:, :-1, :]).pow(2).flatten(1).sum(1)
    along_freq = (mask[:, :, 1:] - mask[:, :, :-1]).pow(2).flatten(1).sum(1)
    return (along_time + along_freq) / 2


def normalized_dot(a, b, eps=1e-8):
    """Per-clip cosine similarity of two spectrograms (SpeechBrain's ``dotp`` cross-correlation)."""
    a, b = a.flatten(1), b.flatten(1)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


@INTERPRETERS.register("lmac")
class LMACInterpreter(Interpreter):
    """L-MAC around a frozen AudioClassifier; ``attribute`` returns the mask.

    Not class-conditional: the decoder reads the classifier's hidden maps, not a class, so the mask
    explains the classifier's own decision; asked for another class it raises ``ForeignTargetError``.
    """

    trainable = True
    class_conditional = False

    def __init__(
        self,
        classifier,
        decoder,
        layers=None,
        guidance=False,
        crosscor_th=0.6,
        bin_th=0.35,
    ):
        super().__init__(classifier)
        self.decoder = decoder
        self.layers = list(layers) if layers else None
        self.guidance = bool(guidance)
        self.crosscor_th = crosscor_th
        self.bin_th = bin_th

    def mask_logits(self, X, hidden):
        maps = hidden if self.layers else [self.classifier.hidden_map(hidden)]
        logits = self.decoder(maps)
        # the decoder's output is on the encoder's grid: the classifier puts it on X's (plain bilinear
        # resizing for (time, freq) maps; BirdNET's (freq descending, time) maps go onto both stacked bands)
        return self.classifier.map_to_spectrogram(logits.squeeze(1), *X.shape[-2:])

    def decision_loss(self, logits, target):
        """How far ``logits`` are from the decision ``target``: the paper's cross-entropy over the softmax,
        or, for a multi-label classifier (independent sigmoids), the target output's binary cross-entropy
        towards 1 (the other outputs play no part: another species being present does not unmake this one)."""
        if getattr(self.classifier, "multilabel", False):
            picked = logits.gather(1, target.view(-1, 1)).squeeze(1)
            return F.binary_cross_entropy_with_logits(picked, torch.ones_like(picked))
        return F.cross_entropy(logits, target)

    def loss_terms(self, frozen):
        X, target = frozen.X, frozen.target
        mask = torch.sigmoid(self.mask_logits(X, frozen.hidden))
        silence = silence_of(self.classifier, X)  # what the suite's mask-in / mask-out fill with
        logits_in = self.classifier.logits(keep_masked(X, mask, silence))
        logits_out = self.classifier.logits(keep_masked(X, 1 - mask, silence))
        ce_in = self.decision_loss(logits_in, target)
        ce_out = self.decision_loss(logits_out, target)
        per_clip_l1 = mask.abs().flatten(1).mean(1)
        per_clip_tv = total_variation(mask)
        regularized = torch.ones_like(per_clip_l1)
        terms = {"in": ce_in, "out": -ce_out}
        per_clip = {"mask_mean": per_clip_l1.detach()}
        clean_X = getattr(frozen, "clean_X", None)
        if self.guidance and clean_X is not None:
            guided = (normalized_dot(clean_X, mask * X) >= self.crosscor_th).to(X.dtype).detach()
            peak = clean_X.flatten(1).max(1).values.view(-1, 1, 1)
            oracle = (clean_X >= self.bin_th * peak).to(X.dtype)
            bce = F.binary_cross_entropy(mask, oracle, reduction="none").flatten(1).mean(1)
            terms["guide"] = (bce * guided).mean()
            regularized = 1 - guided
            per_clip["guided"] = guided
        terms["l1"] = (per_clip_l1 * regularized).mean()
        terms["tv"] = (per_clip_tv * regularized).mean()
        explanation = Explanation(saliency=mask, mask=mask, target=target, extras={"per_clip": per_clip})
        return terms, explanation

    def attribute_with_extras(self, X, target):
        """The mask for the classifier's decision on X; ``target`` must be that decision."""
        with torch.no_grad():
            hidden, logits = self.classifier.hidden_and_logits(X, self.layers)
        self.check_own_decision(target, logits.argmax(dim=-1))
        # explain() rescales it per clip (to_mask, minmax), as it always did for L-MAC
        return torch.sigmoid(self.mask_logits(X, hidden)), {}
