"""Music emotion through mid-level features: the data sets' layouts and their errors, the OSF download, the
generator's controlled attributes, the bottleneck model, concept-level Kernel SHAP and the agreement measures."""

import hashlib
import json
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch

from common.analysis.midlevel_explanations import concept_kernel_shap, weight_rows
from common.data.midlevel import (
    EMOTIONS,
    MIDLEVEL_FEATURES,
    download_osf_project,
    osf_files,
    prepare_music_emotion,
    read_midlevel,
    read_ratings,
    read_soundtracks,
)
from common.data.synthetic.midlevel_music import TRUE_WEIGHTS, make_midlevel_music, render, true_emotions
from common.errors import DataError, DataNotFoundError, IntegrityError
from common.metrics.regression import explanation_agreement, pearson_r
from common.models.genre_cnn import LogMelCNN
from common.models.midlevel import MidLevelEmotionModel, masked_mse

ATTRIBUTES = np.array([0.6, 0.3, 0.7, 0.5, 0.4, 0.8, 0.5])


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    out = tmp_path_factory.mktemp("midlevel_music")
    truth = make_midlevel_music(
        out, n_midlevel=12, n_soundtracks=10, seed=3, duration_s=1.0, mid_noise=0.0, emotion_noise=0.0
    )
    return out, truth


# ------------------------------------------------------------------ generator
def test_each_attribute_changes_only_what_it_controls():
    wav, realised = render(ATTRIBUTES, seed=7)
    again, realised_again = render(ATTRIBUTES, seed=7)
    assert np.array_equal(wav, again) and np.array_equal(realised, realised_again)
    assert not np.array_equal(wav, render(ATTRIBUTES, seed=8)[0])
    for k, name in enumerate(MIDLEVEL_FEATURES):
        changed = ATTRIBUTES.copy()
        changed[k] = 1.0 - changed[k] if abs(changed[k] - 0.5) > 0.1 else 0.05
        wav_k, realised_k = render(changed, seed=7)
        assert not np.array_equal(wav_k, wav), name  # audible
        assert realised_k[k] != realised[k], name
        others = [j for j in range(7) if j != k and not (name == "rhythm_complexity" and j == 0)]
        # the realised melodiousness is a share of the melody's steps, so the number of notes reaches it
        assert np.array_equal(realised_k[others], realised[others]), name


def test_the_attributes_are_what_the_audio_does():
    def level_fluctuation(articulation, seed):  # std of the 10 ms level's steps: staccato notes start and stop
        wav, _ = render([0.5, articulation, 1.0, 0.0, 0.0, 1.0, 0.0], seed=seed)
        frames = wav[: len(wav) // 160 * 160].reshape(-1, 160)
        return np.std(np.diff(20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-9)))

    for seed in range(3):
        assert level_fluctuation(1.0, seed) > 1.8 * level_fluctuation(0.0, seed)
    _, extremes = render([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], seed=2)
    assert extremes.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    _, low = render(np.zeros(7), seed=2)
    assert low.tolist() == [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="7 values"):
        render([0.5] * 6, seed=0)


def test_the_written_data_sets_hold_the_truth(music):
    out, truth = music
    mid = {clip: (path, values) for clip, path, values in read_midlevel(out / "midlevel")}
    st = {clip: (path, values) for clip, path, values in read_soundtracks(out / "soundtracks")}
    assert len(mid) == 12 and len(st) == 10 and "001" in st
    for clip, (path, values) in mid.items():
        realised = np.array(truth["clips"][f"midlevel/{clip}"]["realised"])
        np.testing.assert_allclose(values, 1 + 9 * realised, atol=1e-3)  # no rating noise asked for
        assert sf.info(path).samplerate == 16000 and sf.info(path).duration == pytest.approx(1.0)
    for clip, (_, values) in st.items():
        realised = np.array(truth["clips"][f"soundtracks/{clip}"]["realised"])
        np.testing.assert_allclose(values, np.clip(true_emotions(realised), 1, 9), atol=1e-3)


