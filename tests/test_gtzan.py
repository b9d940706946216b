"""GTZAN: preparation (segments, splits, bad files, download), the synthetic music set and its
ground truth, the genre CNNs, and the classifier recipe end to end (synthetic GTZAN and real ESC-10)."""

import importlib.util
import json
import logging
import shutil
import tarfile
import urllib.error

import matplotlib.image as mpimg
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from torch import nn

from common.data import gtzan, prepare_from_hparams
from common.data.datasets import build_label_encoder, classification_datasets
from common.data.download import file_digest
from common.data.gtzan import (
    GTZAN_GENRES,
    artist_split,
    ensure_gtzan,
    prepare_gtzan,
    random_split,
    read_split_list,
)
from common.data.segments import segment_starts
from common.data.synthetic.ground_truth import read_ground_truth
from common.data.synthetic.music import (
    CONCEPT_CLASSES,
    CONCEPT_MIXTURES,
    GENRE_MIXTURES,
    GENRES,
    band_ranges_hz,
    component_masks,
    make_synthetic_gtzan,
)
from common.errors import DataError, DataNotFoundError, IntegrityError
from common.features import Log1pSpectrogram, MelDbSpectrogram
from common.models.genre_cnn import GenreHead, LogMelCNN
from common.training.segments import ClipAggregator
from tests.conftest import REPO, run_recipe

RECIPE = REPO / "recipes" / "GTZAN" / "lime_shap"
TINY = ["--channels", "[4, 8]", "--head_hidden", "8"]
SR = 22050


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    """The synthetic GTZAN: 10 genres x 3 clips of 6 s."""
    out = tmp_path_factory.mktemp("music")
    make_synthetic_gtzan(out, n_per_genre=3, duration_s=6.0, seed=0)
    return out


def mel_front_end():
    return MelDbSpectrogram(sample_rate=SR, n_fft=1024, hop_length=512, n_mels=128, mean=-10.0, std=15.0)


def manifests(folder):
    return {s: json.loads((folder / f"{s}.json").read_text()) for s in ("train", "valid", "test")}


# ----------------------------------------------------------- synthetic music
def test_synthetic_layout_and_ground_truth(music):
    for genre in GENRES:
        shared, own, _ = GENRE_MIXTURES[genre]
        for k in range(3):
            clip = f"{genre}.{k:05d}"
            wav, sr = sf.read(music / "genres" / genre / f"{clip}.wav")
            assert sr == SR and wav.shape == (6 * SR,) and 0.5 < np.abs(wav).max() <= 1.0
            truth = read_ground_truth(music, clip)
            assert truth["genre"] == genre and truth["discriminative_component"] == own.name
            names = [c["name"] for c in truth["components"]]
            assert names == [*shared, own.name]
            assert [c["name"] for c in truth["components"] if c["discriminative"]] == [own.name]
            for component in truth["components"]:
                lo, hi = component["band_hz"]
                assert component["boxes"], f"{clip}: {component['name']} never sounds"
                for t0, t1, f_lo, f_hi in component["boxes"]:
                    assert 0 <= t0 < t1 <= 6.0 and lo <= f_lo <= f_hi <= hi
    # each discriminative band is used by one genre only
    bands = sorted(mixture[1].band_hz for mixture in GENRE_MIXTURES.values())
    assert all(a[1] < b[0] for a, b in zip(bands, bands[1:], strict=False))


def test_deterministic_by_seed(tmp_path):
    make_synthetic_gtzan(tmp_path / "a", n_per_genre=1, duration_s=1.0, seed=5, genres=("jazz",))
    make_synthetic_gtzan(tmp_path / "b", n_per_genre=1, duration_s=1.0, seed=5, genres=("jazz",))
    make_synthetic_gtzan(tmp_path / "c", n_per_genre=1, duration_s=1.0, seed=6, genres=("jazz",))

    def read(folder):
        return sf.read(tmp_path / folder / "genres" / "jazz" / "jazz.00000.wav")[0]

    assert np.array_equal(read("a"), read("b")) and not np.array_equal(read("a"), read("c"))


