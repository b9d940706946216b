"""AudioProtoPNet's localization levers: an earlier ConvNeXt stage, ProtoPNet's cluster / separation costs and
push, the background cost, the box rules, and the localization measurement they are judged by."""

import numpy as np
import pytest
import torch

from common.models.losses import prototype_background_cost, prototype_cluster_cost, prototype_separation_cost


def _model(prototype_stage=None, n_classes=2, k=2, seed=0):
    import transformers

    from common.features import MelDbSpectrogram
    from common.models.protopnet import AudioProtoPNet
    from common.models.prototypes import PrototypeHead

    torch.manual_seed(seed)
    sizes = [8, 16, 24, 32]
    config = transformers.ConvNextConfig(num_channels=1, hidden_sizes=sizes, depths=[1, 1, 1, 1])
    channels = sizes[min(prototype_stage or 4, 4) - 1]
    head = PrototypeHead(n_classes, k, channels)
    return AudioProtoPNet(MelDbSpectrogram(n_mels=64), transformers.ConvNextModel(config), head,
                          prototype_stage=prototype_stage).eval()  # fmt: skip


def test_an_earlier_stage_is_that_stages_map_and_lands_on_its_finer_grid():
    model = _model(prototype_stage=3)
    X = torch.randn(2, 626, 64)
    with torch.no_grad():
        reference = model.embedding_model(pixel_values=X.transpose(1, 2).unsqueeze(1), output_hidden_states=True)
        hidden = model.hidden(X)
    torch.testing.assert_close(hidden, reference.hidden_states[3])  # stage 3's output, not the last stage's
    assert hidden.shape == (2, 24, 64 // 16, 626 // 16)
    assert model.map_extent(626, 64) == (624, 64)  # 39 cells of 16 frames (the last stage: 19 of 32 = 608)
    assert _model().map_extent(626, 64) == (608, 64)
    cell = torch.zeros(1, 8, 78)  # the x2-upsampled stage-3 map: each cell onto its own 8 x 8 block
    cell[0, 5, 70] = 1.0
    t, f = divmod(int(model.map_to_spectrogram(cell, 626, 64)[0].argmax()), 64)
    assert 8 * 70 <= t < 8 * 71 and 8 * 5 <= f < 8 * 6
    assert _model(prototype_stage=4).prototype_stage is None  # the last stage is the paper's map
    with pytest.raises(ValueError, match="stage 1..4"):
        _model(prototype_stage=5)
    import transformers

    from common.features import MelDbSpectrogram
    from common.models.protopnet import AudioProtoPNet
    from common.models.prototypes import PrototypeHead

    backbone = transformers.ConvNextModel(transformers.ConvNextConfig(num_channels=1, hidden_sizes=[8, 16, 24, 32]))
    with pytest.raises(ValueError, match="set prototype_channels to 24"):  # the last stage's width, not stage 3's
        AudioProtoPNet(MelDbSpectrogram(n_mels=64), backbone, PrototypeHead(2, 2, 32), prototype_stage=3)


def test_cluster_and_separation_costs_are_protopnets_for_similarities():
    # 3 classes x 2 prototypes; clip 0 has classes 0 and 2, clip 1 only class 1
    sims = torch.tensor([[0.9, 0.2, 0.3, 0.7, 0.1, 0.4], [0.5, 0.6, 0.8, 0.1, 0.2, 0.3]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    # cluster: 1 - best own prototype, per present (clip, class): (0.1 + 0.6 + 0.2) / 3
    assert prototype_cluster_cost(sims, targets, 2).item() == pytest.approx(0.9 / 3)
    # separation: best prototype of an absent class per clip: 0.7 (class 1), 0.6 (class 0): mean 0.65
    assert prototype_separation_cost(sims, targets, 2).item() == pytest.approx(0.65)
    # raising an own prototype lowers the cluster cost and leaves separation alone; an absent one, the reverse
    own, other = sims.clone(), sims.clone()
    own[1, 2] = 0.95
    other[0, 3] = 0.95
    assert prototype_cluster_cost(own, targets, 2) < prototype_cluster_cost(sims, targets, 2)
    assert prototype_separation_cost(own, targets, 2) == prototype_separation_cost(sims, targets, 2)
    assert prototype_separation_cost(other, targets, 2) > prototype_separation_cost(sims, targets, 2)
    assert prototype_cluster_cost(other, targets, 2) == prototype_cluster_cost(sims, targets, 2)
    everything = torch.ones(1, 3)
    assert prototype_separation_cost(sims[:1], everything, 2).item() == 0.0  # no absent class: no cost


def test_background_cost_counts_present_classes_prototypes_off_the_events_only():
    maps = torch.zeros(2, 4, 3, 5)  # 2 classes x 2 prototypes, (freq 3, time 5)
    maps[0, 0, 1, 0] = 0.8  # class 0's prototype on clip 0's background cell 0
    maps[0, 1, 2, 3] = 0.9  # ... its other prototype on an event cell: not a cost
    maps[0, 2, 0, 1] = 0.7  # class 1 is absent from clip 0: not a cost
    maps[1, 3, 0, 4] = 0.5  # clip 1 (class 1) on background
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    background = torch.tensor([[True, True, False, False, True], [False, False, False, False, True]])
    # rows (clip, own prototype): clip 0: 0.8, 0.0; clip 1: 0.0, 0.5
    assert prototype_background_cost(maps, targets, background, 2).item() == pytest.approx(1.3 / 4)
    assert prototype_background_cost(maps, targets, torch.zeros_like(background), 2).item() == 0.0


def test_background_cells_follow_the_event_mask_over_the_part_the_map_covers():
    model = _model()
    mask = torch.zeros(1, 500)  # 5 s at 100 per second
    mask[0, 250:300] = 1.0  # an event at 2.5-3.0 s
    background = model.background_cells(mask, 626, 38)  # the x2-upsampled last-stage map: 38 time cells
    covered_s = 608 * 256 / 32000  # 4.864 s
    cells = [j for j in range(38) if not background[0, j]]
    assert cells and all(2.5 - covered_s / 38 <= j * covered_s / 38 <= 3.0 for j in cells), cells
    assert background[0, :15].all() and background[0, 25:].all()


def test_push_makes_each_prototype_a_patch_of_a_training_clip_of_its_class():
    from common.models.protopnet import push_prototypes

    model = _model(n_classes=3, k=2)
    wavs = 0.1 * torch.randn(4, 32000 * 2)
    labels = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0], [0, 1.0, 0]])  # class 2 has no clip
    before = model.head.prototype_vectors.detach().clone()
    found = push_prototypes(model, [([10, 11], wavs[:2], labels[:2]), ([12, 13], wavs[2:], labels[2:])])
    assert found[4] is None and found[5] is None  # class 2: left as it was
    torch.testing.assert_close(model.head.prototype_vectors[4:], before[4:])
    with torch.no_grad():
        features_up = model.head.upsample(model.hidden(model.features(wavs)))
        maps = model.head.similarity_maps(features_up)
    for p in range(4):
        clip = found[p]["clip"] - 10
        assert labels[clip, p // 2] == 1  # a clip of its own class
        row, col = found[p]["cell"]
        torch.testing.assert_close(model.head.prototype_vectors[p, :, 0, 0], features_up[clip, :, row, col])
        assert maps[clip, p, row, col] == pytest.approx(1 / 1.01, abs=1e-3)  # it *is* that patch
        # and it was the own-class patch most similar to the prototype before the push
        with torch.no_grad():
            model.head.prototype_vectors.data[p] = before[p]
            earlier = model.head.similarity_maps(features_up)[:, p]
        own = labels[:, p // 2] == 1
        assert found[p]["similarity"] == pytest.approx(float(earlier[own].max()), abs=1e-6)
        assert float(earlier[clip, row, col]) == pytest.approx(float(earlier[own].max()), abs=1e-6)
        model.head.prototype_vectors.data[p] = features_up[clip, :, row, col][:, None, None]


def test_box_rules_connected_region_around_the_maximum_or_every_bin_above_the_threshold():
    from common.interpreters.prototypes import high_activation_box

    activation = torch.zeros(100, 40)
    activation[10:20, 5:10] = 1.0  # the strongest match
    activation[70:80, 30:35] = 0.9  # a second one, elsewhere
    assert high_activation_box(activation, 95, "connected") == (10, 20, 5, 10)
    assert high_activation_box(activation, 95, "whole") == (10, 80, 5, 35)
    with pytest.raises(ValueError, match="box rule"):
        high_activation_box(activation, 95, "peak")


def test_localization_scores_a_map_on_the_event_against_the_input_magnitude_control():
    from common.analysis.prototypes import _box_scores

    truth = np.zeros((100, 40), dtype=bool)
    truth[40:60, 10:20] = True
    on_event = torch.zeros(100, 40)
    on_event[45:55, 12:18] = 1.0
    loud_elsewhere = torch.zeros(100, 40)
    loud_elsewhere[0:10, 30:40] = 5.0  # what a loudness detector would pick
    loud_elsewhere[40:60, 10:20] = 1.0  # the quieter event
    good, control = _box_scores(on_event, truth, 95, "connected"), _box_scores(loud_elsewhere, truth, 95, "connected")
    assert good["box_on_events"] == 1.0 and good["peak_on_event"] and good["mass_on_events"] == 1.0
    assert good["iou"] == pytest.approx(60 / 200)
    assert control["box_on_events"] == 0.0 and not control["peak_on_event"]
    assert control["mass_on_events"] == pytest.approx(200 / (200 + 500))
    assert 0.02 < good["random_box_on_events"] < 0.12  # a 10 x 6 box dropped at random: about the events' 5 %


def test_training_crops_carry_their_event_mask(tmp_path):
    import datasets
    import soundfile as sf

    from common.data.birdset import BirdSetEvents, _row, birdset_features

    sr = 32000
    wav = np.zeros(20 * sr, dtype=np.float32)
    wav[12 * sr : 13 * sr] = 0.5  # the event: 12-13 s
    sf.write(tmp_path / "long.wav", wav, sr)
    ds = datasets.Dataset.from_list([_row(str(tmp_path / "long.wav"), [0], events=[(12.0, 13.0)], length_s=20)],
                                    features=birdset_features(["a"]))  # fmt: skip
    crops = BirdSetEvents(ds, 1, "t")
    for _ in range(5):
        item = crops[0]
        frames = np.nonzero(item["sig"].numpy() == 0.5)[0] / sr  # where the event is in this crop, in seconds
        mask = item["event_mask"].numpy()
        assert mask.shape == (500,) and mask.sum() == pytest.approx(100, abs=1)
        on = np.nonzero(mask)[0] / 100.0
        assert abs(on.min() - frames.min()) < 0.011 and abs(on.max() - frames.max()) < 0.011


def _cell_features(model, wavs):
    with torch.no_grad():
        return model.head.upsample(model.hidden(model.features(wavs)))


def test_pruning_removes_prototypes_whose_nearest_clips_are_of_other_classes():
    from common.models.protopnet import prune_prototypes

    model = _model(n_classes=3, k=2)
    torch.manual_seed(1)
    wavs = 0.1 * torch.randn(6, 32000 * 2)
    labels = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, 1.0]])
    features_up = _cell_features(model, wavs)
    # prototype 0 (class 0) is a cell of a class-0 clip, prototype 1 (class 0) one of a class-1 clip: its
    # nearest clip is another class's, as a prototype of what every class's recordings share would be
    vectors = model.head.prototype_vectors.data
    vectors[0, :, 0, 0], vectors[1, :, 0, 0] = features_up[0, :, 3, 2], features_up[2, :, 1, 4]
    # both of class 1's prototypes are class-2 cells: pruning both would leave class 1 undetectable
    vectors[2, :, 0, 0], vectors[3, :, 0, 0] = features_up[4, :, 2, 2], features_up[5, :, 0, 1]
    batches = [([0, 1, 2], wavs[:3], labels[:3]), ([3, 4, 5], wavs[3:], labels[3:])]
    record = prune_prototypes(model, batches, k=1, threshold=1)
    assert record[0]["nearest_clips"] == [0] and record[1]["nearest_clips"] == [2]
    assert record[1]["similarities"][0] == pytest.approx(1 / 1.01, abs=1e-3)
    pruned = [r["pruned"] for r in record]
    assert pruned[:2] == [False, True]
    assert pruned[2] != pruned[3]  # class 1 keeps one of its two
    assert model.head.kept_prototypes == [p for p in range(6) if not pruned[p]]
    with torch.no_grad():
        out = model.prototype_outputs(model.features(wavs))
        maps = model.head.similarity_maps(features_up)
    for p in range(4):  # the prototypes set to cells (class 2's random ones may be 0 anyway, after the relu)
        assert bool((maps[:, p] == 0).all()) == pruned[p]  # a pruned prototype is 0 everywhere
    weights = torch.relu(model.head.last_layer.weight)
    kept_sum = out.max_similarities[:, 0] * weights[0, 0] + model.head.last_layer.bias[0]
    torch.testing.assert_close(out.logits[:, 0], kept_sum)  # class 0's score is its kept prototype's alone


