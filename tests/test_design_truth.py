"""Ground truth on the classifier's own grid, events on the loaded clip's scale, removal-robust training,
and the per-design analyses (relevance per event, the shortcut cue's reliance and top region)."""

from pathlib import Path

import pytest
import torch

from common.analysis.leaderboard.clips import load_clips, select_rows
from common.data.synthetic.ground_truth import evidence_on_grid, mask_on_grid, read_ground_truth
from common.data.synthetic.scenes import make_synthetic_esc50
from common.features import Log1pSpectrogram
from common.metrics.evidence import cue_reliance
from common.metrics.localization import relevance_shares, top_region_on
from common.models.augment import SilencePatches

TINY = {"n_classes": 4, "clips_per_class": 10, "duration_s": 1.5, "event_s": (0.3, 0.6), "seed": 0}


@pytest.fixture(scope="module")
def front_end():
    return Log1pSpectrogram(sample_rate=16000, n_fft=1024, hop_length=11.6099, win_length=23.2199, n_mels=64)


@pytest.fixture(scope="module")
def quiet(tmp_path_factory, front_end):
    folder = tmp_path_factory.mktemp("quiet_truth")
    make_synthetic_esc50(folder, design="quiet_evidence", **TINY)
    rows = select_rows(folder, [1, 2, 3, 4, 5], 40)
    return folder, rows, load_clips(folder, rows, 16000, TINY["duration_s"], front_end)


def test_loaded_events_are_on_the_scale_of_the_loaded_clips(quiet):
    """clip - event is the distractor layer, which the k-th clip of every class shares (the loader peak-normalises
    the clip: an event left at the file's scale leaves a class-dependent residue)."""
    _, rows, clips = quiet
    rest = clips.wavs - clips.event_wavs
    by_k = {}
    for k, row in enumerate(rows):
        by_k.setdefault(int(row["src_file"]) % 1000, []).append(rest[k])
    assert all(len(v) == TINY["n_classes"] for v in by_k.values())
    # the same layer up to the clip's normalisation (the peak may be the event's): proportional to float32 rounding
    for layers in by_k.values():
        first = layers[0] / layers[0].norm()
        for other in layers[1:]:
            assert torch.allclose(first, other / other.norm(), atol=1e-5)


def test_the_evidence_mask_is_computed_on_the_classifier_grid(quiet, front_end):
    """Outside the ground truth the event changes no bin by more than the rule allows (event <= rest: between
    -inf, cancelling, and 20 log10(2) = +6.02 dB); the STFT-grid mask mapped to mel bands by majority misses bins
    the event changes by far more (a tone fills one STFT bin of a wide mel band)."""
    folder, rows, clips = quiet
    with torch.no_grad():
        mix_db = front_end.to_db(front_end(clips.wavs))
        rest_db = front_end.to_db(front_end(clips.wavs - clips.event_wavs))
        event_db = front_end.to_db(front_end(clips.event_wavs))
    change = mix_db - rest_db
    audible = event_db > event_db.flatten(1).amax(1)[:, None, None] - 60  # the rule's floor
    outside = (clips.ground_truth < 0.5) & audible
    assert float(change[outside].max()) <= 6.03
    majority = torch.stack(
        [
            mask_on_grid(
                torch.from_numpy(read_ground_truth(folder, r["filename"][:-4])["mask"]).float(),
                front_end,
                change.shape[1:],
            )
            for r in rows
        ]
    )
    assert float(change[(majority < 0.5) & audible].abs().max()) > 10.0
    # and the mask is the rule itself
    k = 3
    assert torch.equal(
        clips.ground_truth[k] > 0.5,
        evidence_on_grid(front_end, clips.event_wavs[k], clips.wavs[k] - clips.event_wavs[k], 0.0, -60.0),
    )


def test_conjunction_part_masks_are_each_events_own(tmp_path, front_end):
    make_synthetic_esc50(tmp_path, design="conjunction", **TINY)
    rows = select_rows(tmp_path, [5], 4)
    clips = load_clips(tmp_path, rows, 16000, TINY["duration_s"], front_end)
    assert clips.part_masks.shape == (4, 2, *clips.ground_truth.shape[1:])
    for k, row in enumerate(rows):
        record = read_ground_truth(tmp_path, row["filename"][:-4])
        frames = torch.arange(clips.ground_truth.shape[1]) * front_end.hop / 16000
        for p in range(2):
            on = clips.part_masks[k, p].any(dim=1)
            assert on.any()
            lo, hi = float(record["part_onset_s"][p]), float(record["part_offset_s"][p])
            assert bool(((frames[on] >= lo - 0.05) & (frames[on] <= hi + 0.05)).all())  # in its own span


