"""Front-ends shared by every recipe, and the way back to audio.

Forward: waveform -> STFT -> magnitude -> log1p (optionally through a mel
filterbank first), as in SpeechBrain's ESC-50 recipes (16 kHz, n_fft 1024,
hop 11.6099 ms, window 23.2199 ms).
Backward (listenable explanations): mask -> masked magnitude -> original
phase -> ISTFT -> waveform.

Every front-end implements ``FrontEnd``: callers ask it (its STFT grid, the
way back to audio, its silence, its dB scale, its bins' frequencies, its
frame rate) instead of testing which class it is or which methods it has.
"""

import abc
import math

import torch
from speechbrain.processing.features import ISTFT, STFT, Filterbank, spectral_magnitude

from common.errors import ConfigError, ToolkitError


def keep_masked(X, keep, silence):
    """X where ``keep`` is 1, ``silence`` where it is 0, linear in between.

    What "removing evidence" means on any front end: for a log1p spectrogram
    (silence 0) it is ``keep * X``; for a z-scored dB one it fills with the
    clip's no-energy level, not with 0 (which is the mean level there).
    ``silence``: a number or a tensor broadcastable to X, e.g. (B, 1, 1).
    """
    return silence + keep * (X - silence)


def silence_of(classifier, X):
    """(B, 1, 1): what a bin with no energy is in each clip of X, as ``classifier.silence(X)`` declares it.

    A classifier may also declare a constant (``silence = 0.0``); one that
    declares nothing gets a ConfigError, since nothing can be removed from
    its inputs without knowing what "nothing" is.
    """
    declared = getattr(classifier, "silence", None)
    value = declared(X) if callable(declared) else declared
    if value is None:
        raise ConfigError(
            f"{type(classifier).__name__} declares no `silence` (the value a spectrogram bin with no energy "
            "takes), which every removal of evidence fills with; give its front end a `silence(X)` method"
        )
    value = torch.as_tensor(value, dtype=X.dtype, device=X.device)
    return value.reshape(-1, 1, 1).expand(X.shape[0], 1, 1) if value.numel() == 1 else value.reshape(-1, 1, 1)


def n_frames(sample_rate, signal_length_s, hop_length):
    """Frames of the (centred) STFT of a clip, as SpeechBrain's STFT computes them (hop in ms)."""
    hop = int(round(sample_rate / 1000.0 * hop_length))
    return int(round(sample_rate * signal_length_s)) // hop + 1


def hann_stft(wavs, n_fft, hop):
    """torch's centred STFT with a Hann window, as (B, T, n_fft // 2 + 1, 2) (SpeechBrain's layout)."""
    window = torch.hann_window(n_fft, device=wavs.device, dtype=wavs.dtype)
    return torch.view_as_real(torch.stft(wavs, n_fft, hop, window=window, return_complex=True)).transpose(1, 2)


def hann_istft(stft, n_fft, hop, length=None):
    """The inverse of ``hann_stft``."""
    spec = torch.view_as_complex(stft.transpose(1, 2).contiguous())
    return torch.istft(spec, n_fft, hop, window=torch.hann_window(n_fft, device=spec.device), length=length)


# -- dB scales: a front-end's values <-> dB of power ---------------------------------------
class DecibelScale:
    """X = (dB - mean) / std: a dB spectrogram, optionally z-scored (MelDbSpectrogram)."""

    def __init__(self, mean=0.0, std=1.0):
        if std <= 0:
            raise ToolkitError(f"DecibelScale needs a positive std, got {std}")
        self.mean, self.std = float(mean), float(std)

    def to_db(self, X):
        return X * self.std + self.mean

    def from_db(self, db):
        return (db - self.mean) / self.std


class Log1pMagnitudeScale:
    """X = log1p(P ** spec_mag_power), P the power spectrum (Log1pSpectrogram).

    Bins whose power is 0 (digital silence) have no dB value; they are read as
    ``floor_db`` so every clip has finite features.
    """

    def __init__(self, spec_mag_power=0.5, floor_db=-160.0):
        self.spec_mag_power, self.floor_db = float(spec_mag_power), float(floor_db)

    def to_db(self, X):
        magnitude = torch.expm1(X).clamp(min=10.0 ** (self.floor_db * self.spec_mag_power / 10.0))
        return (10.0 / self.spec_mag_power) * torch.log10(magnitude)

    def from_db(self, db):
        return torch.log1p(10.0 ** (db * self.spec_mag_power / 10.0))