def test_pruning_counts_each_prototypes_k_nearest_clips_of_its_class():
    from common.models.protopnet import prune_prototypes

    model = _model(n_classes=2, k=3, seed=3)
    torch.manual_seed(4)
    wavs = 0.1 * torch.randn(8, 32000 * 2)
    labels = torch.tensor([[1.0, 0]] * 4 + [[0, 1.0]] * 3 + [[1.0, 1.0]])  # the last clip has both
    features_up = _cell_features(model, wavs)
    for p, clip in enumerate([0, 4, 5, 6, 1, 7]):  # class 0 gets cells of class-1 clips, and vice versa
        model.head.prototype_vectors.data[p, :, 0, 0] = features_up[clip, :, 2, 3]
    with torch.no_grad():
        per_clip = model.head.similarity_maps(features_up).flatten(2).amax(-1)  # (clips, prototypes)
    record = prune_prototypes(model, [(list(range(8)), wavs, labels)], k=3, threshold=2)
    for p in range(6):
        nearest = per_clip[:, p].topk(3).indices
        assert sorted(record[p]["nearest_clips"]) == sorted(nearest.tolist())
        assert record[p]["own_class_clips"] == int(labels[nearest, p // 3].sum())
    counts = [r["own_class_clips"] for r in record]
    for c in range(2):
        own = range(3 * c, 3 * c + 3)
        if any(counts[p] >= 2 for p in own):
            assert all(record[p]["pruned"] == (counts[p] < 2) for p in own)
        else:  # none pure enough: only the purest stays
            assert sum(not record[p]["pruned"] for p in own) == 1
    assert any(r["pruned"] for r in record) and not all(r["pruned"] for r in record)


def test_the_pruning_mask_is_saved_and_old_checkpoints_without_it_load_unpruned():
    from common.models.pretrained import check_state_dict_fits
    from common.models.prototypes import PrototypeHead

    head = PrototypeHead(2, 2, 8)
    head.prune([1, 2])
    state = head.state_dict()
    assert state["prototype_mask"].tolist() == [1.0, 0.0, 0.0, 1.0]
    fresh = PrototypeHead(2, 2, 8)
    fresh.load_state_dict(state)
    assert fresh.kept_prototypes == [0, 3]
    old = {k: v for k, v in state.items() if k != "prototype_mask"}  # written before pruning existed
    check_state_dict_fits(fresh, old, "old.ckpt")
    fresh.load_state_dict(old)
    assert fresh.kept_prototypes == [0, 1, 2, 3]


def test_relevance_decomposes_each_prototypes_maximum_similarity_from_silence():
    from common.features import silence_of
    from common.interpreters.prototypes import box_maps, prototype_maps, prototype_relevance

    model = _model(prototype_stage=3, k=3)
    X = torch.randn(2, 160, 64)
    silence = silence_of(model, X).expand_as(X)
    assert float(silence.abs().max()) > 1.0  # a z-scored dB front end: silence is not 0, so the baseline matters
    ids = [1, 4]
    with torch.no_grad():
        gap = prototype_maps(model, X, ids)[1] - prototype_maps(model, silence, ids)[1]  # (B, 2)
    relevance = prototype_relevance(model, X, ids, steps=64)
    assert relevance.shape == (2, 2, 160, 64)
    torch.testing.assert_close(relevance.sum(dim=(-1, -2)), gap, rtol=0.05, atol=0.02)  # completeness
    one_step = prototype_relevance(model, X, ids, steps=1)  # gradient x (input - silence)
    Xg = X.clone().requires_grad_(True)
    score = model.head.similarity_maps(model.head.upsample(model.hidden(Xg)), [4]).flatten(2).amax(-1)[1, 0]
    (grad,) = torch.autograd.grad(score, Xg)
    torch.testing.assert_close(one_step[1, 1], (grad * (X - silence))[1])
    torch.testing.assert_close(box_maps(model, X, ids, "similarity"), prototype_maps(model, X, ids)[0])
    with pytest.raises(ValueError, match="box map"):
        box_maps(model, X, ids, "gradient")


def test_box_intervention_measures_the_similarity_lost_when_the_box_is_silenced():
    from common.analysis.prototypes import box_intervention
    from common.features import silence_of
    from common.interpreters.prototypes import prototype_maps

    model = _model(prototype_stage=3)
    X = torch.randn(1, 160, 64)
    with torch.no_grad():
        original = prototype_maps(model, X, [0, 3])[1][0]
        silent = prototype_maps(model, silence_of(model, X).expand_as(X), [0, 3])[1][0]
        inner = X.clone()
        inner[:, 40:80, 8:24] = silence_of(model, X)[0, 0, 0]
        boxed = prototype_maps(model, inner, [0, 3])[1][0]
    whole, part = box_intervention(model, X, [0, 3], [(0, 160, 0, 64), (40, 80, 8, 24)], draws=4)
    assert whole["similarity_drop_box"] == pytest.approx(float(1 - silent[0] / original[0]), abs=1e-5)
    assert whole["similarity_drop_random_box"] == pytest.approx(whole["similarity_drop_box"], abs=1e-5)
    assert part["similarity_drop_box"] == pytest.approx(float(1 - boxed[1] / original[1]), abs=1e-5)
    assert part["similarity_drop_random_box"] != pytest.approx(part["similarity_drop_box"], abs=1e-6)