def test_silence_patches_fill_with_the_silence_in_training_only():
    torch.manual_seed(0)
    X = torch.rand(6, 50, 20) + 1.0
    silence = torch.full((6, 1, 1), -3.0)
    aug = SilencePatches(max_patches=3, frames=(4, 8), bins=(2, 4), p=1.0, max_loudest=0.1)
    out = aug.train()(X, silence)
    filled = out == -3.0
    assert filled.any(dim=(1, 2)).all()  # p = 1: every clip
    assert torch.equal(out[~filled], X[~filled])  # nothing else changes
    assert float(filled.double().mean()) < 0.1 + 3 * 8 * 4 / (50 * 20) + 1e-9
    assert torch.equal(aug.eval()(X, silence), X)
    # the loudest-bins part silences the loudest bins
    loud = SilencePatches(max_patches=0, p=1.0, max_loudest=0.2).train()(X, silence)
    for b in range(6):
        gone = loud[b] == -3.0
        if gone.any():
            assert float(X[b][gone].min()) >= float(X[b][~gone].max())


def test_relevance_shares_and_top_region_on_the_cue():
    saliency = torch.zeros(2, 10, 4)
    saliency[0, 1, 1], saliency[0, 7, 2], saliency[0, 5, 0] = 3.0, 1.0, -5.0  # negative relevance is not counted
    saliency[1, 7, 2] = 1.0
    parts = torch.zeros(2, 2, 10, 4)
    parts[:, 0, 0:3, :] = 1
    parts[:, 1, 6:9, :] = 1
    assert torch.allclose(
        relevance_shares(saliency, parts), torch.tensor([[0.75, 0.25], [0.0, 1.0]], dtype=torch.float64)
    )
    cue = torch.zeros(2, 10, 4)
    cue[0, 1, 1:3] = 1  # two bins: the top two are (1, 1) and (7, 2): half on the cue, not most
    cue[1, 7, 2] = 1
    hits = top_region_on(saliency, cue)
    assert hits.tolist() == [0.0, 1.0]
    cue[0, 7, 2] = 1  # three bins now: the top three hold two of them
    assert top_region_on(saliency, cue)[0] == 1.0
    assert torch.isnan(top_region_on(saliency, torch.zeros(2, 10, 4))).all()


class BandVoter(torch.nn.Module):
    """logits: class = the loudest of 4 bands (bins 0-3), unless the cue band (bin 4) is on: then class 0."""

    def logits(self, X):
        scores = X[:, :, :4].mean(dim=1)
        cue = X[:, :, 4].amax(dim=1) > 0.5
        scores[cue, 0] = 100.0
        return scores


def test_cue_reliance_counts_flips_to_the_cue_class():
    labels = torch.tensor([1, 2, 3, 0, 1])
    X = torch.zeros(5, 6, 5)
    for k, c in enumerate(labels.tolist()):
        X[k, :, c] = 1.0
    X_with = X.clone()
    has_cue = torch.tensor([True, True, False, False, True])
    X_with[has_cue, 2, 4] = 1.0
    r = cue_reliance(BandVoter(), X_with, X, labels, has_cue, cue_class=0)
    assert r["n_clips_with_cue"] == 3
    assert r["accuracy_without_cue"] == 1.0 and r["accuracy_with_cue"] == 0.0
    assert r["flip_rate"] == 1.0 and r["cue_class_rate"] == 1.0 and r["cue_class_rate_without"] == 0.0
    assert r["followed"].tolist() == [True, True, False, False, True]
    # a model that ignores the cue: no reliance
    r = cue_reliance(BandVoter(), X, X, labels, has_cue, cue_class=0)
    assert r["flip_rate"] == 0.0 and r["followed_rate"] == 0.0 and r["accuracy_with_cue"] == 1.0