def test_mean_log_mel_in_the_discriminative_band_separates_the_genres(music):
    front_end = mel_front_end()
    bands = band_ranges_hz(front_end)
    features, labels = [], []
    for genre in GENRES:
        for k in range(3):
            wav, _ = sf.read(music / "genres" / genre / f"{genre}.{k:05d}.wav", dtype="float32")
            X = front_end(torch.from_numpy(wav)[None])[0]
            row = []
            for other in GENRES:
                lo, hi = GENRE_MIXTURES[other][1].band_hz
                row.append(float(X[:, (bands[:, 1] > lo) & (bands[:, 0] <= hi)].mean()))
            features.append(row)
            labels.append(GENRES.index(genre))
    features = np.array(features)
    predicted = (features - np.median(features, axis=0)).argmax(axis=1)
    assert (predicted == np.array(labels)).mean() == 1.0


def test_component_masks_lie_where_the_components_sound(music):
    front_end = mel_front_end()
    wav, _ = sf.read(music / "genres" / "metal" / "metal.00001.wav", dtype="float32")
    X = front_end(torch.from_numpy(wav)[None])[0]
    truth = read_ground_truth(music, "metal.00001")
    masks = component_masks(truth, front_end, X.shape[0])
    assert set(masks) == {"drums", "bass", "tremolo_picking"}
    for name, mask in masks.items():
        assert mask.shape == X.shape and mask.dtype == torch.bool and 0 < mask.float().mean() < 0.5, name
    own = masks["tremolo_picking"]
    assert X[own].mean() > X[~own].mean() + 1.0  # the spectrogram is loud inside the component's mask
    centres = band_ranges_hz(front_end).mean(dim=1)
    hop = 512 / SR
    for t0, t1, f_lo, f_hi in truth["components"][2]["boxes"]:
        frame = int(round((t0 + t1) / 2 / hop))
        band = int(torch.argmin((centres - (f_lo + f_hi) / 2).abs()))
        assert own[frame, band]
    rows = own.nonzero()[:, 1]
    assert centres[rows].min() > 5800 and centres[rows].max() < 7100  # only its band

    # a segment: boxes shifted to its start, cut at its end
    seg = component_masks(truth, front_end, 130, start_s=3.0, duration_s=3.0)["tremolo_picking"]
    in_segment = [b for b in truth["components"][2]["boxes"] if b[1] > 3.0 and b[0] < 6.0]
    assert seg.shape == (130, 128) and bool(seg.any()) == bool(in_segment)
    late = component_masks(truth, front_end, 130, start_s=6.0, duration_s=3.0)
    assert not any(m.any() for m in late.values())


def test_concept_classes_have_three_own_sources_each_sounding_alone_or_together(tmp_path):
    """trio_*: three sources of their own per class, in bands no other source uses; each clip keeps a random,
    non-empty subset of them, so each source alone is evidence (what DRSA's concepts can divide)."""
    make_synthetic_gtzan(tmp_path, n_per_genre=12, duration_s=2.0, seed=0, genres=CONCEPT_CLASSES)
    front_end = mel_front_end()
    bands = [source.band_hz for _, own, _ in CONCEPT_MIXTURES.values() for source in own]
    assert len(bands) == 9 and all(a[1] < b[0] for a, b in zip(sorted(bands), sorted(bands)[1:], strict=False))
    for genre in CONCEPT_CLASSES:
        patterns = set()
        for k in range(12):
            truth = read_ground_truth(tmp_path, f"{genre}.{k:05d}")
            names = [source.name for source in CONCEPT_MIXTURES[genre][1]]
            assert [c["name"] for c in truth["components"]] == names
            assert all(c["discriminative"] for c in truth["components"]) and truth["discriminative_component"] == names
            sounding = tuple(bool(c["boxes"]) for c in truth["components"])
            assert any(sounding)
            patterns.add(sounding)
            masks = component_masks(truth, front_end, 87)
            assert all(bool(masks[n].any()) == s for n, s in zip(names, sounding, strict=True))
            assert not (masks[names[0]] & masks[names[1]]).any() and not (masks[names[1]] & masks[names[2]]).any()
        assert len(patterns) > 2  # the subsets vary from clip to clip
    with pytest.raises(ValueError, match="trio_a"):
        make_synthetic_gtzan(tmp_path, n_per_genre=1, genres=("polka",))


