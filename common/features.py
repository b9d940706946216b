"""Front-ends shared by every recipe, and the way back to audio.

Forward: waveform -> STFT -> magnitude -> log1p (optionally through a mel
filterbank first), as in SpeechBrain's ESC-50 recipes (16 kHz, n_fft 1024,
hop 11.6099 ms, window 23.2199 ms).
Backward (listenable explanations): mask -> masked magnitude -> original
phase -> ISTFT -> waveform.
"""

import torch
from speechbrain.processing.features import ISTFT, STFT, Filterbank, spectral_magnitude


def n_frames(sample_rate, signal_length_s, hop_length):
    """Frames of the (centred) STFT of a clip, as SpeechBrain's STFT computes them (hop in ms)."""
    hop = int(round(sample_rate / 1000.0 * hop_length))
    return int(round(sample_rate * signal_length_s)) // hop + 1


class Log1pSpectrogram(torch.nn.Module):
    """log1p of the STFT magnitude (optionally of a mel filterbank of it).

    Output: (batch, time, freq). ``stft(wavs)`` exposes the complex STFT for
    the inverse path.
    """

    def __init__(
        self,
        sample_rate=16000,
        n_fft=1024,
        hop_length=11.6099,
        win_length=23.2199,
        spec_mag_power=0.5,
        n_mels=None,
    ):
        super().__init__()
        self.sample_rate = sample_rate
        self.spec_mag_power = spec_mag_power
        self.compute_stft = STFT(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, win_length=win_length)
        self.compute_istft = ISTFT(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, win_length=win_length)
        self.compute_fbank = (
            Filterbank(n_mels=n_mels, n_fft=n_fft, sample_rate=sample_rate, log_mel=False) if n_mels else None
        )

    @property
    def n_bins(self):
        return self.compute_fbank.n_mels if self.compute_fbank is not None else self.compute_stft.n_fft // 2 + 1

    def stft(self, wavs):
        """Complex STFT in SpeechBrain's layout (batch, time, freq, 2)."""
        return self.compute_stft(wavs)

    def magnitude(self, stft):
        return spectral_magnitude(stft, power=self.spec_mag_power)

    def forward(self, wavs):
        mag = self.magnitude(self.stft(wavs))
        if self.compute_fbank is not None:
            mag = self.compute_fbank(mag)
        return torch.log1p(mag)

    def log_linear_magnitude(self, stft):
        """log1p of the magnitude on the linear STFT grid, whatever the model's grid (NMF works there)."""
        return torch.log1p(self.magnitude(stft))

    def _filterbank_matrix(self, device, dtype):
        """(n_stft, n_mels): the filterbank is linear (log_mel=False), so push the identity through it."""
        n_stft = self.compute_stft.n_fft // 2 + 1
        with torch.no_grad():
            return self.compute_fbank(torch.eye(n_stft, device=device)[None])[0].to(dtype)

    def mask_to_stft_grid(self, mask):
        """A mask on this front-end's grid -> a mask on the linear STFT grid.

        Mel masks are spread back over the linear bins each band covers
        (weighted by the filterbank), so a band's mask value applies to the
        frequencies it was computed from.
        """
        if self.compute_fbank is None:
            return mask
        fbank = self._filterbank_matrix(mask.device, mask.dtype)
        return (mask @ fbank.T) / fbank.sum(dim=1).clamp(min=1e-8)

    def stft_mask_to_grid(self, mask):
        """A linear-STFT-grid mask -> this front-end's grid (a mel band gets the filter-weighted mean)."""
        if self.compute_fbank is None:
            return mask
        fbank = self._filterbank_matrix(mask.device, mask.dtype)
        return (mask @ fbank) / fbank.sum(dim=0).clamp(min=1e-8)

    def mask_to_wav(self, mask, stft, length=None):
        """Listenable version of a (batch, time, freq) STFT-grid mask.

        The mask scales the magnitude and the original phase is kept, so the
        result is the input signal filtered by the mask.
        """
        if mask.shape != stft.shape[:-1]:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match the STFT grid {tuple(stft.shape[:-1])}")
        return self.compute_istft(stft * mask.unsqueeze(-1), sig_length=length)