def test_clever_hans_clips_carry_the_cue_class_and_waveform(tmp_path, front_end):
    make_synthetic_esc50(tmp_path, design="clever_hans", **TINY)
    folder = Path(tmp_path) / "shortcut_test"
    rows = select_rows(folder, [5], 8)
    clips = load_clips(folder, rows, 16000, TINY["duration_s"], front_end)
    has = clips.cue_wavs.abs().amax(dim=-1) > 0
    assert clips.cue_class == "harmonic_low"
    assert has.tolist() == [label != "harmonic_low" for label in clips.labels]
    assert bool((clips.cue_masks.flatten(1).sum(1) > 0).eq(has).all())
    # removing the cue waveform removes the cue: its bins fall back to the rest's level
    with torch.no_grad():
        X = front_end(clips.wavs)
        X_without = front_end(clips.wavs - clips.cue_wavs)
    on = clips.cue_masks > 0.5
    assert float((X - X_without)[on].mean()) > 0.5


class _Stub(BandVoter):
    """BandVoter on 'waveforms' that are its (6, 5) feature maps, flattened."""

    def features(self, wavs):
        return wavs.reshape(wavs.shape[0], 6, 5)


def test_the_leaderboard_scores_the_cue_only_where_the_model_followed_it():
    from types import SimpleNamespace

    from common.analysis.leaderboard.clips import Clips
    from common.analysis.leaderboard.run import CUE_COLUMN, EVENT_SHARES, classifier_cue_reliance, design_scores

    labels = ["b", "c", "a", "b"]  # class index: a 0 (the cue's), b 1, c 2
    X = torch.zeros(4, 6, 5)
    for k, name in enumerate(labels):
        X[k, :, "abc".index(name)] = 1.0
    cue = torch.zeros(4, 6, 5)
    cue[[0, 1, 2], 2, 4] = 1.0  # clips 0-2 carry the cue (clip 2 is of its class: no flip); clip 3 does not
    clips = Clips(
        wavs=(X + cue).flatten(1),
        ids=["0", "1", "2", "3"],
        labels=labels,
        ground_truth=(X > 0).float(),
        cue_masks=cue,
        cue_wavs=cue.flatten(1),
        cue_class="a",
    )
    reliance = classifier_cue_reliance(_Stub(), {0: "a", 1: "b", 2: "c"}, clips)
    assert reliance["followed"].tolist() == [True, True, False, False]
    clips.followed_cue = reliance["followed"]
    saliency = torch.zeros(4, 6, 5)
    saliency[0, 2, 4] = 1.0  # on the cue
    saliency[1, 0, 2] = 1.0  # on the event (class c: band 2), not the cue
    evaluation = SimpleNamespace(batches=[SimpleNamespace(explanation=SimpleNamespace(saliency=saliency))])
    scores = design_scores(evaluation, clips)
    assert set(scores) == {CUE_COLUMN}  # no part masks: no per-event shares
    assert scores[CUE_COLUMN][:2].tolist() == [1.0, 0.0] and torch.isnan(scores[CUE_COLUMN][2:]).all()
    clips.part_masks = torch.stack([(X > 0).float(), cue], dim=1)
    shares = design_scores(evaluation, clips)
    assert shares[EVENT_SHARES[0]].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert shares[EVENT_SHARES[1]].tolist() == [1.0, 0.0, 0.0, 0.0]


def test_clever_hans_decoys_sound_another_class_event_in_the_asked_share_of_cue_clips(tmp_path):
    import numpy as np

    from common.data.esc50 import read_metadata

    make_synthetic_esc50(tmp_path, design="clever_hans", cue_fraction=1.0, decoy_fraction=0.5, **TINY)
    records = [
        (r, read_ground_truth(tmp_path, r["filename"][:-4])) for r in read_metadata(tmp_path / "meta" / "esc50.csv")
    ]
    with_cue = [(r, g) for r, g in records if bool(g["has_cue"])]
    decoys = [(r, g) for r, g in with_cue if bool(g["decoy"])]
    assert len(with_cue) == 8 and {r["target"] for r, _ in with_cue} == {0}  # class 0, folds 1-4 (10 per class)
    assert len(decoys) == 4 and not any(bool(g["decoy"]) for r, g in records if not bool(g["has_cue"]))
    # a decoy sounds another class's pattern: its event is not class 0's (harmonic_low) but one of the others'
    assert all(int(g["part_ids"][0]) != 0 for _, g in decoys)
    assert {int(g["part_ids"][0]) for _, g in decoys} == {1, 2, 3}  # drawn in turn
    assert all(int(g["part_ids"][0]) == 0 for _, g in with_cue if not bool(g["decoy"]))
    assert all(np.abs(g["event"]).any() for _, g in records)
    # the shortcut test has no decoys
    folder = tmp_path / "shortcut_test"
    for r in read_metadata(folder / "meta" / "esc50.csv"):
        assert not bool(read_ground_truth(folder, r["filename"][:-4])["decoy"])


