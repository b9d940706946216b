"""BirdSet (Rauch et al. 2024) through HuggingFace ``datasets``.

``DBD-research-group/BirdSet`` has one config per data set: the Xeno-canto
training sets (XCL: 9,736 species, XCM: 411) and the soundscape test sets
(POW, PER, NES, UHH, HSN, NBP, SSW, SNE). Its hub loader is a Python dataset
script, which ``datasets`` 4 refuses to run; use ``datasets<=3.6.0`` (as the
BirdSet maintainers do). Loading it executes that script from the hub
(``trust_remote_code``), so it is a code download as well as a data download.

A local copy made with ``DatasetDict.save_to_disk`` into ``DATA/<config>/``
(e.g. the synthetic fixture of ``write_birdset_fixture``; ``python
tools/birdset_synthetic.py --data_only --output_folder DIR`` writes one at
DIR/data) is used instead of the hub when present. Config names and splits are
checked against the hub's (``HUB_SPLITS``) before anything is downloaded.

Examples, as the paper uses them:

* training (focal Xeno-canto recordings): one example per recording; each
  time it is drawn, one of its ``detected_events`` is chosen and a random 5 s
  crop that contains the event (or lies inside it, for long events) is read;
* evaluation (``test_5s``, and the XC configs' ``valid``, which is POW's
  ``test_5s``): the 5 s segment [``start_time``, ``end_time``] of a soundscape
  with its multi-label set, possibly empty (no call);
* labels are multi-hot vectors over the *training* config's classes; a test
  set's classes are mapped into that space by eBird code (a class the
  training set lacks is an error naming it), and its logits are restricted to
  its own classes for scoring (``class_indices``).

Audio is read lazily, segment by segment, from the files the rows point to:
the Arrow tables are memory-mapped, so an XCL-size set is never held in memory.
"""

import contextlib
import difflib
import io
import logging
import math
import random
import shutil
from pathlib import Path

import soundfile as sf
import torch

from common.data.audio import fix_length, load_audio
from common.errors import ConfigError, DataError, DataNotFoundError

logger = logging.getLogger(__name__)

HF_PATH = "DBD-research-group/BirdSet"
TRAIN_CONFIGS = ("XCL", "XCM")
TEST_CONFIGS = ("POW", "PER", "NES", "UHH", "HSN", "NBP", "SSW", "SNE")
REQUIRED_COLUMNS = ("audio", "filepath", "start_time", "end_time", "ebird_code", "ebird_code_multilabel")
# Every config of the hub loader (BirdSet.py's BUILDER_CONFIGS) and its splits: the XC configs have
# train/valid (valid is POW's test_5s); each test site S has S (its XC train + its soundscapes),
# S_xc (train only) and S_scape (the soundscapes only).
HUB_SPLITS = {
    **{config: ("train", "valid") for config in TRAIN_CONFIGS},
    **{site: ("train", "test", "test_5s") for site in TEST_CONFIGS},
    **{f"{site}_xc": ("train",) for site in TEST_CONFIGS},
    **{f"{site}_scape": ("test", "test_5s") for site in TEST_CONFIGS},
}
EVENT_MASK_RATE = 100  # values per second of a training crop's event mask
SYNTHETIC_COMMAND = "python tools/birdset_synthetic.py --data_only --output_folder DIR"


def _require_datasets():
    try:
        import datasets
    except ImportError as exc:
        raise DataError("BirdSet needs `datasets`: pip install 'datasets==3.6.0' (see extra_requirements.txt)") from exc
    major = int(datasets.__version__.split(".")[0])
    if major >= 4:
        raise DataError(
            f"datasets {datasets.__version__} cannot run BirdSet's hub loader (a dataset script; datasets>=4 "
            "refuses those). Install the version BirdSet supports: pip install 'datasets==3.6.0'."
        )
    return datasets


def local_config_dir(data_folder, config):
    """Where a ``save_to_disk`` copy of ``config`` lives inside ``data_folder``."""
    return Path(data_folder) / config


