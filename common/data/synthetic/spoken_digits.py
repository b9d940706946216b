"""Synthetic spoken digits in AudioMNIST's layout, spoken by Debian's ``espeak-ng`` (offline data for tests and demos).

``make_spoken_digits(out_dir, n_speakers, repetitions)`` writes
``out_dir/data/<speaker>/<digit>_<speaker>_<index>.wav`` (48 kHz mono, as
AudioMNIST) and ``out_dir/data/audioMNIST_meta.txt`` with the metadata keys of
the real data set, and ``out_dir/speech_intervals.json``, where each recording's speech starts and ends
(seconds; the rest is silence): the ground truth that the real data set does not have. A speaker is a voice: a gender, an espeak-ng variant of that
gender (``m1``-``m8``, ``f1``-``f5``), an English accent (``en-us``, ``en-gb``,
...), and a base pitch and speed; each repetition varies pitch, speed and level
a little and sits at a random place in a short silence, as a recording would.
Female voices are pitched higher (espeak-ng's ``-p`` 55-85 against 20-45), so
gender is audible in the low frequencies, as the paper found its models use.
Deterministic by seed (espeak-ng itself is deterministic).
"""

import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from common.errors import DataError
from common.io import atomic_path, atomic_write_text

SAMPLE_RATE = 48000  # AudioMNIST's rate
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VARIANTS = {"male": tuple(f"m{k}" for k in range(1, 9)), "female": tuple(f"f{k}" for k in range(1, 6))}
PITCH = {"male": (20, 45), "female": (55, 85)}  # espeak-ng -p (0-99)
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
ESPEAK = "espeak-ng"
SPEECH_INTERVALS = "speech_intervals.json"  # beside data/: each recording's [start, end] of speech, in seconds


def espeak_available():
    return shutil.which(ESPEAK) is not None


def speak(text, voice, pitch, speed, amplitude=100):
    """(waveform float32, rate) of ``text`` spoken by espeak-ng with ``voice`` (e.g. ``en-us+f3``)."""
    if not espeak_available():
        raise DataError(f"{ESPEAK} is not installed; install Debian's espeak-ng (apt-get install espeak-ng).")
    cmd = [
        ESPEAK,
        "--stdout",
        "-v",
        voice,
        "-p",
        str(int(pitch)),
        "-s",
        str(int(speed)),
        "-a",
        str(int(amplitude)),
        text,
    ]
    done = subprocess.run(cmd, capture_output=True, check=False)
    if done.returncode != 0 or not done.stdout:
        raise DataError(f"{' '.join(cmd)} failed: {done.stderr.decode(errors='replace').strip()}")
    data, rate = sf.read(io.BytesIO(done.stdout), dtype="float32")
    return (data.mean(axis=1) if data.ndim == 2 else data), rate


def trim_silence(x, floor_db=-50.0):
    """``x`` without the leading and trailing samples more than ``floor_db`` below its peak (espeak-ng pads)."""
    loud = np.flatnonzero(np.abs(x) > np.abs(x).max() * 10 ** (floor_db / 20)) if np.abs(x).max() > 0 else []
    return x[loud[0] : loud[-1] + 1] if len(loud) else x


def _resample(x, rate, target):
    """Band-limited resampling (torchaudio's sinc interpolation)."""
    import torch
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(np.ascontiguousarray(x)), rate, target).numpy()


def speaker_voices(n_speakers, seed=0, female_fraction=0.5):
    """{speaker number (1..n): its voice}; round(n x ``female_fraction``) of them female, in a seeded order."""
    rng = np.random.default_rng([seed, 0])
    n_female = int(round(n_speakers * female_fraction))
    genders = ["female" if k < n_female else "male" for k in range(n_speakers)]
    genders = [genders[i] for i in rng.permutation(n_speakers)]
    voices = {}
    for number, gender in enumerate(genders, start=1):
        voices[number] = {
            "gender": gender,
            "variant": str(rng.choice(VARIANTS[gender])),
            "accent": str(rng.choice(ACCENTS)),
            "pitch": int(rng.integers(*PITCH[gender])),
            "speed": int(rng.integers(150, 200)),
            "age": int(rng.integers(20, 60)),
        }
    return voices


def make_spoken_digits(out_dir, n_speakers=12, repetitions=5, seed=0, female_fraction=0.5, max_s=0.9):
    """Write the spoken digits of ``n_speakers`` x 10 digits x ``repetitions``; returns the data folder.

    Each recording is at most ``max_s`` seconds (AudioMNIST's are under 1 s, which the paper's 1 s input
    assumes); a longer utterance is an error naming the voice (lower the speed range).
    """
    if n_speakers < 1 or repetitions < 1:
        raise DataError(f"n_speakers={n_speakers} and repetitions={repetitions} must be >= 1")
    folder = Path(out_dir) / "data"
    voices = speaker_voices(n_speakers, seed, female_fraction)
    meta, intervals = {}, {}
    for number, voice in voices.items():
        speaker = f"{number:02d}"
        (folder / speaker).mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, 1, number])
        for digit, word in enumerate(DIGIT_WORDS):
            for index in range(repetitions):
                wav, rate = speak(
                    word,
                    f"{voice['accent']}+{voice['variant']}",
                    pitch=np.clip(voice["pitch"] + rng.integers(-5, 6), 0, 99),
                    speed=voice["speed"] + rng.integers(-10, 11),
                    amplitude=rng.integers(70, 130),
                )
                wav = _resample(trim_silence(wav), rate, SAMPLE_RATE)
                lead = int(rng.uniform(0.01, 0.05) * SAMPLE_RATE)
                intervals[f"{digit}_{speaker}_{index}"] = [lead / SAMPLE_RATE, (lead + len(wav)) / SAMPLE_RATE]
                wav = np.concatenate([np.zeros(lead, np.float32), wav, np.zeros(int(0.02 * SAMPLE_RATE), np.float32)])
                if len(wav) > max_s * SAMPLE_RATE:
                    raise DataError(
                        f"speaker {speaker} ({voice}) says {word!r} in {len(wav) / SAMPLE_RATE:.2f} s > {max_s} s"
                    )
                path = folder / speaker / f"{digit}_{speaker}_{index}.wav"
                with atomic_path(path, suffix=".wav") as tmp:
                    sf.write(tmp, wav.astype(np.float32), SAMPLE_RATE, subtype="PCM_16", format="WAV")
        meta[speaker] = {
            "accent": voice["accent"],
            "age": str(voice["age"]),
            "gender": voice["gender"],
            "native speaker": "synthetic",
            "origin": f"espeak-ng voice {voice['accent']}+{voice['variant']}, pitch {voice['pitch']}, speed {voice['speed']}",
            "recordingdate": "synthetic",
            "recordingroom": "synthetic",
        }
    atomic_write_text(folder / "audioMNIST_meta.txt", json.dumps(meta, indent=1))
    atomic_write_text(Path(out_dir) / SPEECH_INTERVALS, json.dumps(intervals, indent=0))
    return folder
