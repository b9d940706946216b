"""The one audio loader every recipe uses.

soundfile decodes (no torchcodec needed); any channel count is averaged to
mono, any rate resampled to the recipe's rate, optionally padded or cropped to
a fixed length and peak-normalised by the absolute maximum.
"""

import io
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from common.errors import AudioError, DataError


def read_audio_file(path, start_s=0.0, duration_s=None, data_bytes=None):
    """Decode ``path`` (or only ``duration_s`` seconds from ``start_s``) to a float32 (samples, channels) array.

    Returns (data, rate). Only the requested frames are read, so cutting 5 s
    out of an hour-long soundscape does not load the hour. Raises AudioError
    naming the file for anything that is not usable audio. ``data_bytes``: the
    file's content, already in memory (e.g. embedded in an Arrow table);
    ``path`` then only names it in messages.
    """
    path = Path(path)
    source = (lambda: io.BytesIO(data_bytes)) if data_bytes is not None else (lambda: str(path))
    if data_bytes is None and not path.is_file():
        raise AudioError(
            f"Audio file not found: {path}. Check --data_folder, or re-run the "
            "data preparation so the manifest matches the files on disk."
        )
    try:
        if start_s or duration_s is not None:
            rate = sf.info(source()).samplerate
            start = int(round(start_s * rate))
            frames = -1 if duration_s is None else int(round(duration_s * rate))
            data, rate = sf.read(source(), start=start, frames=frames, dtype="float32", always_2d=True)
        else:
            data, rate = sf.read(source(), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types for bad files
        raise AudioError(
            f"Cannot decode audio file {path} ({exc}). The file is corrupt or "
            "truncated: replace it with a good copy (or delete it and its "
            "metadata row)."
        ) from exc
    if data.shape[0] == 0:
        where = f" from {start_s:.2f} s" if start_s else ""
        raise AudioError(
            f"Audio file {path} has zero samples{where}. Replace it with a good copy or remove it and its metadata row."
        )
    if not np.isfinite(data).all():
        raise AudioError(
            f"Audio file {path} contains NaN or infinite samples. Re-export it "
            "from its source, or remove it and its metadata row."
        )
    return data, rate


def to_mono(data):
    """Average any number of channels to one: (samples, channels) -> (samples,)."""
    return data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]


def fix_length(sig, num_samples):
    """Zero-pad at the end or crop from the start to exactly ``num_samples``."""
    if sig.shape[-1] >= num_samples:
        return sig[..., :num_samples]
    return torch.nn.functional.pad(sig, (0, num_samples - sig.shape[-1]))


def peak_normalize(sig, eps=1e-8):
    """Divide by the absolute maximum; an all-silent clip stays all zeros."""
    peak = sig.abs().max()
    if peak <= eps:
        return sig
    return sig / peak


def load_audio(
    path, sample_rate, length_s=None, normalize=True, warn_silence=True, start_s=0.0, duration_s=None, data_bytes=None
):
    """Load ``path`` as a 1-D float32 tensor at ``sample_rate``.

    Arguments
    ---------
    path : str or Path
    sample_rate : int
        The recipe's rate; files at other rates are resampled.
    length_s : float or None
        If given, pad (zeros at the end) or crop to this many seconds.
    normalize : bool
        Peak-normalise by the absolute maximum.
    start_s, duration_s : float
        Read only this part of the file (e.g. a 5 s segment of a soundscape).
    data_bytes : bytes or None
        The file's content when it is already in memory (``path`` names it).
    """
    data, rate = read_audio_file(path, start_s, duration_s, data_bytes)
    sig = torch.from_numpy(np.ascontiguousarray(to_mono(data)))
    if rate != sample_rate:
        sig = AF.resample(sig, rate, sample_rate)
    if length_s is not None:
        sig = fix_length(sig, int(round(length_s * sample_rate)))
    if warn_silence and sig.abs().max() == 0:
        warnings.warn(f"Audio file {path} is silent (all zeros).", stacklevel=2)
    if normalize:
        sig = peak_normalize(sig)
    return sig.float()


def audio_info(path, fix):
    """``soundfile.info`` of ``path`` (its header only), or a DataError naming the file and ``fix`` when it is not
    audio or holds no samples: preparations call it on every file, so a corrupt one is named before training."""
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise DataError(f"{path} cannot be read as audio ({exc}). {fix}") from exc
    if info.frames == 0:
        raise DataError(f"{path} holds no samples. {fix}")
    return info
