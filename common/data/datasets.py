"""SpeechBrain datasets over the JSON manifests, and the label encoder.

Class indices follow the ESC-50 ``target`` ids when they fit the classifier's
output size; otherwise (e.g. ESC-10 with 10 outputs) the targets are ranked
and the explicit mapping is saved as ``label_encoder.txt`` beside the
checkpoints, so a later evaluation run maps labels the same way.
"""

import json
import logging
from pathlib import Path

import speechbrain as sb
from speechbrain.dataio.encoder import CategoricalEncoder

from common.data.audio import load_audio
from common.data.segments import segment_entries
from common.errors import DataError
from common.io import atomic_path

logger = logging.getLogger(__name__)


def build_label_encoder(manifest_paths, out_n_neurons, save_path=None, fewer_outputs_ok=False):
    """Map class names to indices (ESC-50 target ids, else their rank).

    A saved encoder at ``save_path`` is reused (and checked against the data).
    More classes than ``out_n_neurons`` are an error unless ``fewer_outputs_ok``
    (an interpreter explains a given classifier's outputs; the labels only name
    the clips' true classes, and those ranked past its outputs are never predicted).
    """
    targets = {}
    for path in manifest_paths:
        with open(path, encoding="utf-8") as f:
            for entry in json.load(f).values():
                targets[entry["class_string"]] = int(entry["classID"])
    if not targets:
        raise DataError(f"The manifests {[str(p) for p in manifest_paths]} hold no clips; re-run the data preparation.")
    bad = sorted({t for t in targets.values() if t < 0})
    if bad:
        raise DataError(
            f"Class targets {bad} in {[str(p) for p in manifest_paths]} are negative; targets are 0, 1, 2, ..."
        )
    ordered = sorted(targets.items(), key=lambda kv: kv[1])
    if len(ordered) > out_n_neurons and not fewer_outputs_ok:
        raise DataError(
            f"The data has {len(ordered)} classes but out_n_neurons={out_n_neurons}; set --out_n_neurons {len(ordered)}."
        )
    use_targets = max(t for _, t in ordered) < out_n_neurons
    mapping = {label: (target if use_targets else rank) for rank, (label, target) in enumerate(ordered)}
    if save_path is not None and Path(save_path).is_file():
        saved = CategoricalEncoder()
        saved.load(save_path)
        unknown = sorted(set(targets) - set(saved.lab2ind))
        if unknown:
            raise DataError(
                f"Classes {unknown} are not in the saved label encoder {save_path}; delete it to rebuild, or use the data it was made for."
            )
        if fewer_outputs_ok or {label: saved.lab2ind[label] for label in mapping} == mapping:
            # an interpreter's encoder is its classifier's, whatever order the clips' targets have
            saved.expect_len(len(saved.lab2ind))
            return saved
        trained = sorted(Path(save_path).parent.glob("CKPT+*"))
        changed = sorted(label for label in mapping if saved.lab2ind[label] != mapping[label])
        if trained:
            raise DataError(
                f"The saved label encoder {save_path} maps class(es) {changed[:5]} to other outputs than the metadata "
                f"now does, and the checkpoints next to it ({trained[-1].name}, ...) were trained with it. Use a new "
                "--output_folder for the changed data, or restore the metadata the run was trained on."
            )
        logger.warning(
            "The saved label encoder %s does not match the metadata (class(es) %s changed); no checkpoint uses "
            "it yet, so it is rebuilt.",
            save_path,
            changed[:5],
        )
    if len(ordered) > out_n_neurons:
        logger.warning(
            "The data has %d classes but the classifier only %d outputs: %s can never be predicted "
            "(they name true classes in the tables only).",
            len(ordered),
            out_n_neurons,
            [label for label, _ in ordered[out_n_neurons:]],
        )
    encoder = CategoricalEncoder()
    for label, index in mapping.items():
        encoder.enforce_label(label, index)
    encoder.expect_len(len(ordered))
    if save_path is not None:
        with atomic_path(save_path) as tmp:
            encoder.save(tmp)
    return encoder


def output_label(label_encoder, index):
    """The class name of a classifier output, or ``"output <i> (no class)"`` for an output that no class
    of the data maps to (out_n_neurons above the data's classes, e.g. ESC-10 with 50 outputs)."""
    return label_encoder.ind2lab.get(int(index), f"output {int(index)} (no class)")


def output_labels(label_encoder, n_outputs):
    """The class name of each of ``n_outputs`` classifier outputs; None for one no class maps to."""
    return [label_encoder.ind2lab.get(i) for i in range(n_outputs)]


def label_pipeline_for(label_encoder):
    """The ``class_string`` -> (``class_string``, ``class_string_encoded``) pipeline every split uses."""

    @sb.utils.data_pipeline.takes("class_string")
    @sb.utils.data_pipeline.provides("class_string", "class_string_encoded")
    def label_pipeline(class_string):
        yield class_string
        yield label_encoder.encode_label_torch(class_string)

    return label_pipeline


def read_manifest(path, segment_s=None, segment_hop_s=None):
    """The entries of a JSON manifest, each with its ``clip_id``.

    Entries that are segments (``start_s`` and ``duration_s``, as GTZAN's) are
    kept as they are; whole clips are cut into ``segment_s`` segments every
    ``segment_hop_s`` when ``segment_s`` is given (e.g. ESC-50 clips for a
    recipe trained on 3 s segments), else kept whole (``clip_id`` = their key).
    """
    with open(path, encoding="utf-8") as f:
        entries = json.load(f)
    segmented = ["start_s" in e and "duration_s" in e for e in entries.values()]
    if any(segmented) and not all(segmented):
        raise DataError(
            f"Manifest {path} mixes segment entries (with start_s/duration_s) and whole clips; re-run the data preparation."
        )
    if all(segmented) and entries:
        return entries
    if segment_s:
        return segment_entries(entries, segment_s, segment_hop_s)
    return {clip: {**e, "clip_id": clip} for clip, e in entries.items()}