def test_the_classifier_applies_its_feature_augmentation_in_training_only(front_end):
    from common.models import AudioClassifier

    seen = []

    class Spy(torch.nn.Module):
        def forward(self, X):
            seen.append(X.detach().clone())
            return X.mean(dim=1)  # (B, F) as an embedding

    head = torch.nn.Linear(64, 3)
    model = AudioClassifier(front_end, Spy(), head, feature_augmentation=SilencePatches(max_patches=3, p=1.0))
    wavs = torch.randn(2, 16000) * 0.1
    model.train()(wavs)
    model.eval()(wavs)
    clean = front_end(wavs)
    assert (seen[0] == 0).any() and not torch.equal(seen[0], clean)  # log1p's silence is 0
    assert torch.equal(seen[1], clean)
    # the recipe's default leaves it off
    from common.recipe import load_hparams, resolve

    hparams = load_hparams(
        resolve("recipes/ESC50/classification/hparams/logmel_cnn.yaml"),
        {"data_folder": "/nonexistent", "output_folder": "/tmp/unused_logmel"},
    )
    augmentation = hparams["model"].feature_augmentation
    assert augmentation.max_patches == augmentation.max_strokes == 0 and augmentation.max_loudest == 0.0


def test_matched_area_curves_plot_each_family_per_method(tmp_path):
    from types import SimpleNamespace

    from common.analysis.leaderboard.curves import area_curves, save_area_curves

    def result(label, offset):
        per_clip = {
            f"fid_in@{a}": torch.tensor([offset + k / 10, offset + k / 10 + 0.2]) for k, a in enumerate((5, 10, 20, 50))
        }
        per_clip["ad@5"] = torch.tensor([1.0])  # one area only: no curve for that family
        return SimpleNamespace(label=label, classifier="cnn", per_clip=per_clip)

    results = [result("a", 0.0), result("b", 0.5), SimpleNamespace(label="c", classifier="cnn", per_clip={})]
    curves = area_curves(results)
    assert set(curves) == {"fid_in"}
    assert curves["fid_in"][("cnn", "a")] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert curves["fid_in"][("cnn", "b")] == pytest.approx([0.6, 0.7, 0.8, 0.9])
    path = tmp_path / "curves.png"
    assert save_area_curves(results, path) == curves and path.stat().st_size > 1000
    assert save_area_curves(results[2:], tmp_path / "none.png") == {} and not (tmp_path / "none.png").exists()


def test_top_region_gives_a_time_only_map_no_credit_from_the_bins_order_and_nan_maps_score_nan():
    cue = torch.zeros(1, 20, 16)
    cue[0, 5:8, 0:2] = 1  # 6 bins in the lowest bands: an index-order tie-break would pick exactly them
    time_only = torch.zeros(1, 20, 16)
    time_only[0, 5:8, :] = 1.0  # the cue's frames, every band
    assert top_region_on(time_only, cue).tolist() == [0.0]
    sharp = time_only.clone()
    sharp[0, 5:8, 0:2] = 2.0
    assert top_region_on(sharp, cue).tolist() == [1.0]
    broken = sharp.clone()
    broken[0, 0, 0] = float("nan")
    assert torch.isnan(top_region_on(broken, cue)).all()
    assert torch.isnan(relevance_shares(broken, cue[:, None])).all()


def test_feature_augmentation_needs_a_declared_silence():
    from common.errors import ToolkitError
    from common.models import AudioClassifier

    class Mean(torch.nn.Module):
        def forward(self, X):
            return X.mean(dim=1)

    model = AudioClassifier(torch.nn.Identity(), Mean(), torch.nn.Linear(8, 2), feature_augmentation=SilencePatches(2))
    with pytest.raises(ToolkitError, match="silence"):
        model.train()(torch.rand(2, 10, 8))
    # off (the hparams' default): nothing is asked of the silence
    quiet = AudioClassifier(torch.nn.Identity(), Mean(), torch.nn.Linear(8, 2), feature_augmentation=SilencePatches(0))
    assert quiet.train()(torch.rand(2, 10, 8)).shape == (2, 2)
    # declared: it fills with that value
    declared = AudioClassifier(
        torch.nn.Identity(), Mean(), torch.nn.Linear(8, 2), silence=-1.0, feature_augmentation=SilencePatches(2, p=1.0)
    )
    assert declared.train()(torch.rand(2, 10, 8)).shape == (2, 2)