def check_config(data_folder, config, split, field="config", hf_path=HF_PATH):
    """A ConfigError, before any download, when ``config`` / ``split`` is not one BirdSet's hub serves.

    A local ``save_to_disk`` copy may have any name (its splits are checked when it is loaded), and
    another ``hf_path`` has configs of its own, so neither is checked here.
    """
    if hf_path != HF_PATH or (local_config_dir(data_folder, config) / "dataset_dict.json").is_file():
        return
    if config not in HUB_SPLITS:
        by_lower = {name.lower(): name for name in HUB_SPLITS}
        close = difflib.get_close_matches(str(config).lower(), by_lower, n=1)
        hint = f" Did you mean {by_lower[close[0]]!r}?" if close else ""
        raise ConfigError(
            f"{field}: {config!r} is not a BirdSet config.{hint} BirdSet's test sets: {', '.join(TEST_CONFIGS)} "
            f"(each also as <name>_scape, its soundscapes only, and <name>_xc, its training recordings only); "
            f"its training sets: {', '.join(TRAIN_CONFIGS)}. A copy of your own saved at "
            f"{local_config_dir(data_folder, config)}/ may have any name."
        )
    if split not in HUB_SPLITS[config]:
        having = [c for c, splits in HUB_SPLITS.items() if split in splits]
        raise ConfigError(
            f"{field}: BirdSet config {config!r} has the splits {list(HUB_SPLITS[config])}, not {split!r}. "
            f"The configs with a {split!r} split: {having}."
        )


def load_birdset_split(data_folder, config, split, hf_path=HF_PATH, trust_remote_code=True):
    """One split of one BirdSet config: a local ``save_to_disk`` copy, else the hub (cached in ``data_folder``)."""
    check_config(data_folder, config, split, hf_path=hf_path)
    datasets = _require_datasets()
    local = local_config_dir(data_folder, config)
    if (local / "dataset_dict.json").is_file():
        dsets = datasets.load_from_disk(str(local))
        if split not in dsets:
            raise DataError(f"{local} has splits {sorted(dsets)}, not {split!r}. Re-create it with that split.")
        ds = dsets[split]
    else:
        if trust_remote_code:
            logger.warning("Running the dataset script of %s (%s) from the hub (trust_remote_code).", hf_path, config)
        try:
            ds = datasets.load_dataset(
                hf_path, config, split=split, cache_dir=str(data_folder), trust_remote_code=trust_remote_code
            )
        except Exception as exc:  # offline, unknown config, refused script: one message
            raise DataNotFoundError(
                f"Could not load BirdSet config {config!r} split {split!r} from {hf_path} ({type(exc).__name__}: "
                f"{exc}). It downloads from the HuggingFace hub into --data_folder ({data_folder}); this needs the "
                f"internet and datasets==3.6.0. Offline, put a copy saved with DatasetDict.save_to_disk at "
                f"{local}/ (`{SYNTHETIC_COMMAND}` writes a synthetic one into DIR/data, to pass as --data_folder)."
            ) from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise DataError(f"BirdSet {config}/{split} lacks the columns {missing}; it is not in BirdSet's schema.")
    return ds


def class_names(ds):
    """The eBird codes of a split's label space (its ``ebird_code`` ClassLabel)."""
    feature = ds.features["ebird_code"]
    if not hasattr(feature, "names"):
        raise DataError("The `ebird_code` column is not a ClassLabel; the data set is not in BirdSet's schema.")
    return list(feature.names)


def class_indices(train_names, test_names, test_config="test set"):
    """Indices of ``test_names`` in the training label space; an error lists the classes training lacks."""
    position = {name: i for i, name in enumerate(train_names)}
    missing = [name for name in test_names if name not in position]
    if missing:
        raise DataError(
            f"{test_config} has {len(missing)} classes that are not in the training label space "
            f"({len(train_names)} classes): {missing}. Train on a config that covers them (XCL covers every "
            "BirdSet test set), or evaluate on another test set."
        )
    return [position[name] for name in test_names]


def _audio_source(row, data_folder):
    """(path, bytes or None): the hub's rows point at extracted files; a saved copy may embed the bytes."""
    audio = row.get("audio")
    audio = audio if isinstance(audio, dict) else {}
    path = Path(audio.get("path") or row["filepath"])
    if not path.is_absolute() and data_folder is not None and audio.get("bytes") is None:
        path = Path(data_folder) / path
    return path, audio.get("bytes")


def audio_duration(path, data_bytes=None):
    """Length of an audio file in seconds, from its header (a missing file is the loader's error to raise)."""
    try:
        return sf.info(io.BytesIO(data_bytes) if data_bytes is not None else str(path)).duration
    except Exception:
        return 0.0


def _multi_hot(indices, n_classes, index_map=None):
    target = torch.zeros(n_classes)
    for i in indices or ():
        target[i if index_map is None else index_map[i]] = 1.0
    return target