def test_component_masks_on_a_hand_made_box_and_a_linear_grid():
    truth = {"components": [{"name": "tone", "boxes": [[0.5, 1.0, 1000.0, 2000.0]]}]}
    front_end = mel_front_end()
    mask = component_masks(truth, front_end, 100)["tone"]
    frames = mask.any(dim=1).nonzero()[:, 0].double() * 512 / SR
    assert frames.min() >= 0.5 - 512 / SR and frames.max() <= 1.0 + 512 / SR
    ranges = band_ranges_hz(front_end)[mask.any(dim=0)]
    assert ranges[:, 1].min() > 1000 and ranges[:, 0].max() <= 2000
    assert (ranges[:, 0] < 1500).any() and (ranges[:, 1] > 1500).any()
    linear = Log1pSpectrogram(sample_rate=16000, n_fft=512, hop_length=16.0, win_length=32.0)
    mask = component_masks(truth, linear, 80)["tone"]
    bins = mask.any(dim=0).nonzero()[:, 0].double() * 8000 / 256
    assert mask.shape == (80, 257) and bins.min() >= 1000 - 16 and bins.max() <= 2000 + 16
    assert 0.5 - 0.016 <= float(mask.any(dim=1).nonzero().min()) * 0.016 <= 0.5 + 0.016


# ----------------------------------------------------------------- preparation
def test_segment_starts():
    assert segment_starts(30.013, 3.0) == [3.0 * k for k in range(10)]
    assert len(segment_starts(29.95, 3.0)) == 10  # a song a little short of 30 s keeps its last segment
    assert segment_starts(5.0, 3.0) == [0.0] and segment_starts(5.0, 3.0, 2.0) == [0.0, 2.0]
    assert segment_starts(1.0, 3.0) == [0.0]
    with pytest.raises(DataError):
        segment_starts(5.0, 0.0)


def test_prepare_writes_segment_manifests_skips_bad_files_and_reuses_them(music, tmp_path, caplog):
    data = shutil.copytree(music, tmp_path / "data")
    corrupt = data / "genres" / "jazz" / "jazz.00054.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt truncated")
    (data / "genres" / "blues" / "._blues.00000.wav").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    # another rate and two channels are accepted (loading resamples and averages)
    wav, _ = sf.read(data / "genres" / "rock" / "rock.00002.wav", dtype="float32")
    upsampled = torchaudio.functional.resample(torch.from_numpy(wav), SR, 2 * SR).numpy()
    sf.write(data / "genres" / "rock" / "rock.00002.wav", np.stack([upsampled, upsampled], axis=1), 2 * SR)
    out = tmp_path / "manifest"
    with caplog.at_level(logging.WARNING):
        prepare_gtzan(data, out, split="random", split_ratios=(0.4, 0.3, 0.3), split_seed=7)
    assert "jazz.00054.wav" in caplog.text and "Skipping unreadable" in caplog.text
    splits = manifests(out)
    clips = {s: {e["clip_id"] for e in entries.values()} for s, entries in splits.items()}
    assert clips["train"].isdisjoint(clips["valid"]) and clips["train"].isdisjoint(clips["test"])
    assert "jazz.00054" not in set().union(*clips.values()) and len(set().union(*clips.values())) == 30
    for split, entries in splits.items():
        assert {e["class_string"] for e in entries.values()} == set(GTZAN_GENRES), split  # stratified
        for key, entry in entries.items():
            assert key == f"{entry['clip_id']}-seg{int(entry['start_s'] // 3):02d}"
            assert entry["start_s"] in (0.0, 3.0) and entry["duration_s"] == entry["duration"] == 3.0
            assert entry["classID"] == GTZAN_GENRES.index(entry["class_string"])
            assert entry["clip_duration"] == pytest.approx(6.0)
            assert entry["wav"].endswith(f"{entry['class_string']}/{entry['clip_id']}.wav")
    assert sum(len(e) for e in splits.values()) == 2 * 30
    mtimes = [(out / f"{s}.json").stat().st_mtime_ns for s in ("train", "valid", "test")]
    prepare_gtzan(data, out, split="random", split_ratios=(0.4, 0.3, 0.3), split_seed=7)
    assert [(out / f"{s}.json").stat().st_mtime_ns for s in ("train", "valid", "test")] == mtimes
    prepare_gtzan(data, out, split="random", split_ratios=(0.4, 0.3, 0.3), split_seed=8)
    assert {e["clip_id"] for e in manifests(out)["test"].values()} != clips["test"]

    # the segments load at the recipe's rate and length, the resampled stereo song included
    paths = {s: out / f"{s}.json" for s in ("train", "valid", "test")}
    encoder = build_label_encoder(list(paths.values()), 10)
    datasets = classification_datasets(paths, encoder, SR, 3.0)
    rock = next(s for s in datasets if any(e["clip_id"] == "rock.00002" for e in splits[s].values()))
    for item in datasets[rock]:
        assert item["sig"].shape == (3 * SR,) and item["sig"].abs().max() <= 1.0
        assert item["id"].startswith(item["clip_id"])
        if item["clip_id"] == "rock.00002":
            original, _ = sf.read(music / "genres" / "rock" / "rock.00002.wav", dtype="float32")
            start = int(item["id"][-2:]) * 3 * SR
            expected = original[start : start + 3 * SR]
            assert np.corrcoef(item["sig"].numpy(), expected)[0, 1] > 0.99


