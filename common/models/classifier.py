"""The Classifier interface that interpreters and metrics talk to.

``features(wavs) -> X`` (the spectrogram the model sees, (B, T, F)),
``hidden(X)`` (the representation interpreters read) and ``logits(X)``.
The wrapper holds the encoder (``embedding_model``) and the head
(``classifier``) as separate submodules under SpeechBrain's names, so
checkpoints published for SpeechBrain's ESC-50 recipes load into them.
"""

import torch
import torch.nn.functional as F

from common.errors import DataError, ToolkitError
from common.features import FrontEnd
from common.models.hooks import capture_outputs


def as_targets(target, X):
    """``target`` (one class, or one per clip: int, list, array or tensor) as a (B,) long tensor on X's device.

    One class applies to every clip of the batch ``X`` (B, ...); any other count is a DataError.
    """
    target = torch.as_tensor(target, device=X.device).long().reshape(-1)
    if target.numel() == 1:
        target = target.expand(X.shape[0])
    if target.shape != X.shape[:1]:
        raise DataError(f"{target.numel()} targets for a batch of {X.shape[0]} clips")
    return target.contiguous()


def _is_transformers_model(module):
    return hasattr(module, "config") and hasattr(module.config, "model_type")


class AudioClassifier(torch.nn.Module):
    """front-end -> encoder -> pooling -> head, with a logit scale.

    Arguments
    ---------
    front_end : torch.nn.Module
        Waveforms (B, samples) -> log spectrogram (B, T, F).
    embedding_model : torch.nn.Module
        A speechbrain lobe (Conv2dEncoder_v2, Cnn14, ...) taking (B, T, F), or
        a transformers FocalNet/ViT backbone (fed a resized 3-channel image).
    classifier : torch.nn.Module
        Pooled embedding (B, D) -> class scores.
    logit_scale : float
        Multiplies the head's scores. A cosine head (ECAPA ``Classifier``)
        outputs cosines in [-1, 1]; scaling them by the additive-angular-margin
        scale used in training makes ``softmax(logits)`` the probabilities the
        model was trained to produce.
    multilabel : bool
        Independent sigmoid outputs (BirdSet) instead of one softmax.
    silence : float or None
        The value a spectrogram bin holding no energy takes. Front ends
        declare it (``front_end.silence(X)``, per clip); give a constant here
        only for a front end that does not (e.g. ``nn.Identity`` over
        precomputed spectrograms).

    A transformers ConvNeXt (``model_type`` "convnext", one input channel) sees
    the spectrogram at its own resolution as a (freq, time) image, as
    AudioProtoPNet does; its maps are therefore (B, C, freq', time'), see
    ``map_to_spectrogram``.
    """

    def __init__(
        self,
        front_end,
        embedding_model,
        classifier,
        logit_scale=1.0,
        multilabel=False,
        silence=None,
        feature_augmentation=None,
    ):
        super().__init__()
        # training only (forward in train mode): e.g. common.models.augment.SilencePatches
        self.feature_augmentation = feature_augmentation
        self._silence = None if silence is None else float(silence)
        self.front_end = front_end
        self.embedding_model = embedding_model
        self.classifier = classifier
        self.logit_scale = float(logit_scale)
        self.multilabel = bool(multilabel)

    # -- the interface ------------------------------------------------------
    def silence(self, X):
        """(B, 1, 1): what a bin with no energy is in each clip of X (None when undeclared).

        Every removal of evidence (metrics, perturbation baselines, flipping) fills with it.
        """
        if self._silence is not None:
            return X.new_full((X.shape[0], 1, 1), self._silence)
        return self.front_end.silence(X) if isinstance(self.front_end, FrontEnd) else None

    def features(self, wavs):
        """Waveforms (B, samples) -> spectrogram X (B, T, F) the model sees."""
        return self.front_end(wavs)

    def hidden(self, X):
        """The encoder's representation of X (a map or a sequence)."""
        model = self.embedding_model
        if self._is_convnext:
            return model(pixel_values=X.transpose(1, 2).unsqueeze(1)).last_hidden_state  # (B, C, F', T')
        if _is_transformers_model(model):
            out = model(pixel_values=self.to_image(X))
            if model.config.model_type == "focalnet":
                return out.feature_maps[-1]  # (B, C, h, w)
            return out.last_hidden_state  # (B, tokens, C)
        out = model(X)
        return out[0] if isinstance(out, tuple) else out

    def hidden_map(self, hidden):
        """``hidden(X)`` as a (B, C, h, w) map on the backbone's grid.

        Maps pass through; a ViT's token sequence drops its CLS token and lays
        the patch tokens out on their (image_size / patch_size) square grid.
        """
        if hidden.ndim == 4:
            return hidden
        config = getattr(self.embedding_model, "config", None)
        if hidden.ndim == 3 and getattr(config, "model_type", None) == "vit":
            side = config.image_size // config.patch_size
            patches = hidden[:, -side * side :]  # (B, side*side, C), row-major like the patch embedding
            return patches.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[-1], side, side)
        raise ValueError(f"No spatial layout is known for a hidden representation of shape {tuple(hidden.shape)}")

    @property
    def _is_convnext(self):
        config = getattr(self.embedding_model, "config", None)
        return getattr(config, "model_type", None) == "convnext"

    @property
    def map_is_freq_time(self):
        """Whether the backbone's maps are laid out (freq, time) (ConvNeXt; an encoder may declare it) rather
        than (time, freq)."""
        declared = getattr(self.embedding_model, "map_is_freq_time", None)
        return bool(declared) if isinstance(declared, bool) else self._is_convnext

    @property
    def map_stage(self):
        """The ConvNeXt stage whose output ``hidden`` is (the last; a model may read an earlier one)."""
        return self.embedding_model.config.num_stages

    def map_extent(self, n_frames, n_bins):
        """(frames, bins) of the spectrogram that the backbone's final map covers, from frame 0 and bin 0.

        A ConvNeXt's stem (``patch_size``, stride = kernel) and each later
        stage's 2 x 2 stride-2 downsampling drop the input's remainder, so its
        final map's cell j covers frames [j s, (j + 1) s) (s the total stride)
        and the map ends before the input does (626 frames -> 19 cells of 32 =
        608 frames). Other backbones: the whole spectrogram.
        """
        if not self._is_convnext:
            return n_frames, n_bins
        config = self.embedding_model.config
        stages = self.map_stage
        stride = config.patch_size * 2 ** (stages - 1)
        frames, bins = n_frames // config.patch_size, n_bins // config.patch_size
        for _ in range(stages - 1):
            frames, bins = frames // 2, bins // 2
        return frames * stride, bins * stride

    def map_to_spectrogram(self, maps, n_frames, n_bins):
        """(B, h, w) maps on the backbone's grid -> (B, n_frames, n_bins) on the spectrogram's (bilinear).

        The map is resized onto the part of the spectrogram it covers
        (``map_extent``: each cell onto its own input block), and the uncovered
        remainder (a ConvNeXt's last frames) repeats the edge.
        """
        own = getattr(self.embedding_model, "map_to_spectrogram", None)
        if callable(own):  # an encoder with its own layout (BirdNET: frequency descending, two stacked bands)
            return own(maps, n_frames, n_bins)
        if self.map_is_freq_time:
            maps = maps.transpose(1, 2)
        frames, bins = self.map_extent(n_frames, n_bins)
        if frames < 1 or bins < 1:
            frames, bins = n_frames, n_bins
        out = F.interpolate(maps.unsqueeze(1), size=(frames, bins), mode="bilinear", align_corners=False)
        if (frames, bins) != (n_frames, n_bins):
            out = F.pad(out, (0, n_bins - bins, 0, n_frames - frames), mode="replicate")
        return out[:, 0]

    def pool(self, hidden):
        """(B, C, h, w) or (B, tokens, C) or (B, 1, C) -> (B, C)."""
        if hidden.ndim == 4:
            pooled = hidden.mean(dim=(-1, -2))
            if self._is_convnext:  # ConvNeXt's own pooler: mean, then its final LayerNorm
                pooled = self.embedding_model.layernorm(pooled)
            return pooled
        if hidden.ndim == 3:
            return hidden.mean(dim=1)
        return hidden

    def head_scores(self, X):
        """The head's own outputs (cosines for a cosine head), (B, n_classes)."""
        return self.head_scores_from_hidden(self.hidden(X))

    def head_scores_from_hidden(self, hidden):
        """Head outputs from an already computed ``hidden(X)`` (interpreters reuse it)."""
        out = self.classifier(self.pool(hidden))
        return out.squeeze(1) if out.ndim == 3 else out

    def logits_from_hidden(self, hidden):
        return self.head_scores_from_hidden(hidden) * self.logit_scale

    def hidden_and_logits(self, X, layers=None):
        """One forward pass: (representation, logits).

        ``layers`` (names of encoder submodules, e.g. Cnn14's ``conv_block6``)
        asks for those intermediate outputs, as a list, instead of ``hidden(X)``;
        forward hooks read them, so any encoder works unchanged.
        """
        if not layers:
            hidden = self.hidden(X)
            return hidden, self.logits_from_hidden(hidden)
        with capture_outputs(self.embedding_model, layers) as captured:
            hidden = self.hidden(X)
        return [captured[name] for name in layers], self.logits_from_hidden(hidden)

    def logits(self, X):
        """Class logits (B, n_classes) for spectrograms X."""
        return self.head_scores(X) * self.logit_scale

    def forward(self, wavs, head_scores=False):
        """Waveforms -> logits (or, for training losses that scale themselves, head scores)."""
        X = self.training_features(wavs)
        return self.head_scores(X) if head_scores else self.logits(X)

    def training_features(self, wavs):
        """``features(wavs)``, with the feature augmentation (if any) applied in training mode."""
        X = self.features(wavs)
        augment = self.feature_augmentation
        if self.training and augment is not None and getattr(augment, "active", True):
            silence = self.silence(X)
            if silence is None:
                raise ToolkitError(
                    "feature_augmentation fills with the front end's silence, but this classifier declares none "
                    "(no FrontEnd): pass AudioClassifier(..., silence=VALUE) or drop the augmentation"
                )
            X = augment(X, silence)
        return X

    def predict_proba(self, X):
        logits = self.logits(X)
        return torch.sigmoid(logits) if self.multilabel else F.softmax(logits, dim=-1)

    # -- helpers -------------------------------------------------------------
    def to_image(self, X):
        """Resize X to the backbone's square input and repeat to 3 channels."""
        config = self.embedding_model.config
        size = config.image_size
        img = F.interpolate(X.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False)
        return img.expand(-1, config.num_channels, -1, -1)
