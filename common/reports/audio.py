"""Listenable outputs: wav files, written atomically."""

import numpy as np

from common.io import atomic_path


def save_wav(path, wav, sample_rate):
    """Write a mono waveform (tensor or array) as 16-bit PCM, atomically; peak-limited to [-1, 1]."""
    import soundfile as sf

    data = wav.detach().cpu().numpy() if hasattr(wav, "detach") else np.asarray(wav)
    data = np.clip(np.nan_to_num(data.astype(np.float32)), -1.0, 1.0)
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(str(tmp), data, int(sample_rate), subtype="PCM_16", format="WAV")