def test_random_split_is_stratified_seeded_and_checks_its_inputs():
    songs = {f"{g}.{k:05d}": g for g in GTZAN_GENRES for k in range(100)}
    a = random_split(songs, (0.7, 0.1, 0.2), seed=1)
    assert random_split(songs, (0.7, 0.1, 0.2), seed=1) == a and random_split(songs, (0.7, 0.1, 0.2), seed=2) != a
    for genre in GTZAN_GENRES:
        assert [sum(c.startswith(genre) for c in a[s]) for s in ("train", "valid", "test")] == [70, 10, 20]
    with pytest.raises(DataError, match="split_ratios"):
        random_split(songs, (0.7, 0.2, 0.2))
    with pytest.raises(DataError, match="Genre blues has only 2"):
        random_split({"blues.00000": "blues", "blues.00001": "blues"}, (0.6, 0.2, 0.2))


def test_artist_split_follows_the_lists(music, tmp_path, caplog):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train_filtered.txt").write_text("blues/blues.00000.wav\njazz.00001.wav\nrock.00002\npop/pop.00077.wav\n")
    (lists / "valid_filtered.txt").write_text("# comment\nclassical/classical.00000.wav\n")
    (lists / "test_filtered.txt").write_text("3\n")  # dnn-mgr's index form: 3 -> blues.00002
    out = tmp_path / "manifest"
    with caplog.at_level(logging.WARNING):  # the genres folder itself is a valid data folder too
        prepare_gtzan(music / "genres", out, split="artist", artist_split_folder=lists)
    assert "pop.00077" in caplog.text  # listed but not there
    clips = {s: sorted({e["clip_id"] for e in entries.values()}) for s, entries in manifests(out).items()}
    assert clips == {
        "train": ["blues.00000", "jazz.00001", "rock.00002"],
        "valid": ["classical.00000"],
        "test": ["blues.00002"],
    }
    (lists / "test_filtered.txt").write_text("jazz/jazz.00001.wav\n")
    with pytest.raises(DataError, match="jazz.00001 is listed in both train and test"):
        prepare_gtzan(music, out, split="artist", artist_split_folder=lists)
    (lists / "valid_filtered.txt").unlink()
    with pytest.raises(DataNotFoundError, match="valid_filtered.txt"):
        prepare_gtzan(music, out, split="artist", artist_split_folder=lists)


