"""Source separators: a clip -> waveform stems that sum to it, the components of audioLIME.

Haunschmid, Manilow & Widmer (2020, audioLIME) explain a classifier with
LIME whose interpretable components are separated sources, so an explanation
is something to listen to. Every separator here takes one clip ``wav``
(samples,) at ``sample_rate`` and returns ``(stems (K, samples), names)``;
what the stems leave of the clip (``wav - stems.sum(0)``, the residual) is
kept in every coalition by the interpreter (``common.interpreters.sources``).

* ``oracle``: the synthetic music generator's own stems
  (``make_synthetic_gtzan(..., write_stems=True)``: ``stems/<clip_id>/<source>.wav``),
  cut to the clip's segment and scaled to the clip (the loader peak-normalises it);
  its ``noise`` floor is left to the residual. The truth the others are measured against.
* ``hpss``: harmonic / percussive (Fitzgerald 2010, librosa's ``decompose.hpss``:
  median filters across time and frequency, soft masks), two stems.
* ``nmf``: ``n_components`` NMF parts of the clip's magnitude spectrogram (the
  toolkit's ``fit_nmf_dictionary``, scikit-learn), each part's Wiener mask on the
  complex STFT, so the stems sum to the clip.
* ``openunmix``: Open-Unmix (Stöter et al. 2019, the ``openunmix`` package;
  ``umxl`` by default: vocals, drums, bass, other), the real separator audioLIME
  uses in place of spleeter. Its weights download at first use; offline the error
  says so. ``separator=`` takes a built ``openunmix.model.Separator`` (any weights).
"""

from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF

from common.errors import ConfigError, DataError, DataNotFoundError
from common.registry import Registry

SEPARATORS = Registry("separator")


def _stft(wav, n_fft, hop):
    window = torch.hann_window(n_fft, dtype=wav.dtype)
    return torch.stft(wav, n_fft, hop, window=window, return_complex=True, center=True)


def _istft(spec, n_fft, hop, length):
    window = torch.hann_window(n_fft, dtype=torch.float32)
    return torch.istft(spec, n_fft, hop, window=window, center=True, length=length)


def masked_stems(wav, masks, n_fft, hop):
    """(K, samples) stems: each (F, T) soft mask of ``masks`` (K, F, T), summing to 1, on the clip's STFT."""
    spec = _stft(wav.float(), n_fft, hop)
    return torch.stack([_istft(spec * m, n_fft, hop, wav.shape[-1]) for m in masks])


class Separator:
    """``separate(wav, sample_rate, clip=None) -> (stems (K, samples), names)``; ``clip``: the manifest entry."""

    def __call__(self, wav, sample_rate, clip=None):
        if wav.ndim != 1:
            raise DataError(f"a separator takes one mono clip (samples,), got shape {tuple(wav.shape)}")
        stems, names = self.separate(wav, sample_rate, clip)
        return stems.to(wav.dtype), list(names)

    def separate(self, wav, sample_rate, clip):
        raise NotImplementedError


@SEPARATORS.register("oracle")
class OracleSeparator(Separator):
    """The generator's stems of the clip (``stems_folder/<clip_id>/<source>.wav``; ``noise`` left out)."""

    def __init__(self, stems_folder, left_out=("noise",)):
        self.stems_folder = Path(stems_folder)
        self.left_out = tuple(left_out)

    def separate(self, wav, sample_rate, clip):
        from common.data.audio import load_audio

        if clip is None or "clip_id" not in clip:
            raise ConfigError("the oracle separator needs each clip's manifest entry (its clip_id and segment)")
        folder = self.stems_folder / str(clip["clip_id"])
        paths = sorted(p for p in folder.glob("*.wav") if p.stem not in self.left_out)
        if not paths:
            raise DataNotFoundError(
                f"No stems in {folder}: the oracle separator reads the synthetic generator's stems; write them "
                "with `python tools/make_synthetic_gtzan.py OUT --write_stems`, or use another separator."
            )
        every = sorted(folder.glob("*.wav"))
        start, duration = float(clip.get("start_s", 0.0)), clip.get("duration_s")

        def read(path):
            stem = load_audio(
                path, sample_rate, start_s=start, duration_s=duration, normalize=False, warn_silence=False
            )
            return torch.nn.functional.pad(stem, (0, max(0, wav.shape[-1] - stem.shape[-1])))[: wav.shape[-1]]

        read_once = {p: read(p) for p in every}
        stems = torch.stack([read_once[p] for p in paths])
        total = torch.stack(list(read_once.values())).sum(0)  # the mix as written, before the loader's scaling
        scale = float((wav * total).sum() / (total * total).sum().clamp(min=1e-12))  # the loader's peak scaling
        return stems * scale, [p.stem for p in paths]


