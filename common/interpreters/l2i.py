"""Listen to Interpret (Parekh et al., NeurIPS 2022, arXiv:2202.11479).

L2I explains a frozen classifier f through a non-negative dictionary W
(F x K, learned beforehand on log-magnitude spectra by the NMF recipe):

* psi reads f's hidden layers and predicts time activations H >= 0 (K x T);
* theta (attention pooling over time, then a linear layer) reproduces f's
  decision from H alone;
* loss = alpha ||log1p|X| - W H||^2 + beta |H|_1 + fidelity, the
  reconstruction, sparsity and classifier-to-theta fidelity terms of the
  paper (W stays fixed). The fidelity term is SpeechBrain's train_l2i.py
  exactly: ``mean over clips and classes of softmax(s / classifier_temp) *
  -log theta(H)``, with s the head's own scores (cosines for the conv2d
  recipe's ECAPA head, temperature 0.01; logits for Cnn14's linear head,
  temperature 1). The mean over classes (not a cross-entropy's sum) keeps it
  at SpeechBrain's weight relative to alpha = 10 and beta = 0.8;
* for the class c predicted by f, component k is relevant when
  r_k = theta_{c,k} z_k / max_j |theta_{c,j} z_j| (z = time-pooled H) passes
  ``relevance_th``; the interpretation is the soft mask
  W_L H_L / (W H) over the selected components L, applied to the input
  spectrogram, then turned into a wav with the original phase.

``psi`` is ``L2IPsi`` below (works on one hidden map or several, e.g. four
Cnn14 blocks, and costs a few MFLOPs); theta and the NMF decoder are
SpeechBrain's ``Theta`` and ``NMFDecoderAudio`` lobes, so SpeechBrain's
published ``nmf_decoder.ckpt`` loads.
"""

import torch
import torch.nn.functional as F

from common.interpreters.base import Explanation, Interpreter
from common.registry import INTERPRETERS

EPS = 1e-10