# -- the interface ---------------------------------------------------------------------------
class FrontEnd(torch.nn.Module, metaclass=abc.ABCMeta):
    """What every front-end implements: waveforms (B, samples) -> X (B, T, F), and back.

    Attributes: ``sample_rate`` (Hz). The STFT grid: ``n_fft``, ``hop``
    (samples between frames), ``stft(wavs)`` (B, T, n_fft // 2 + 1, 2) in
    SpeechBrain's layout; X's grid: ``n_bins`` (F), ``n_frames(n_samples)``
    (T), ``frame_rate`` (frames per second), ``bin_frequencies()`` (F,) Hz,
    ``on_stft_grid`` (whether X's bins are the STFT's). Masks:
    ``mask_to_stft_grid`` / ``stft_mask_to_grid`` move a mask between X's grid
    and the STFT's, ``mask_to_wav(stft_mask, stft, length)`` is the input
    filtered by an STFT-grid mask (original phase). ``silence(X)`` (B, 1, 1):
    what a bin with no energy is in each clip. ``to_db`` / ``from_db``: X <->
    dB of power.
    """

    sample_rate: int

    @property
    @abc.abstractmethod
    def n_fft(self):
        """FFT size of the STFT grid."""

    @property
    @abc.abstractmethod
    def hop(self):
        """Samples between consecutive frames."""

    @property
    @abc.abstractmethod
    def n_bins(self):
        """F: frequency bins of X."""

    @property
    @abc.abstractmethod
    def on_stft_grid(self):
        """Whether X's bins are the STFT's (no mel filterbank between them)."""

    @property
    def frame_rate(self):
        """Frames of X per second."""
        return self.sample_rate / self.hop

    def n_frames(self, n_samples):
        """T of the (centred) STFT of ``n_samples`` samples."""
        return n_samples // self.hop + 1

    @abc.abstractmethod
    def forward(self, wavs):
        """(B, samples) -> X (B, T, F)."""

    @abc.abstractmethod
    def stft(self, wavs):
        """Complex STFT (B, T, n_fft // 2 + 1, 2)."""

    @abc.abstractmethod
    def bin_frequencies(self):
        """(F,) centre frequency (Hz) of each bin of X, ascending."""

    @abc.abstractmethod
    def mask_to_stft_grid(self, mask):
        """(B, T, F) mask on X's grid -> (B, T, n_fft // 2 + 1) on the STFT grid."""

    @abc.abstractmethod
    def stft_mask_to_grid(self, mask):
        """(B, T, n_fft // 2 + 1) mask on the STFT grid -> (B, T, F) on X's grid."""

    def mask_to_wav(self, mask, stft, length=None):
        """The input filtered by a (B, T, n_fft // 2 + 1) STFT-grid mask, with its original phase."""
        if mask.shape != stft.shape[:-1]:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match the STFT grid {tuple(stft.shape[:-1])}")
        return self._istft(stft * mask.unsqueeze(-1), length)

    @abc.abstractmethod
    def _istft(self, stft, length):
        """Inverse of ``stft``."""

    @abc.abstractmethod
    def silence(self, X):
        """(B, 1, 1): what a bin holding no energy is in each clip of X."""

    @abc.abstractmethod
    def to_db(self, X):
        """X -> dB of power, same shape."""

    @abc.abstractmethod
    def from_db(self, db):
        """dB of power -> X, same shape."""

    def parts_to_db(self, parts):
        """(P, samples) parts of one mixture (their sum) -> (P, T, F) dB of each part as it is in the mixture.

        Here each part on its own: right for front ends that do nothing to a clip before its STFT but
        fixed scaling. One that scales each clip by its own statistics overrides it (BirdNET's)."""
        return self.to_db(self(parts))