class _BirdSetSplit(torch.utils.data.Dataset):
    """Common part: rows of an HF split -> {"id", "sig", "labels"} examples (collate with PaddedBatch)."""

    def __init__(self, hf_split, n_classes, name, sample_rate=32000, length_s=5.0, data_folder=None, index_map=None):
        self.ds = hf_split
        self.n_classes = n_classes
        self.name = name
        self.sample_rate = sample_rate
        self.length_s = float(length_s)
        self.data_folder = data_folder
        self.index_map = index_map  # this split's class index -> training class index

    def __len__(self):
        return len(self.ds)

    def row(self, index):
        return self.ds[int(index)]

    def labels_of(self, row):
        return _multi_hot(row["ebird_code_multilabel"], self.n_classes, self.index_map)

    def read(self, row, start_s):
        """``length_s`` seconds from ``start_s``, zero-padded when the file ends first (short clips)."""
        path, data = _audio_source(row, self.data_folder)
        sig = load_audio(
            path,
            self.sample_rate,
            normalize=False,
            warn_silence=False,
            start_s=start_s,
            duration_s=self.length_s,
            data_bytes=data,
        )
        return fix_length(sig, int(round(self.length_s * self.sample_rate)))

    def example(self, index, start_s):
        row = self.row(index)
        return {"id": f"{self.name}-{index}", "sig": self.read(row, start_s), "labels": self.labels_of(row)}