@SEPARATORS.register("hpss")
class HpssSeparator(Separator):
    """Harmonic and percussive stems (librosa's median-filtering HPSS with soft masks)."""

    def __init__(self, n_fft=2048, hop=512, kernel_size=31, power=2.0):
        self.n_fft, self.hop, self.kernel_size, self.power = int(n_fft), int(hop), kernel_size, float(power)

    def separate(self, wav, sample_rate, clip):
        import librosa

        spec = _stft(wav.float(), self.n_fft, self.hop).numpy()
        harmonic, percussive = librosa.decompose.hpss(spec, kernel_size=self.kernel_size, power=self.power)
        magnitude = np.abs(spec) + 1e-12
        masks = torch.from_numpy(np.stack([np.abs(harmonic), np.abs(percussive)]) / magnitude).float()
        masks = masks / masks.sum(0).clamp(min=1e-12)
        return masked_stems(wav, masks, self.n_fft, self.hop), ["harmonic", "percussive"]


@SEPARATORS.register("nmf")
class NmfSeparator(Separator):
    """``n_components`` NMF parts of the clip's magnitude spectrogram, each through its Wiener mask."""

    def __init__(self, n_components=4, n_fft=2048, hop=512, max_iter=200, seed=0):
        if n_components < 2:
            raise ConfigError(f"n_components={n_components}: NMF sources need at least 2 parts")
        self.n_components, self.n_fft, self.hop = int(n_components), int(n_fft), int(hop)
        self.max_iter, self.seed = int(max_iter), int(seed)

    def separate(self, wav, sample_rate, clip):
        from sklearn.decomposition import NMF

        magnitude = _stft(wav.float(), self.n_fft, self.hop).abs().T.numpy()  # (T, F)
        nmf = NMF(n_components=self.n_components, init="nndsvda", max_iter=self.max_iter, random_state=self.seed)
        activations = nmf.fit_transform(magnitude)  # (T, K)
        parts = np.einsum("tk,kf->kft", activations, nmf.components_) ** 2  # each part's power, (K, F, T)
        masks = torch.from_numpy(parts / np.maximum(parts.sum(0), 1e-20)).float()
        return masked_stems(wav, masks, self.n_fft, self.hop), [f"nmf_{k}" for k in range(self.n_components)]


@SEPARATORS.register("openunmix")
class OpenUnmixSeparator(Separator):
    """Open-Unmix stems (``model``: ``umxl`` or ``umxhq``; or ``separator``: a built ``openunmix`` Separator)."""

    def __init__(self, model="umxl", targets=None, separator=None, device="cpu", channels=2):
        self.model, self.targets, self.device = model, targets, device
        self.channels = int(channels)  # the pretrained models are stereo; the mono clip is fed to both
        self._separator = separator

    def separator(self):
        if self._separator is None:
            try:
                import openunmix
            except ImportError as exc:
                raise ConfigError("the openunmix separator needs the openunmix package: pip install openunmix") from exc
            if not hasattr(openunmix, self.model):
                raise ConfigError(f"openunmix has no pretrained model {self.model!r}; use umxl or umxhq")
            try:
                self._separator = getattr(openunmix, self.model)(targets=self.targets, device=self.device)
            except OSError as exc:  # urllib's URLError is an OSError
                raise DataNotFoundError(
                    f"Open-Unmix's {self.model} weights could not be downloaded ({exc}). They download once into "
                    "torch's hub cache (TORCH_HOME); run once with internet, or choose the hpss / nmf / oracle "
                    "separator."
                ) from exc
            self._separator.eval()
        return self._separator

    @torch.no_grad()
    def separate(self, wav, sample_rate, clip):
        separator = self.separator()
        rate = int(separator.sample_rate)
        audio = AF.resample(wav.float(), sample_rate, rate) if sample_rate != rate else wav.float()
        stereo = audio[None, None].expand(1, self.channels, -1).contiguous()
        estimates = separator(stereo)[0].mean(1)  # (K, samples): each target, back to mono
        if sample_rate != rate:
            estimates = AF.resample(estimates, rate, sample_rate)
        estimates = torch.nn.functional.pad(estimates, (0, max(0, wav.shape[-1] - estimates.shape[-1])))
        names = [*separator.target_models, *(["residual"] if separator.residual else [])]
        return estimates[:, : wav.shape[-1]], names


def make_separator(name, options=None):
    """A separator from its registered name and options (or an instance, returned as is)."""
    if isinstance(name, Separator):
        return name
    if name not in SEPARATORS:
        raise ConfigError(f"separator {name!r} is unknown; use one of {SEPARATORS.names()}")
    return SEPARATORS.build(name, **dict(options or {}))
