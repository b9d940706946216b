"""Where in frequency a model's relevance lies (Becker et al. 2018's analysis: gender decisions rest on low
frequencies, digit decisions on higher ones), for spectrogram and waveform models alike.

* ``waveform_relevance_on_grid``: a waveform model's relevance per sample, on a spectrogram's grid: each
  frame's relevance (its samples', weighted by the STFT window) shared among the frame's bins in proportion
  to the input's power in them. So a frame's total is kept, and within a frame it goes where the energy is
  (relevance of a sample cannot be split by frequency by itself).
* ``relevance_per_band``: each clip's share of positive relevance in each frequency band.
* ``share_in_interval``: each clip's share of (positive) relevance inside a time interval (the speech).
"""

import torch
import torch.nn.functional as F

DEFAULT_EDGES_HZ = (0.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0)


def waveform_relevance_on_grid(relevance, wavs, n_fft, hop):
    """(B, samples) relevance of ``wavs`` (B, samples) -> (B, T, n_fft // 2 + 1) on the centred Hann STFT grid
    (``common.features.hann_stft``'s frames: T = samples // hop + 1)."""
    from common.features import hann_stft

    half = n_fft // 2
    padded = F.pad(relevance, (half, half))  # zeros, not a reflection: no relevance outside the clip
    frames = padded.unfold(-1, n_fft, hop)[:, : wavs.shape[-1] // hop + 1]  # (B, T, n_fft)
    window = torch.hann_window(n_fft, dtype=relevance.dtype, device=relevance.device)
    window = window * hop / window.sum()  # overlapping frames together count each sample once (Hann overlap-add)
    per_frame = (frames * window).sum(-1)  # (B, T)
    power = hann_stft(wavs, n_fft, hop).pow(2).sum(-1)  # (B, T, F)
    share = power / power.sum(-1, keepdim=True).clamp(min=torch.finfo(power.dtype).tiny)
    return per_frame[..., None] * share


def relevance_per_band(relevance, bin_frequencies, edges_hz=DEFAULT_EDGES_HZ):
    """(B, T, F) relevance and (F,) bin frequencies -> (B, n_bands): the share of each clip's positive
    relevance in each band [lo, hi) (the last band includes its upper edge); NaN for a clip with none."""
    positive = relevance.clamp(min=0).sum(dim=1)  # (B, F)
    freqs = torch.as_tensor(bin_frequencies, dtype=positive.dtype)
    total = positive.sum(-1)
    bands = []
    for k, (lo, hi) in enumerate(zip(edges_hz[:-1], edges_hz[1:], strict=True)):
        last = k == len(edges_hz) - 2
        inside = (freqs >= lo) & ((freqs <= hi) if last else (freqs < hi))
        bands.append(positive[:, inside].sum(-1))
    shares = torch.stack(bands, dim=-1) / total[:, None]
    return torch.where(total[:, None] > 0, shares, torch.full_like(shares, float("nan")))


def share_in_interval(per_time, times, intervals):
    """(B, T) non-negative relevance over time at ``times`` (T,) seconds and ``intervals`` (B, 2) [start, end)
    seconds -> (B,): each clip's share of its relevance inside its interval (NaN for a clip with none).

    Becker et al.'s reading of a waveform model: its relevance should sit where the speech is, not in the
    silence around it. ``time_share`` of the same intervals is what a map flat in time gets.
    """
    times = torch.as_tensor(times, dtype=per_time.dtype)
    intervals = torch.as_tensor(intervals, dtype=per_time.dtype)
    inside = (times[None] >= intervals[:, :1]) & (times[None] < intervals[:, 1:])
    total = per_time.sum(-1)
    share = (per_time * inside).sum(-1) / total
    return torch.where(total > 0, share, torch.full_like(share, float("nan")))


def time_share(times, intervals):
    """(B,): the share of ``times`` inside each clip's interval."""
    return share_in_interval(torch.ones(len(intervals), len(times)), times, intervals)