# ------------------------------------------------------------------ layouts and their errors
def test_ratings_headers_are_matched_loosely_and_bad_rows_are_named(tmp_path):
    table = tmp_path / "mean_ratings_set1.csv"
    table.write_text(
        "\ufeffNumber, Valence,ENERGY,tension,anger,fear,happy,sad,tender,TARGET,\n1,5,6,4,3,2,6,3,4,HAPPY,\n2,1,2,3,4,5,6,7,8,SAD,\n"
    )
    ratings = read_ratings(table, ("number",), EMOTIONS)
    assert ratings["1"].tolist() == [5, 6, 4, 3, 2, 6, 3, 4] and len(ratings) == 2
    table.write_text("Number,valence,energy\n1,2,3\n")
    with pytest.raises(DataError, match=r"lacks the columns \['tension'"):
        read_ratings(table, ("number",), EMOTIONS)
    table.write_text("number," + ",".join(EMOTIONS) + "\n1,5,6,4,3,2,6,3,4\n2,5,x,4,3,2,6,3,4\n")
    with pytest.raises(DataError, match="line 3"):
        read_ratings(table, ("number",), EMOTIONS)
    table.write_text("number," + ",".join(EMOTIONS) + "\n1,5,6,4,3,2,6,3,4\n01,5,6,4,3,2,6,3,4\n")
    with pytest.raises(DataError, match="line 3: clip 1 is rated twice"):
        read_ratings(table, ("number",), EMOTIONS)
    table.write_text("track," + ",".join(EMOTIONS) + "\n1,5,6,4,3,2,6,3,4\n")
    with pytest.raises(DataError, match="an id column"):
        read_ratings(table, ("number",), EMOTIONS)


def test_missing_and_corrupt_audio_are_named(music, tmp_path):
    out, _ = music
    import shutil

    copy = tmp_path / "soundtracks"
    shutil.copytree(out / "soundtracks", copy)
    (copy / "Set1" / "004.wav").unlink()
    with pytest.raises(DataError, match=r"1 clips rated in .*mean_ratings_set1.csv have no audio .*'004'"):
        read_soundtracks(copy)
    shutil.copy(copy / "Set1" / "005.wav", copy / "Set1" / "004.wav")
    (copy / "Set1" / "006.wav").write_bytes(b"not audio at all")
    manifests = {s: tmp_path / "manifest" / f"{s}.json" for s in ("train", "valid", "test")}
    with pytest.raises(DataError, match="006.wav cannot be read as audio"):
        prepare_music_emotion(out / "midlevel", copy, manifests, download=False)
    assert not any(p.exists() for p in manifests.values())  # nothing half-written
    with pytest.raises(DataNotFoundError, match="osf.io/5aupt.*make_midlevel_music"):
        prepare_music_emotion(tmp_path / "nothing", copy, manifests, download=False)


def test_the_manifests_rate_each_clip_for_what_its_data_set_rates(music, tmp_path):
    out, _ = music
    manifests = {s: tmp_path / "manifest" / f"{s}.json" for s in ("train", "valid", "test")}
    prepare_music_emotion(out / "midlevel", out / "soundtracks", manifests, soundtracks_split_ratios=(0.6, 0.2, 0.2))
    entries = {s: json.loads(p.read_text()) for s, p in manifests.items()}
    ids = [set(e) for e in entries.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2]) and len(set.union(*ids)) == 22
    assert sum(k.startswith("soundtracks/") for k in ids[2]) == 2
    for split in entries.values():
        for clip, e in split.items():
            rated_mid, rated_emotion = not np.isnan(e["mid"]).any(), not np.isnan(e["emotion"]).any()
            assert (rated_mid, rated_emotion) == ((True, False) if clip.startswith("midlevel/") else (False, True))
            assert len(e["mid"]) == 7 and len(e["emotion"]) == 8
    stamp_time = manifests["train"].stat().st_mtime_ns
    prepare_music_emotion(out / "midlevel", out / "soundtracks", manifests, soundtracks_split_ratios=(0.6, 0.2, 0.2))
    assert manifests["train"].stat().st_mtime_ns == stamp_time  # the same inputs: skipped