class BirdSetEvents(_BirdSetSplit):
    """Training examples: a random 5 s crop around one detected event of each focal recording.

    With ``random_crop=False`` (analyses, caching) the crop is centred on the
    recording's first event, so it is the same every time.
    """

    def __init__(self, *args, random_crop=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.random_crop = random_crop

    def crop_start(self, events, duration):
        """Start (s) of a ``length_s`` crop that holds the event (or lies inside it, if longer), within the file."""
        events = [e for e in events or [] if e is not None and len(e) == 2 and e[1] > e[0]]
        span = self.length_s
        last = max(0.0, duration - span)
        if not events:
            return random.uniform(0.0, last) if self.random_crop else 0.0
        e0, e1 = random.choice(events) if self.random_crop else events[0]
        if not self.random_crop:
            return min(max(0.0, (e0 + e1 - span) / 2), last)
        lo, hi = (e1 - span, e0) if e1 - e0 <= span else (e0, e1 - span)
        lo, hi = min(max(0.0, lo), last), min(max(0.0, hi), last)
        return random.uniform(lo, hi)

    def __getitem__(self, index):
        row = self.row(index)
        duration = audio_duration(*_audio_source(row, self.data_folder))
        events = row.get("detected_events")
        start = self.crop_start(events, duration)
        return {
            "id": f"{self.name}-{index}",
            "sig": self.read(row, start),
            "labels": self.labels_of(row),
            "event_mask": self.event_mask(events, start),
        }

    def event_mask(self, events, start_s):
        """(length_s x EVENT_MASK_RATE,) float: 1 where the crop starting at ``start_s`` is inside a detected event.

        Only *when* (BirdSet's detected_events have no frequencies): what a penalty on prototype similarity
        away from the calls can use (``common.models.losses.prototype_background_cost``)."""
        n = int(round(self.length_s * EVENT_MASK_RATE))
        mask = torch.zeros(n)
        for e in events or []:
            if e is None or len(e) != 2 or not e[1] > e[0]:
                continue
            lo = max(0, math.floor((e[0] - start_s) * EVENT_MASK_RATE))
            hi = min(n, math.ceil((e[1] - start_s) * EVENT_MASK_RATE))
            mask[lo:hi] = 1.0
        return mask


class BirdSetSegments(_BirdSetSplit):
    """Evaluation examples: the 5 s segment [start_time, end_time] of a soundscape, multi-label (maybe empty)."""

    def __getitem__(self, index):
        row = self.row(index)
        return {
            "id": f"{self.name}-{index}",
            "sig": self.read(row, float(row["start_time"] or 0.0)),
            "labels": self.labels_of(row),
        }


def birdset_datasets(hparams):
    """The training config's train/valid datasets and each test config's test set, from the hparams.

    Returns dict(train=..., valid=..., tests={config: dataset}, class_names=[...], test_classes={config: indices}).
    Test sets whose classes the training label space lacks raise an error naming them.
    """
    folder, train_config = hparams["data_folder"], hparams["train_config"]
    load = {"hf_path": hparams.get("hf_path", HF_PATH), "trust_remote_code": hparams.get("trust_remote_code", True)}
    test_configs = hparams.get("test_configs") or []
    if isinstance(test_configs, str):  # `--test_configs POW` is a string, not a list
        raise ConfigError(f"test_configs must be a list, e.g. --test_configs [{test_configs}], not {test_configs!r}")
    valid_split, test_split = hparams.get("valid_split", "valid"), hparams.get("test_split", "test_5s")
    # every name is checked before the first download (XCL's train split alone is hours of it)
    check_config(folder, train_config, "train", "train_config", load["hf_path"])
    if valid_split:
        check_config(folder, train_config, valid_split, "valid_split", load["hf_path"])
    for config in test_configs:
        check_config(folder, config, test_split, "test_configs", load["hf_path"])
    common = {"sample_rate": hparams["sample_rate"], "length_s": hparams["signal_length_s"], "data_folder": folder}
    train_split = load_birdset_split(folder, train_config, "train", **load)
    names = class_names(train_split)
    n = len(names)
    if hparams.get("out_n_neurons") not in (None, n):
        raise DataError(f"{train_config} has {n} classes but out_n_neurons={hparams['out_n_neurons']}; set it to {n}.")
    out = {
        "train": BirdSetEvents(train_split, n, f"{train_config}-train", **common),
        "class_names": names,
        "tests": {},
        "test_classes": {},
    }
    if valid_split:
        valid = load_birdset_split(folder, train_config, valid_split, **load)
        index_map = class_indices(names, class_names(valid), f"{train_config}/{valid_split}")
        out["valid"] = BirdSetSegments(valid, n, f"{train_config}-{valid_split}", index_map=index_map, **common)
    for config in test_configs:
        test = load_birdset_split(folder, config, test_split, **load)
        indices = class_indices(names, class_names(test), config)
        out["tests"][config] = BirdSetSegments(test, n, config, index_map=indices, **common)
        out["test_classes"][config] = indices
    return out


# ------------------------------------------------------------------ local fixture
def birdset_features(class_list):
    """BirdSet's column schema (from its hub loader), for a label space ``class_list``."""
    datasets = _require_datasets()
    label = datasets.ClassLabel(names=list(class_list))
    one = datasets.ClassLabel(names=["synthetic"])
    return datasets.Features(
        {
            "audio": datasets.Audio(sampling_rate=32_000, mono=True, decode=False),
            "filepath": datasets.Value("string"),
            "start_time": datasets.Value("float64"),
            "end_time": datasets.Value("float64"),
            "low_freq": datasets.Value("int64"),
            "high_freq": datasets.Value("int64"),
            "ebird_code": label,
            "ebird_code_multilabel": datasets.Sequence(label),
            "ebird_code_secondary": datasets.Sequence(datasets.Value("string")),
            "call_type": datasets.Value("string"),
            "sex": datasets.Value("string"),
            "lat": datasets.Value("float64"),
            "long": datasets.Value("float64"),
            "length": datasets.Value("int64"),
            "microphone": datasets.Value("string"),
            "license": datasets.Value("string"),
            "source": datasets.Value("string"),
            "local_time": datasets.Value("string"),
            "detected_events": datasets.Sequence(datasets.Sequence(datasets.Value("float64"))),
            "event_cluster": datasets.Sequence(datasets.Value("int64")),
            "peaks": datasets.Sequence(datasets.Value("float64")),
            "quality": datasets.Value("string"),
            "recordist": datasets.Value("string"),
            "genus": one,
            "species_group": one,
            "order": one,
            "genus_multilabel": datasets.Sequence(one),
            "species_group_multilabel": datasets.Sequence(one),
            "order_multilabel": datasets.Sequence(one),
        }
    )


def _row(path, label_ids, start=None, end=None, events=(), length_s=0.0, band=(0, 16000), primary=None):
    return {
        "audio": {"path": path, "bytes": None},
        "filepath": path,
        "start_time": start,
        "end_time": end,
        "low_freq": int(band[0]),
        "high_freq": int(band[1]),
        "ebird_code": primary if primary is not None else (label_ids[0] if label_ids else None),
        "ebird_code_multilabel": list(label_ids),
        "ebird_code_secondary": [],
        "call_type": "song",
        "sex": None,
        "lat": 0.0,
        "long": 0.0,
        "length": int(round(length_s)),
        "microphone": "synthetic",
        "license": "synthetic",
        "source": "synthetic",
        "local_time": None,
        "detected_events": [list(e) for e in events],
        "event_cluster": [0] * len(events),
        "peaks": [(e[0] + e[1]) / 2 for e in events],
        "quality": "A",
        "recordist": "generator",
        "genus": 0,
        "species_group": 0,
        "order": 0,
        "genus_multilabel": [0],
        "species_group_multilabel": [0],
        "order_multilabel": [0],
    }


def write_birdset_fixture(
    out_dir,
    n_species=6,
    train_config="XCM",
    test_configs=("POW", "PER"),
    recordings_per_species=6,
    focal_s=(3.0, 12.0),
    soundscape_s=30.0,
    soundscapes_per_test=2,
    valid_soundscapes=1,
    extra_test_species=(),
    seed=0,
    sample_rate=32000,
):
    """A small BirdSet in BirdSet's schema, from synthetic soundscapes whose events are known.

    ``out_dir/<train_config>/`` holds ``train`` (focal recordings of one
    species each, with their ``detected_events``; some shorter than 5 s) and
    ``valid`` (5 s soundscape segments); each ``out_dir/<test>/`` holds
    ``test_5s`` segments cut from long soundscapes, with a no-call segment
    among them, its classes listed in a different order than training's (so
    the mapping is exercised) plus any ``extra_test_species`` (which training
    lacks). ``ground_truth.json`` beside each evaluation split gives every
    segment's events (species code, t0/t1 in s from the segment's start,
    f_lo/f_hi in Hz). ``save_to_disk`` embeds the audio in the Arrow files
    (rows keep the file name in ``audio.path``), so the folder is
    self-contained and can be moved. Returns the species codes.
    """
    import json

    import numpy as np
    import soundfile

    from common.data.synthetic.soundscapes import SpeciesBank, cut_segments

    datasets = _require_datasets()
    out_dir = Path(out_dir)
    bank = SpeciesBank(n_species, sample_rate=sample_rate, seed=seed)
    names = bank.names
    rng = np.random.default_rng(seed)

    staging = out_dir / ".audio"

    def write(rel, wav):
        path = staging / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(path), wav, sample_rate, subtype="PCM_16")
        return rel

    def segments_split(config, class_list, n_scenes, tag):
        position = {name: i for i, name in enumerate(class_list)}
        rows, truth = [], {}
        scenes = [bank.long_soundscape(soundscape_s, rng) for _ in range(n_scenes)]
        scenes.append({**bank.soundscape(5.0, rng, p_empty=1.0), "empty": True})  # a no-call recording
        for s, scene in enumerate(scenes):
            rel = write(f"audio/{config}/{tag}_scape{s:02d}.wav", scene["wav"])
            for seg in cut_segments(scene, 5.0, sample_rate):
                ids = sorted(position[names[i]] for i in seg["labels"])
                truth[str(len(rows))] = [{**e, "species": names[e["species"]]} for e in seg["events"]]
                rows.append(
                    _row(rel, ids, seg["start_s"], seg["start_s"] + 5.0, length_s=len(scene["wav"]) / sample_rate)
                )
        return rows, truth

    def save(config, splits, class_list, truths):
        features = birdset_features(class_list)
        dsets = datasets.DatasetDict(
            {split: datasets.Dataset.from_list(rows, features=features) for split, rows in splits.items()}
        )
        target = out_dir / config
        if target.exists():
            shutil.rmtree(target)
        with contextlib.chdir(staging):  # datasets reads the audio files by their (relative) paths
            dsets.save_to_disk(str(target))
        for split, truth in truths.items():
            (target / f"ground_truth_{split}.json").write_text(json.dumps(truth, indent=1), encoding="utf-8")

    train_rows = []
    for species in range(n_species):
        for r in range(recordings_per_species):
            rec = bank.focal_recording(species, float(rng.uniform(*focal_s)), rng)
            rel = write(f"audio/{train_config}/{names[species]}_{r:02d}.wav", rec["wav"])
            band = bank.bands[species]
            train_rows.append(
                _row(rel, [species], events=rec["events"], length_s=len(rec["wav"]) / sample_rate, band=band)
            )
    valid_rows, valid_truth = segments_split(train_config, names, valid_soundscapes, "valid")
    save(train_config, {"train": train_rows, "valid": valid_rows}, names, {"valid": valid_truth})
    for t, config in enumerate(test_configs):
        order = list(np.random.default_rng([seed, t]).permutation(names)) + list(extra_test_species)
        rows, truth = segments_split(config, order, soundscapes_per_test, "test")
        save(config, {"test_5s": rows}, order, {"test_5s": truth})
    shutil.rmtree(staging)
    return names


def clip_batches(dataset, indices, batch_size):
    """(clip indices, waveforms (B, samples), multi-hot labels (B, C)) of ``dataset``'s clips ``indices``."""
    for start in range(0, len(indices), batch_size):
        chunk = list(indices[start : start + batch_size])
        items = [dataset[i] for i in chunk]
        yield chunk, torch.stack([it["sig"] for it in items]), torch.stack([it["labels"] for it in items])