def test_shipped_artist_split_is_the_fault_filtered_one():
    lists = [read_split_list(gtzan.PACKAGED_ARTIST_SPLIT / name) for name in gtzan.ARTIST_SPLIT_FILES]
    assert [len(set(x)) for x in lists] == [443, 197, 290]
    assert not set(lists[0]) & set(lists[1]) and not set(lists[0]) & set(lists[2]) and not set(lists[1]) & set(lists[2])
    assert lists[0][0] == "blues.00029" and {c.split(".")[0] for c in lists[2]} == set(GTZAN_GENRES)
    everything = {f"{g}.{k:05d}": g for g in GTZAN_GENRES for k in range(100)}
    assert [len(v) for v in artist_split(everything).values()] == [443, 197, 290]


def test_missing_data_offline_says_where_to_put_it(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    target = tmp_path / "GTZAN"
    with pytest.raises(DataNotFoundError, match=r"download failed.*genres.tar.gz.*MD5 5b3d6ddd.*--data_folder.*GTZAN"):
        prepare_gtzan(target, tmp_path / "m")
    with pytest.raises(DataNotFoundError, match="No GTZAN data in .*GTZAN"):
        prepare_gtzan(target, tmp_path / "m", download=False)
    assert not list(tmp_path.glob(".*.part"))
    (target / "genres" / "blues").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match=r"Genre folder\(s\) \['classical'"):
        prepare_gtzan(target, tmp_path / "m")


def test_download_installs_a_local_archive_and_refuses_bad_ones(music, tmp_path):
    archive = tmp_path / "genres.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(music / "genres" / "disco", arcname="genres/disco")
    md5 = file_digest(archive, "md5")
    with pytest.raises(IntegrityError, match="MD5 .* expected 0000"):
        ensure_gtzan(tmp_path / "bad", url=archive.as_uri(), md5="0" * 32)
    assert not (tmp_path / "bad" / "genres").exists()
    folder = ensure_gtzan(tmp_path / "data" / "GTZAN", url=archive.as_uri(), md5=md5)
    assert folder == tmp_path / "data" / "GTZAN" / "genres" and len(list((folder / "disco").glob("*.wav"))) == 3
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]  # no temporary leftovers
    flat = tmp_path / "flat.tar.gz"  # genre folders at the archive's top go to data_folder/genres
    with tarfile.open(flat, "w:gz") as tar:
        tar.add(music / "genres" / "pop", arcname="pop")
    assert ensure_gtzan(tmp_path / "flat", url=flat.as_uri(), md5=None) == tmp_path / "flat" / "genres"
    assert len(list((tmp_path / "flat" / "genres" / "pop").glob("*.wav"))) == 3
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(music / "genres" / "disco" / "disco.00000.wav", arcname="genres/../../escaped.wav")
    with pytest.raises(IntegrityError, match="escaped.wav.*outside"):
        ensure_gtzan(tmp_path / "e" / "GTZAN", url=evil.as_uri(), md5=None)
    assert not list(tmp_path.rglob("escaped.wav"))


def test_whole_clips_are_cut_into_segments_when_asked(synthetic_data, tmp_path):
    from common.data.esc50 import prepare_esc50

    paths = {s: tmp_path / f"{s}.json" for s in ("train", "valid", "test")}
    prepare_esc50(synthetic_data, paths["train"], paths["valid"], paths["test"])
    encoder = build_label_encoder(list(paths.values()), 3)
    whole = classification_datasets(paths, encoder, 16000, 1.0)
    assert len(whole["test"]) == 3 and all(item["clip_id"] == item["id"] for item in whole["test"])
    cut = classification_datasets(paths, encoder, 16000, 0.5, segment_s=0.5, segment_hop_s=0.5)
    items = list(cut["test"])
    assert len(items) == 6 and {item["sig"].shape for item in items} == {(8000,)}
    assert sorted(item["clip_id"] for item in items) == sorted(2 * [item["id"] for item in whole["test"]])


def test_unknown_dataset_name_is_refused():
    with pytest.raises(DataError, match="Unknown dataset 'fma'.*esc50.*gtzan"):
        prepare_from_hparams({"dataset": "fma"})