def _osf_listing(tmp_path, files, with_folder=True):
    """An OSF API listing (two pages, one folder) of local files, served as file:// URLs."""

    def entry(path, sha256):
        return {
            "attributes": {"kind": "file", "name": path.name, "extra": {"hashes": {"sha256": sha256}}},
            "links": {"download": path.as_uri()},
        }

    folder_page = tmp_path / "api_folder.json"
    folder_page.write_text(json.dumps({"data": [entry(*files[1])], "links": {"next": None}}))
    page2 = tmp_path / "api_page2.json"
    page2.write_text(json.dumps({"data": [entry(*files[0])], "links": {"next": None}}))
    folder = {
        "attributes": {"kind": "folder", "name": "audio"},
        "relationships": {"files": {"links": {"related": {"href": folder_page.as_uri()}}}},
    }
    page1 = tmp_path / "api_page1.json"
    page1.write_text(json.dumps({"data": [folder] if with_folder else [], "links": {"next": page2.as_uri()}}))
    return page1.as_uri()


def test_the_osf_download_checks_every_file_and_extracts_safely(music, tmp_path):
    out, _ = music
    archive = tmp_path / "served" / "metadata_annotations.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as z:
        for path in (out / "midlevel").rglob("*"):
            if path.is_file():
                z.write(path, path.relative_to(out / "midlevel"))
    notes = tmp_path / "served" / "README.txt"
    notes.write_text("the data set's notes")
    sha = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (archive, notes)}
    api = _osf_listing(tmp_path, [(archive, sha[archive]), (notes, sha[notes])])
    assert sorted(name for name, _, _ in osf_files("5aupt", api)) == ["README.txt", "metadata_annotations.zip"]
    target = tmp_path / "midlevel"
    download_osf_project("5aupt", target, api)
    assert len(read_midlevel(target)) == 12 and (target / "README.txt").is_file()
    assert not (target / "metadata_annotations.zip").exists()

    bad = tmp_path / "bad"
    api = _osf_listing(tmp_path, [(archive, "0" * 64), (notes, sha[notes])])
    with pytest.raises(IntegrityError, match="expected 0000"):
        download_osf_project("5aupt", bad, api)
    assert not (bad / "metadata_annotations.zip").exists()
    api = _osf_listing(tmp_path, [(archive, None), (notes, sha[notes])])
    with pytest.raises(DataError, match="no SHA-256 for metadata_annotations.zip"):
        download_osf_project("5aupt", bad, api)
    with pytest.raises(DataNotFoundError, match="Cannot list the files of osf.io/5aupt.*make_midlevel_music"):
        download_osf_project("5aupt", bad, (tmp_path / "no_such_listing.json").as_uri())


# ------------------------------------------------------------------ the model
def tiny_model(bottleneck=True):
    from common.features import Log1pSpectrogram

    torch.manual_seed(0)
    front_end = Log1pSpectrogram(sample_rate=16000, n_fft=512, win_length=32, hop_length=16, n_mels=32)
    return MidLevelEmotionModel(front_end, LogMelCNN(channels=(4, 8)), emb_dim=8, bottleneck=bottleneck)


def test_the_bottleneck_is_one_linear_layer_in_rating_units():
    model = tiny_model()
    rng = np.random.default_rng(0)
    mid, emotion = 1 + 9 * rng.random((50, 7)), 1 + 8 * rng.random((50, 8))
    mid[:20], emotion[20:] = np.nan, np.nan  # two data sets, each rating one kind
    model.set_target_scaling(mid, emotion)
    np.testing.assert_allclose(model.mid_mean.numpy(), np.nanmean(mid, axis=0), rtol=1e-5)
    np.testing.assert_allclose(model.emotion_std.numpy(), np.nanstd(emotion, axis=0), rtol=1e-4)
    model.eval()
    out = model(torch.randn(3, 8000))
    w, b = model.rating_weights()
    torch.testing.assert_close(out["emotion"], out["mid"] @ w.T + b)
    with pytest.raises(ValueError, match="no mid-level layer"):
        tiny_model(bottleneck=False).rating_weights()