class L2IPsi(torch.nn.Module):
    """Hidden maps (B, C_i, t_i, f_i) -> NMF time activations H (B, K, T).

    Each map's frequency axis is pooled to ``freq_pool`` bins and folded into
    channels by a convolution spanning them; the maps are brought to the finest
    time resolution among them, mixed, upsampled in time by transposed
    convolutions (halving channels at each stage) and projected to K
    non-negative activations at the spectrogram's frame rate.
    """

    def __init__(self, in_channels=(256,), K=100, dim=128, n_upsample=3, freq_pool=4):
        super().__init__()
        self.in_channels = list(in_channels)
        self.stems = torch.nn.ModuleList(
            torch.nn.Sequential(
                torch.nn.AdaptiveAvgPool2d((None, freq_pool)),
                torch.nn.Conv2d(c, dim, kernel_size=(3, freq_pool), padding=(1, 0)),
                torch.nn.ReLU(),
            )
            for c in self.in_channels
        )
        self.mix = torch.nn.Sequential(
            torch.nn.Conv1d(dim * len(self.in_channels), dim, 3, padding=1),
            torch.nn.BatchNorm1d(dim),
            torch.nn.ReLU(),
        )
        layers, c = [], dim
        for _ in range(n_upsample):  # each stage doubles the time resolution
            layers += [torch.nn.ConvTranspose1d(c, c // 2, 4, 2, 1), torch.nn.BatchNorm1d(c // 2), torch.nn.ReLU()]
            c //= 2
        self.upsample = torch.nn.Sequential(*layers)
        self.out = torch.nn.Conv1d(c, K, 3, padding=1)

    def forward(self, hidden, n_frames):
        maps = list(hidden) if isinstance(hidden, (list, tuple)) else [hidden]
        channels = [h.shape[1] for h in maps]
        if channels != self.in_channels:
            raise ValueError(
                f"L2IPsi was built for hidden maps with channels {self.in_channels} but got {channels}: set "
                "psi's in_channels (and the interpreter's layers) to match the classifier."
            )
        seqs = [stem(h).squeeze(-1) for stem, h in zip(self.stems, maps, strict=True)]  # (B, dim, t_i)
        t = max(s.shape[-1] for s in seqs)
        seqs = [s if s.shape[-1] == t else F.interpolate(s, size=t, mode="linear", align_corners=False) for s in seqs]
        H = self.out(self.upsample(self.mix(torch.cat(seqs, dim=1))))
        return F.relu(F.interpolate(H, size=n_frames, mode="linear", align_corners=False))


@INTERPRETERS.register("l2i")
class L2IInterpreter(Interpreter):
    """L2I around a frozen AudioClassifier; ``attribute`` returns the soft NMF mask on X's grid.

    Arguments
    ---------
    classifier : AudioClassifier (frozen)
    psi : L2IPsi
    theta : speechbrain.lobes.models.L2I.Theta (n_comp=K, T=frames, num_classes)
    nmf_decoder : speechbrain.lobes.models.L2I.NMFDecoderAudio holding W (kept fixed)
    relevance_th : float
        Components whose normalised relevance exceeds it make up the interpretation.
    classifier_temp : float
        SpeechBrain's temperature on the head's own scores (logits / ``logit_scale``) in the fidelity term.
    layers : list of str, optional
        Encoder submodules whose outputs psi reads (default: the classifier's hidden map).
    """

    trainable = True

    def __init__(self, classifier, psi, theta, nmf_decoder, relevance_th=0.2, layers=None, classifier_temp=1.0):
        super().__init__(classifier)
        self.psi = psi
        self.theta = theta
        self.nmf_decoder = nmf_decoder.requires_grad_(False)  # the dictionary is learned beforehand
        self.relevance_th = relevance_th
        self.layers = list(layers) if layers else None
        self.classifier_temp = float(classifier_temp)

    # -- the model -------------------------------------------------------------
    def activations(self, hidden, n_frames):
        """H (B, K, T): the NMF time activations psi predicts from the classifier's layers."""
        H = self.psi(hidden, n_frames)
        expected = self.theta.hard_att.in_features
        if H.shape[-1] != expected:
            raise ValueError(
                f"L2I's theta pools {expected} frames but the input has {H.shape[-1]}: clips must be "
                "signal_length_s long (theta's T is fixed by the hparams)."
            )
        return H

    def relevance(self, H, target):
        """r (B, K): theta's weight for the target class times the pooled activation, normalised by max |r|."""
        z = self.theta.hard_att(H).squeeze(-1)
        r = self.theta.classifier[0].weight[target] * z
        return r / r.abs().amax(dim=1, keepdim=True).clamp(min=EPS)

    def stft_mask(self, H, target):
        """W_L H_L / W H (B, T, F_stft) in [0, 1], over the relevant components L."""
        W = self.nmf_decoder.return_W()  # (F, K), non-negative
        selected = (self.relevance(H, target) > self.relevance_th).to(H.dtype)
        full = torch.einsum("fk,bkt->btf", W, H)
        part = torch.einsum("fk,bkt->btf", W, H * selected.unsqueeze(-1))
        return (part / (full + EPS)).clamp(0.0, 1.0)

    def _spectrogram_for_nmf(self, X, wavs):
        """log1p magnitude on the linear STFT grid, where W lives (X itself unless the model uses mel bins)."""
        front_end = self.classifier.front_end
        if front_end.on_stft_grid:
            return X
        if wavs is None:
            raise ValueError("L2I needs the waveforms when the classifier reads mel bands (W is on the STFT grid)")
        return front_end.log_linear_magnitude(front_end.stft(wavs))

    def _mask_and_extras(self, H, target, theta_probs):
        """The mask on the classifier's grid and the extras (its STFT-grid mask, H, theta's agreement)."""
        stft_mask = self.stft_mask(H, target)
        mask = self.classifier.front_end.stft_mask_to_grid(stft_mask)
        agreement = (theta_probs.argmax(dim=-1) == target).to(H.dtype)
        extras = {"stft_mask": stft_mask, "activations": H, "per_clip": {"theta_fidelity": agreement}}
        return mask, extras

    # -- training --------------------------------------------------------------
    def loss_terms(self, frozen):
        """Reconstruction, sparsity and fidelity terms, and the explanation, for one batch of FrozenOutputs."""
        spec = self._spectrogram_for_nmf(frozen.X, frozen.wavs)  # (B, T, F_stft)
        H = self.activations(frozen.hidden, spec.shape[1])
        reconstruction = self.nmf_decoder(H).transpose(1, 2)  # W H, (B, T, F_stft)
        theta_probs = self.theta(H)
        terms = {
            "rec": F.mse_loss(reconstruction, spec),
            "sparsity": H.abs().mean(),
            "fidelity": self.fidelity(frozen.logits, theta_probs),
        }
        mask, extras = self._mask_and_extras(H, frozen.target, theta_probs)
        stft_mask = extras.pop("stft_mask")
        return terms, Explanation(saliency=mask, mask=mask, target=frozen.target, stft_mask=stft_mask, extras=extras)

    def fidelity(self, logits, theta_probs):
        """SpeechBrain's ``(F.softmax(classification_out / classifier_temp, dim=1) * -log(theta_out)).mean()``.

        ``classification_out`` there is the head's output before any margin scale, so the logits are
        divided by the classifier's ``logit_scale`` first (30 for a cosine head: softmax(cos / 0.01), not
        softmax(30 cos)). EPS guards log(0) only.
        """
        scores = logits / getattr(self.classifier, "logit_scale", 1.0)
        target = F.softmax(scores / self.classifier_temp, dim=-1)
        return (target * -torch.log(theta_probs + EPS)).mean()

    # -- the Interpreter verbs ---------------------------------------------------
    @torch.no_grad()
    def attribute_with_extras(self, X, target):
        """The soft mask on X's grid (mel inputs get W's STFT-grid mask averaged per band); it is its own mask."""
        hidden, _ = self.classifier.hidden_and_logits(X, self.layers)
        H = self.activations(hidden, X.shape[1])
        mask, extras = self._mask_and_extras(H, target, self.theta(H))
        return mask, {"mask": mask, **extras}