SHORT_CLIP_FRACTION = 0.5  # a clip under this fraction of the recipe's length is mostly padding


def warn_short_clips(entries, split, signal_length_s):
    """Warn (once per split) about clips far shorter than the ``signal_length_s`` they are zero-padded to."""
    short = {
        clip: e["duration"]
        for clip, e in entries.items()
        if "duration" in e and "start_s" not in e and e["duration"] < SHORT_CLIP_FRACTION * signal_length_s
    }
    if short:
        shown = ", ".join(f"{Path(entries[c]['wav']).name} ({d:.3g} s)" for c, d in list(short.items())[:5])
        logger.warning(
            "%d clip(s) of the %s split are far shorter than signal_length_s=%g s and are zero-padded to it: %s%s. "
            "Check them, or remove their metadata rows.",
            len(short),
            split,
            signal_length_s,
            shown,
            " ..." if len(short) > 5 else "",
        )


def classification_datasets(
    manifests, label_encoder, sample_rate, signal_length_s=None, segment_s=None, segment_hop_s=None, cache_audio=False
):
    """One DynamicItemDataset per split with ``sig``, ``class_string_encoded`` and ``clip_id``.

    ``manifests``: mapping split name -> JSON manifest path. Segment entries
    are read from their start for their duration (padded or cropped to
    ``signal_length_s`` when given); see ``read_manifest`` for ``segment_s``.
    ``cache_audio``: decode and resample each clip once, and keep it in memory for the later epochs
    (ESC-50 at 16 kHz: about 640 MB; per data-loader worker when ``num_workers`` > 0).
    """
    cache = {} if cache_audio else None

    def loaded(key, load):
        if cache is None:
            return load()
        if key not in cache:
            cache[key] = load()
        return cache[key]  # the batch is collated into a new tensor, so augmentation never changes this one

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return loaded(wav, lambda: load_audio(wav, sample_rate, length_s=signal_length_s))

    @sb.utils.data_pipeline.takes("wav", "start_s", "duration_s")
    @sb.utils.data_pipeline.provides("sig")
    def segment_pipeline(wav, start_s, duration_s):
        length_s = signal_length_s or duration_s  # a segment running past the clip's end is zero-padded
        return loaded(
            (wav, start_s, duration_s),
            lambda: load_audio(wav, sample_rate, length_s=length_s, start_s=start_s, duration_s=duration_s),
        )

    datasets = {}
    for split, path in manifests.items():
        entries = read_manifest(path, segment_s, segment_hop_s)
        if not entries:
            raise DataError(
                f"The {split} split has no clips (manifest {path} is empty): the folds or split chosen for it "
                f"(--{split}_fold_nums, or the data set's split options) hold no clips. Choose ones that do."
            )
        if signal_length_s:
            warn_short_clips(entries, split, signal_length_s)
        segmented = all("start_s" in e for e in entries.values())

        @sb.utils.data_pipeline.takes("id")
        @sb.utils.data_pipeline.provides("segment_start_s")
        def start_pipeline(item_id, entries=entries):
            return float(entries[item_id].get("start_s", 0.0))  # where ground truth of the whole clip is cut

        datasets[split] = sb.dataio.dataset.DynamicItemDataset(
            entries,
            dynamic_items=[
                segment_pipeline if segmented else audio_pipeline,
                label_pipeline_for(label_encoder),
                start_pipeline,
            ],
            output_keys=["id", "sig", "class_string_encoded", "class_string", "clip_id", "segment_start_s"],
        )
    return datasets


def contaminated_dataset(manifest, label_encoder, sample_rate, signal_length_s, condition, noise_folder=None):
    """The clips of ``manifest`` under a contamination ``Condition``.

    ``sig`` is the contaminated clip and ``clean_sig`` its clean target part,
    both scaled by the same factor so the mixture's peak is 1 (the classifier
    was trained on peak-normalised clips). Mixture partners are clips of
    another class from the same manifest.
    """
    from common.data.contamination import partners_of_other_classes

    with open(manifest, encoding="utf-8") as f:
        entries = json.load(f)
    partners = {}
    if condition.kind == "mixture":
        partners = partners_of_other_classes({clip: e["class_string"] for clip, e in entries.items()})

    @sb.utils.data_pipeline.takes("id", "wav")
    @sb.utils.data_pipeline.provides("sig", "clean_sig")
    def audio_pipeline(clip_id, wav):
        sig = load_audio(wav, sample_rate, length_s=signal_length_s)
        partner = None
        if clip_id in partners:
            partner = load_audio(entries[partners[clip_id]]["wav"], sample_rate, length_s=signal_length_s)
        mixed, clean = condition.apply(clip_id, sig, partner_sig=partner, noise_folder=noise_folder)
        peak = mixed.abs().max().clamp(min=1e-8)
        yield mixed / peak
        yield clean / peak

    return sb.dataio.dataset.DynamicItemDataset.from_json(
        json_path=str(manifest),
        dynamic_items=[audio_pipeline, label_pipeline_for(label_encoder)],
        output_keys=["id", "sig", "clean_sig", "class_string_encoded", "class_string"],
    )