# ----------------------------------------------------------------- models
@pytest.mark.parametrize("convs_per_block", [1, 2])
def test_log_mel_cnn_is_a_plain_sequence_of_lrp_friendly_modules(convs_per_block):
    encoder = LogMelCNN(channels=[4, 8, 16], convs_per_block=convs_per_block)
    layers = list(encoder.features)
    assert len(layers) == 3 * (3 * convs_per_block + 1)
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Conv2d):
            assert layer.kernel_size == (3, 3) and layer.padding == (1, 1)
            assert isinstance(layers[i + 1], nn.BatchNorm2d) and isinstance(layers[i + 2], nn.ReLU)
    assert [type(m) for m in layers].count(nn.MaxPool2d) == 3 and isinstance(layers[-1], nn.MaxPool2d)
    assert encoder(torch.randn(2, 130, 128)).shape == (2, 16, 16, 16)
    head = GenreHead(16, 10, hidden=8)
    assert [type(m) for m in head.layers] == [nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert [type(m) for m in GenreHead(16, 10, hidden=0).layers] == [nn.Dropout, nn.Linear]
    assert head(torch.randn(2, 16)).shape == (2, 10)


def test_clip_aggregation_averages_segment_probabilities():
    clips = ClipAggregator(3)
    clips.add(
        ["a", "a", "b"], torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.0, 0.8], [0.1, 0.8, 0.1]]), torch.tensor([0, 0, 2])
    )
    clips.add(["b"], torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([2]))
    mean = clips.mean_probabilities()
    assert np.allclose(mean["a"], [0.55, 0.05, 0.4]) and np.allclose(mean["b"], [0.05, 0.4, 0.55])
    assert clips.confusion().tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]