def test_separate_training_stops_the_emotion_gradient_at_the_bottleneck():
    model = tiny_model()
    X = model.features(torch.randn(4, 8000))
    target = torch.randn(4, 8)
    for detach, reaches in ((True, False), (False, True)):
        model.zero_grad()
        masked_mse(model.forward_standardised(X, detach_mid=detach)["emotion"], target).backward()
        encoder_grad = sum(p.grad.abs().sum() for p in model.encoder.parameters() if p.grad is not None)
        assert bool(encoder_grad > 0) == reaches
        assert model.emotion_layer.weight.grad.abs().sum() > 0


def test_masked_mse_counts_rated_entries_only():
    predicted = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    target = torch.tensor([[2.0, float("nan")], [float("nan"), float("nan")]])
    assert masked_mse(predicted, target).item() == 1.0
    none = masked_mse(predicted, torch.full((2, 2), float("nan")))
    none.backward()  # a batch with nothing rated keeps the graph and adds nothing
    assert none.item() == 0.0 and predicted.grad.abs().sum() == 0


# ------------------------------------------------------------------ explanations and their agreement
def test_concept_kernel_shap_is_exact_shapley():
    reference = np.full(7, 0.5)
    W = np.random.default_rng(1).normal(size=(3, 7))

    def linear(rows):
        return rows @ W.T

    phi, values, rows = concept_kernel_shap(linear, ATTRIBUTES, reference, n_samples=200)
    np.testing.assert_allclose(phi, W * (ATTRIBUTES - reference)[None, :], atol=1e-10)
    assert rows.shape == (128, 7) and rows[0].all() and not rows[1].any()

    def product(rows):  # an interaction: each player gets half of it
        return (rows[:, 0] * rows[:, 1])[:, None]

    phi, _, _ = concept_kernel_shap(product, ATTRIBUTES, reference, n_samples=200)
    a, r = ATTRIBUTES, reference
    expected0 = 0.5 * ((a[0] * r[1] - r[0] * r[1]) + (a[0] * a[1] - r[0] * a[1]))
    assert phi[0, 0] == pytest.approx(expected0) and np.allclose(phi[0, 2:], 0.0, atol=1e-12)
    assert phi[0].sum() == pytest.approx(a[0] * a[1] - r[0] * r[1])
    sampled, _, _ = concept_kernel_shap(linear, ATTRIBUTES, reference, n_samples=60, seed=0)
    np.testing.assert_allclose(sampled, W * (ATTRIBUTES - reference)[None, :], atol=1e-8)  # linear: any rows


def test_agreement_and_weight_measures_tell_right_from_wrong():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 7))
    same = explanation_agreement(a, 2 * a)
    assert same["spearman"] == pytest.approx(1.0) and same["sign_agreement"] == 1.0 and same["top1_agreement"] == 1.0
    flipped = explanation_agreement(a, -a)
    assert flipped["spearman"] == pytest.approx(-1.0) and flipped["sign_agreement"] == 0.0
    assert abs(explanation_agreement(a, rng.normal(size=a.shape))["spearman"]) < 0.3
    right, rows = weight_rows(TRUE_WEIGHTS / 9.0 * 1.7)
    assert right["sign agreement (true weight != 0)"] == 1.0 and right["spearman (all 56 weights)"] == pytest.approx(
        1.0
    )
    assert rows[0]["signs right"] == "4/4"
    wrong = TRUE_WEIGHTS.copy()
    wrong[:, 6] *= -1  # minorness read backwards
    worse, rows = weight_rows(wrong / 9.0)
    assert worse["sign agreement (true weight != 0)"] < 0.9 and rows[EMOTIONS.index("sad")]["signs right"] == "2/3"
    assert np.isnan(pearson_r([1, 2], [1, 2])) and pearson_r([1, 2, 3, 4], [2, 4, 6, np.nan]) == pytest.approx(1.0)
