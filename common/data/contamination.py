"""Contaminated inputs: how explanations hold up out of distribution (L-MAC, Paissan et al. 2024).

A condition turns a clean clip into ``target_part + contaminant``:

* ``clean``: nothing added (the in-distribution reference);
* ``mixture``: ``w_target * clip + w_other * another clip of a different
  class`` (0.8 / 0.2 by default, as in the paper);
* ``white_noise`` at an SNR in dB;
* ``noise_folder`` at an SNR: clips from a local folder of noise or speech
  (e.g. WHAM!'s ``tt/`` folder where a user has it).

Every choice (partner clip, noise file, offset, white-noise seed) is a
function of the clip id, so two runs contaminate a clip the same way. The
target part is kept: it gives an ideal binary mask and a reference wav, so
localization and SI-SNR can be measured even on real data.
"""

import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from common.data.audio import load_audio
from common.errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def stable_seed(text):
    """A seed from a string that is the same in every process (unlike ``hash``)."""
    return zlib.crc32(str(text).encode("utf-8"))


def mix(target, other, weights=(0.8, 0.2)):
    """``weights[0] * target + weights[1] * other`` -> (mixture, target part)."""
    target_part = weights[0] * target
    return target_part + weights[1] * other, target_part


def add_at_snr(target, noise, snr_db, source="noise"):
    """Scale ``noise`` so that 10 log10(P_target / P_noise) = ``snr_db`` -> (mixture, target)."""
    p_target = target.pow(2).mean(dim=-1, keepdim=True)
    p_noise = noise.pow(2).mean(dim=-1, keepdim=True)
    if bool((p_noise <= 0).any()):
        raise DataError(f"The {source} is silent, so no SNR can be set; use another noise clip or folder.")
    scale = torch.sqrt(p_target / (p_noise * 10.0 ** (snr_db / 10.0)))
    return target + scale * noise, target


def fit_length(sig, n_samples, offset=0):
    """Tile ``sig`` if shorter than ``n_samples``, then take ``n_samples`` from ``offset`` (wrapping)."""
    reps = -(-(n_samples + offset) // sig.shape[-1])
    return sig.repeat(reps)[offset : offset + n_samples] if reps > 1 else sig[offset : offset + n_samples]


class NoiseFolder:
    """The audio files under ``folder`` (recursively), read at ``sample_rate``, mono."""

    def __init__(self, folder, sample_rate):
        self.folder = Path(folder)
        self.sample_rate = sample_rate
        if not self.folder.is_dir():
            raise DataError(
                f"Noise folder {self.folder} does not exist; pass --noise_folder with a folder of noise or speech "
                f"clips ({', '.join(AUDIO_SUFFIXES)}), e.g. WHAM!'s tt/ folder."
            )
        self.files = sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not self.files:
            raise DataError(f"No {'/'.join(AUDIO_SUFFIXES)} files under noise folder {self.folder}.")

    def __len__(self):
        return len(self.files)

    def clip_for(self, key, n_samples):
        """A noise segment of ``n_samples`` chosen by ``key`` (file and offset)."""
        seed = stable_seed(key)
        path = self.files[seed % len(self.files)]
        noise = load_audio(path, self.sample_rate, normalize=False, warn_silence=False)
        offset = (seed // len(self.files)) % max(1, noise.shape[-1])
        return fit_length(noise, n_samples, offset)


@dataclass(frozen=True)
class Condition:
    """One evaluation condition; ``name`` labels its row in the table."""

    kind: str
    snr_db: float = None
    weights: tuple = (0.8, 0.2)

    KINDS = ("clean", "mixture", "white_noise", "noise_folder")

    def __post_init__(self):
        if self.kind not in self.KINDS:
            raise DataError(f"Unknown contamination {self.kind!r}; choose from {', '.join(self.KINDS)}.")
        if self.kind in ("white_noise", "noise_folder") and self.snr_db is None:
            raise DataError(f"Contamination {self.kind!r} needs an SNR in dB.")

    @property
    def name(self):
        if self.kind == "mixture":
            return f"mixture {self.weights[0]:g}/{self.weights[1]:g}"
        if self.snr_db is not None:
            return f"{self.kind.replace('_', ' ')} {self.snr_db:g} dB"
        return self.kind

    @property
    def slug(self):
        return self.name.replace(" ", "_").replace("/", "-")

    def apply(self, clip_id, sig, partner_sig=None, noise_folder=None):
        """(contaminated, target part) for one clip (1-D tensors)."""
        if self.kind == "clean":
            return sig, sig
        if self.kind == "mixture":
            if partner_sig is None:
                raise DataError("A mixture needs a partner clip of another class in the same split.")
            return mix(sig, fit_length(partner_sig, sig.shape[-1]), self.weights)
        if self.kind == "white_noise":
            generator = torch.Generator().manual_seed(stable_seed(clip_id))
            noise = torch.randn(sig.shape[-1], generator=generator, dtype=sig.dtype)
            return add_at_snr(sig, noise, self.snr_db, "white noise")
        if noise_folder is None:
            raise DataError("The noise_folder contamination needs --noise_folder.")
        noise = noise_folder.clip_for(clip_id, sig.shape[-1]).to(sig.dtype)
        return add_at_snr(sig, noise, self.snr_db, f"noise clip chosen for {clip_id} in {noise_folder.folder}")


def parse_conditions(kinds, snrs=(0.0,), weights=(0.8, 0.2)):
    """``["clean", "mixture", "white_noise"]`` x SNRs -> Conditions (noise kinds get one per SNR)."""
    conditions = []
    for kind in kinds:
        if kind in ("white_noise", "noise_folder"):
            conditions += [Condition(kind, float(snr)) for snr in snrs]
        else:
            conditions.append(Condition(kind, weights=tuple(float(w) for w in weights)))
    return conditions


def partners_of_other_classes(entries):
    """For each clip id, a clip of a different class: ids in a stable order, each paired with
    the next one (cyclically) whose class differs. ``entries``: {id: class}."""
    ids = sorted(entries)
    partners = {}
    for k, clip in enumerate(ids):
        for step in range(1, len(ids)):
            other = ids[(k + step) % len(ids)]
            if entries[other] != entries[clip]:
                partners[clip] = other
                break
        else:
            raise DataError("A mixture needs clips of at least two classes in the evaluated split.")
    return partners


def contaminate_batch(wavs, condition, noise_folder=None, ids=None):
    """Batch version for training (L-MAC fine-tuning): mixture partners are the batch rolled by one.

    Returns (contaminated, target parts), both (B, samples).
    """
    ids = list(ids) if ids is not None else [str(k) for k in range(wavs.shape[0])]
    partners = torch.roll(wavs, shifts=1, dims=0)
    out = [
        condition.apply(clip, wavs[k], partner_sig=partners[k], noise_folder=noise_folder) for k, clip in enumerate(ids)
    ]
    return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])