# ----------------------------------------------------------------- the recipe
def run_in_process(hparams_file, *args):
    """The recipe's ``main`` in this process: the same code as the command line without re-importing
    torch and SpeechBrain (the command line itself is run once, in the first recipe test)."""
    spec = importlib.util.spec_from_file_location("gtzan_train_classifier", RECIPE / "train_classifier.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([str(hparams_file), *map(str, args)])


def check_outputs(out, n_classes):
    result = json.loads((out / "test_results.json").read_text())
    assert 0.0 <= result["acc"] <= 1.0 and result["clip_acc"] == result["acc"]
    assert 0.0 <= result["segment_acc"] <= 1.0 and result["error"] == pytest.approx(1 - result["acc"])
    assert result["n_clips"] >= 1 and result["n_segments"] >= result["n_clips"]
    assert (
        sum(map(sum, result["confusion_matrix"])) == result["n_clips"] and len(result["confusion_matrix"]) == n_classes
    )
    assert sum(map(sum, result["segment_confusion_matrix"])) == result["n_segments"]
    assert all(0.0 <= v <= 1.0 for v in result["per_class_acc"].values())
    table = (out / "per_class_accuracy.md").read_text()
    assert table.startswith("| class | accuracy | clips | segment accuracy | segments |")
    assert mpimg.imread(out / "confusion_matrix.png").ndim == 3
    log = (out / "train_log.txt").read_text()
    assert "valid segment_acc" in log and "test acc" in log
    return result


def test_recipe_on_synthetic_gtzan_then_test_only_reproduces_and_the_checkpoint_loads(music, tmp_path):
    from common.models.pretrained import load_classifier
    from common.recipe import load_hparams

    out = tmp_path / "out"
    hparams_file = RECIPE / "hparams" / "classifier_cnn.yaml"
    # batches of 10: the two debug batches hold the whole test split (10 songs x 2 segments)
    args = ["--data_folder", music, "--output_folder", out, *TINY, "--batch_size", "10"]
    run_recipe(RECIPE / "train_classifier.py", hparams_file, *args, "--debug", "--debug_persistently")
    first = check_outputs(out, 10)
    train = json.loads((out / "manifest" / "train.json").read_text())
    assert len(train) == 2 * 10 and {e["start_s"] for e in train.values()} == {0.0, 3.0}
    run_in_process(hparams_file, *args, "--test_only")
    again = json.loads((out / "test_results.json").read_text())
    assert again["acc"] == first["acc"] and again["segment_acc"] == first["segment_acc"]
    assert again["loss"] == pytest.approx(first["loss"], rel=1e-5) and again["checkpoint"] == first["checkpoint"]

    # an explanation recipe's loader reads the checkpoint and label encoder unchanged
    hparams = load_hparams(
        hparams_file,
        {"data_folder": str(music), "output_folder": str(tmp_path / "x"), "channels": [4, 8], "head_hidden": 8},
    )
    model = hparams["model"].eval()
    folder = load_classifier(model, out / "save", tmp_path / "collect")
    assert folder.name == first["checkpoint"] and (folder.parent / "label_encoder.txt").is_file()
    wav, _ = sf.read(music / "genres" / "pop" / "pop.00000.wav", dtype="float32")
    with torch.no_grad():
        probabilities = model.predict_proba(model.features(torch.from_numpy(wav[: 3 * SR])[None]))
    assert probabilities.shape == (1, 10) and torch.allclose(probabilities.sum(), torch.tensor(1.0))


def test_vgg_recipe_on_synthetic_gtzan(music, tmp_path):
    out = tmp_path / "out"
    run_in_process(
        RECIPE / "hparams" / "classifier_vgg.yaml",
        *["--data_folder", music, "--output_folder", out, *TINY, "--batch_size", "4"],
        *["--debug", "--debug_persistently"],
    )
    check_outputs(out, 10)
    ckpt = next((out / "save").glob("CKPT+*"))
    state = torch.load(ckpt / "embedding_model.ckpt", weights_only=True)
    assert sum(k.endswith("weight") and v.ndim == 4 for k, v in state.items()) == 4  # two convs per block


def test_recipe_on_real_esc10_through_the_same_script(esc10_data, tmp_path):
    out = tmp_path / "out"
    run_in_process(
        RECIPE / "hparams" / "classifier_cnn.yaml",
        *["--dataset", "esc50", "--data_folder", esc10_data, "--output_folder", out, *TINY, "--batch_size", "4"],
        *["--segment_hop_s", "2", "--debug"],
    )
    result = check_outputs(out, 10)
    assert set(result["labels"]) == {
        "dog",
        "rooster",
        "rain",
        "sea_waves",
        "crackling_fire",
        "crying_baby",
        "sneezing",
        "clock_tick",
        "helicopter",
        "chainsaw",
    }
    assert len(json.loads((out / "manifest" / "train.json").read_text())) == 240  # whole clips, cut when loaded
    assert result["n_clips"] < result["n_segments"] <= 2 * result["n_clips"]  # two 3 s segments of a 5 s clip


def test_global_ale_on_a_trained_classifier(music, tmp_path):
    """global_ale.py on the synthetic set: a curve per feature and genre, centred, and the plots."""
    out = tmp_path / "cls"
    args = ["--data_folder", music, "--output_folder", out, *TINY, "--batch_size", "10"]
    run_in_process(RECIPE / "hparams" / "classifier_cnn.yaml", *args, "--debug", "--debug_persistently")
    spec = importlib.util.spec_from_file_location("gtzan_global_ale", RECIPE / "global_ale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ale_out = tmp_path / "ale"
    features = "[band_energy_low,loudness,spectral_centroid]"
    module.main(
        [str(RECIPE / "hparams" / "ale.yaml"), "--data_folder", str(music), "--output_folder", str(ale_out),
         "--classifier_source", str(out / "save"), *TINY, "--ale_intervals", "3", "--ale_features", features]
    )  # fmt: skip
    result = json.loads((ale_out / "ale" / "ale.json").read_text())
    assert result["class_names"] == sorted(GTZAN_GENRES) or len(result["class_names"]) == 10
    assert [f["feature"] for f in result["features"]] == ["band_energy_low", "loudness", "spectral_centroid"]
    for feature in result["features"]:
        ale = np.asarray(feature["ale"])
        assert ale.shape[1] == 10 and np.isfinite(ale).all()
        assert np.allclose(ale.sum(axis=1), 0.0, atol=1e-5)  # probabilities: effects sum to 0 over the genres
    rows = (ale_out / "ale" / "ale_importance.md").read_text().splitlines()
    assert rows[0].startswith("| feature |") and len(rows) == 2 + 3
    for name in ("band_energy_low", "loudness", "spectral_centroid"):
        assert mpimg.imread(ale_out / "ale" / f"ale_{name}.png").ndim == 3