class Log1pSpectrogram(FrontEnd):
    """log1p of the STFT magnitude (optionally of a mel filterbank of it).

    Output: (batch, time, freq). ``stft(wavs)`` exposes the complex STFT for
    the inverse path. ``silence(X)`` = log1p(0) = 0: a bin holding no energy.
    """

    def silence(self, X):
        """(B, 1, 1) zeros: log1p of no energy."""
        return X.new_zeros(X.shape[0], 1, 1)

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

    @property
    def n_fft(self):
        return self.compute_stft.n_fft

    @property
    def hop(self):
        return self.compute_stft.hop_length  # samples (the constructor's hop_length is in ms)

    @property
    def on_stft_grid(self):
        return self.compute_fbank is None

    def bin_frequencies(self):
        """The linear bins' frequencies, or the mel filters' centres."""
        if self.compute_fbank is not None:
            return self.compute_fbank.f_central.detach()
        return torch.linspace(0.0, self.sample_rate / 2, self.n_fft // 2 + 1)

    def to_db(self, X):
        return Log1pMagnitudeScale(self.spec_mag_power).to_db(X)

    def from_db(self, db):
        return Log1pMagnitudeScale(self.spec_mag_power).from_db(db)

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

    def _istft(self, stft, length):
        return self.compute_istft(stft, sig_length=length)


class MelDbSpectrogram(FrontEnd):
    """AudioProtoPNet's / BirdSet's front-end: power STFT -> mel -> dB (top_db per example) -> z-score.

    Defaults are the paper's: 32 kHz, n_fft 2048, hop 256, 256 mel bands,
    ``top_db`` 80 below each example's own maximum, normalised with the XCL
    training statistics (mean -13.369 dB, std 13.162 dB). Output (batch, time,
    mel), like every front-end here.

    ``silence(X)`` is what a bin holding no energy becomes in each clip: the
    clip's floor, ``top_db`` below its own maximum (a clip's dB are floored
    there, so that is what its silent bins hold; 5.3 z-units below the
    maximum with GTZAN's std of 15), and never below the power floor
    (``POWER_FLOOR``, -100 dB), which is what a wholly silent clip gives.
    It is not 0: 0 is the mean level. Without ``top_db`` it is the power floor.
    """

    POWER_FLOOR = 1e-10

    def __init__(
        self, sample_rate=32000, n_fft=2048, hop_length=256, n_mels=256, top_db=80.0, mean=-13.369, std=13.162
    ):
        super().__init__()
        import torchaudio

        self.sample_rate = sample_rate
        self._n_fft = n_fft
        self.hop_length = hop_length
        self.top_db = top_db
        self.mean = mean
        self.std = std
        self.spectrogram = torchaudio.transforms.Spectrogram(n_fft=n_fft, hop_length=hop_length, power=2.0)
        self.mel_scale = torchaudio.transforms.MelScale(n_mels=n_mels, sample_rate=sample_rate, n_stft=n_fft // 2 + 1)

    @property
    def n_bins(self):
        return self.mel_scale.n_mels

    @property
    def n_fft(self):
        return self._n_fft

    @property
    def hop(self):
        return self.hop_length

    @property
    def on_stft_grid(self):
        return False

    def bin_frequencies(self):
        """The mel filters' centres."""
        return self.mel_band_edges_hz()[1:-1]

    def to_db(self, X):
        return DecibelScale(self.mean, self.std).to_db(X)

    def from_db(self, db):
        return DecibelScale(self.mean, self.std).from_db(db)

    def silence(self, X):
        """(B, 1, 1): each clip's no-energy level in z units (its ``top_db`` floor, or the power floor)."""
        absolute = (10.0 * math.log10(self.POWER_FLOOR) - self.mean) / self.std
        if self.top_db is None:
            return X.new_full((X.shape[0], 1, 1), absolute)
        floor = X.amax(dim=(1, 2), keepdim=True) - self.top_db / self.std
        return floor.clamp(min=absolute)

    def power_to_db(self, power):
        """10 log10, floored ``top_db`` below each example's maximum (not the batch's)."""
        db = 10.0 * torch.log10(power.clamp(min=self.POWER_FLOOR))
        if self.top_db is not None:
            floor = db.amax(dim=tuple(range(1, db.ndim)), keepdim=True) - self.top_db
            db = torch.maximum(db, floor)
        return db

    def forward(self, wavs):
        mel = self.mel_scale(self.spectrogram(wavs))  # (B, mel, time)
        return ((self.power_to_db(mel) - self.mean) / self.std).transpose(1, 2)

    @torch.no_grad()
    def db_statistics(self, wavs_iterable):
        """Mean and std (dB) of the un-normalised spectrograms of some waveforms, for ``mean`` / ``std``.

        The default statistics are XCL's; a data set recorded at another level
        (synthetic audio, another corpus) needs its own. Its z-scored input
        then has no large constant offset, which a ConvNeXt's per-pixel channel
        LayerNorm would otherwise turn into a near-constant stem output.
        """
        total, total_sq, count = 0.0, 0.0, 0
        for wav in wavs_iterable:
            mel = self.mel_scale(self.spectrogram(torch.as_tensor(wav, dtype=torch.float32).reshape(1, -1)))
            db = self.power_to_db(mel).double()
            total, total_sq, count = total + db.sum().item(), total_sq + (db**2).sum().item(), count + db.numel()
        if count == 0:
            raise ValueError("db_statistics needs at least one waveform")
        mean = total / count
        return mean, math.sqrt(max(total_sq / count - mean**2, 0.0))

    def mel_band_edges_hz(self):
        """(n_mels + 2,) corner frequencies of the triangular filters (torchaudio's HTK mel scale, 0 .. sr/2)."""
        top = 2595.0 * math.log10(1.0 + (self.sample_rate / 2) / 700.0)
        mels = torch.linspace(0.0, top, self.n_bins + 2)
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)

    # -- the way back to audio (same contract as Log1pSpectrogram) ------------------
    def stft(self, wavs):
        """Complex STFT as (batch, time, freq, 2), SpeechBrain's layout."""
        return hann_stft(wavs, self.n_fft, self.hop_length)

    def mask_to_stft_grid(self, mask):
        """A (B, T, mel) mask -> (B, T, n_fft/2+1), each linear bin weighted by the mel filters covering it."""
        fb = self.mel_scale.fb.to(mask.device, mask.dtype)  # (n_stft, n_mels)
        return (mask @ fb.T) / fb.sum(dim=1).clamp(min=1e-8)

    def stft_mask_to_grid(self, mask):
        """A (B, T, n_fft/2+1) mask -> (B, T, mel), each band the filter-weighted mean of its linear bins."""
        fb = self.mel_scale.fb.to(mask.device, mask.dtype)  # (n_stft, n_mels)
        return (mask @ fb) / fb.sum(dim=0).clamp(min=1e-8)

    def _istft(self, stft, length):
        return hann_istft(stft, self.n_fft, self.hop_length, length)

    def box_to_wav(self, wav, frame0, frame1, mel0, mel1):
        """The part of ``wav`` (1-D) inside a spectrogram box: frames [frame0, frame1), mel bands [mel0, mel1).

        Cut out in time and band-passed to the span of the bands' filters
        (STFT masking with the original phase), so one can listen to the
        region a prototype matched.
        """
        edges = self.mel_band_edges_hz()
        f_lo, f_hi = float(edges[mel0]), float(edges[min(mel1 + 1, len(edges) - 1)])
        stft = self.stft(wav[None])
        freqs = torch.linspace(0, self.sample_rate / 2, stft.shape[2], device=wav.device)
        mask = torch.zeros(stft.shape[:-1], device=wav.device)
        mask[:, frame0:frame1, (freqs >= f_lo) & (freqs <= f_hi)] = 1.0
        out = self.mask_to_wav(mask, stft, length=wav.shape[-1])[0]
        return out[frame0 * self.hop_length : min(frame1 * self.hop_length, wav.shape[-1])]


class LinearDbSpectrogram(FrontEnd):
    """Becker et al. (2018)'s AlexNet input: the magnitude STFT (Hann window) in dB on the linear bins,
    floored ``top_db`` below each clip's own maximum (librosa's ``amplitude_to_db(ref=np.max)`` less the
    reference, which the network subtracts itself: ``common.models.audiomnist.RelativeToMax``).

    The paper's grid at 8 kHz: n_fft 455, hop 35 (420 samples overlap), a 1 s clip giving 229 frames x 228
    bins (the authors crop scipy's STFT to 227 x 227; AlexNet's first layer, 11 x 11 with stride 4, maps
    both to the same 55 x 55). X is dB of power (20 log10 of the magnitude); ``silence`` is the clip's
    floor, never below the amplitude floor (-200 dB), which is what a wholly silent clip gives.
    """

    AMPLITUDE_FLOOR = 1e-10

    def __init__(self, sample_rate=8000, n_fft=455, hop_length=35, top_db=80.0):
        super().__init__()
        if top_db is None or top_db <= 0:
            raise ConfigError(f"LinearDbSpectrogram needs a positive top_db, got {top_db}")
        self.sample_rate = int(sample_rate)
        self._n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.top_db = float(top_db)

    @property
    def n_bins(self):
        return self._n_fft // 2 + 1

    @property
    def n_fft(self):
        return self._n_fft

    @property
    def hop(self):
        return self.hop_length

    @property
    def on_stft_grid(self):
        return True

    def bin_frequencies(self):
        return torch.arange(self.n_bins) * (self.sample_rate / self._n_fft)

    def _floor(self, db):
        """(B, 1, 1): ``top_db`` below each clip's maximum, never below the amplitude floor."""
        absolute = 20.0 * math.log10(self.AMPLITUDE_FLOOR)
        return (db.amax(dim=(1, 2), keepdim=True) - self.top_db).clamp(min=absolute)

    def forward(self, wavs):
        stft = self.stft(wavs)
        db = 20.0 * torch.log10(torch.sqrt(stft.pow(2).sum(-1)).clamp(min=self.AMPLITUDE_FLOOR))
        return torch.maximum(db, self._floor(db))

    def to_db(self, X):
        return X

    def from_db(self, db):
        return db

    def silence(self, X):
        return self._floor(X)

    def stft(self, wavs):
        return hann_stft(wavs, self._n_fft, self.hop_length)

    def mask_to_stft_grid(self, mask):
        return mask

    def stft_mask_to_grid(self, mask):
        return mask

    def _istft(self, stft, length):
        return hann_istft(stft, self._n_fft, self.hop_length, length)
