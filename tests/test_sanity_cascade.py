"""The full model-parameter randomisation cascade (Adebayo et al. 2018): its steps, SSIM, and the per-method plot."""

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from common.analysis.leaderboard.config import load_config
from common.analysis.leaderboard.run import MethodResult
from common.analysis.leaderboard.sanity import (
    data_randomization_check,
    encoder_blocks,
    full_cascade,
    randomized_copy,
    sanity_check,
    save_cascade_plot,
    shuffled_labels_folder,
    ssim,
)
from common.analysis.leaderboard.table import leaderboard_rows
from common.errors import ConfigError
from common.features import Log1pSpectrogram
from common.interpreters.baselines import InputMagnitude
from common.interpreters.posthoc import GradientSaliency
from common.models import AudioClassifier
from common.models.genre_cnn import GenreHead, LogMelCNN

REPO = Path(__file__).resolve().parents[1]
LEADERBOARD_CNN = REPO / "recipes" / "ESC50" / "classification" / "hparams" / "logmel_cnn.yaml"


def conv_classifier(channels=(8, 16, 32), n_classes=3, convs_per_block=1, n_mels=32):
    front_end = Log1pSpectrogram(sample_rate=16000, n_mels=n_mels)
    encoder = LogMelCNN(channels=channels, convs_per_block=convs_per_block)
    return AudioClassifier(front_end, encoder, GenreHead(channels[-1], n_classes, hidden=16, dropout=0.0))


def test_full_cascade_goes_from_the_head_down_to_the_input_cumulatively():
    model = conv_classifier()
    steps, names = full_cascade(model, names=True)
    # LogMelCNN features: [conv 0, bn 1, relu, pool, conv 4, bn 5, relu, pool, conv 8, bn 9, relu, pool]
    block = {k: [f"embedding_model.features.{k}", f"embedding_model.features.{k + 1}"] for k in (0, 4, 8)}
    assert names == ["head", "block 3", "block 2", "block 1"]
    assert steps == [
        ["classifier"],
        ["classifier", *block[8]],
        ["classifier", *block[8], *block[4]],
        ["classifier", *block[8], *block[4], *block[0]],
    ]
    # the last step leaves nothing trained: every parameter of the copy differs from the "trained" original
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.rand_like(param) + 0.5)
    original = dict(model.named_parameters())
    randomized = dict(randomized_copy(model, steps[-1], seed=7).named_parameters())
    assert all(not torch.equal(p, randomized[n]) for n, p in original.items())
    # and each step re-initialises exactly one more block than the one before
    before = dict(randomized_copy(model, steps[-2], seed=7).named_parameters())
    kept = {n for n, p in original.items() if torch.equal(p, before[n])}
    assert kept == {f"embedding_model.features.{k}.{p}" for k in (0, 1) for p in ("weight", "bias")}


def test_full_cascade_of_a_vgg_style_encoder_has_one_step_per_conv():
    steps, names = full_cascade(conv_classifier(channels=(8, 16), convs_per_block=2), names=True)
    # [conv 0, bn 1, relu, conv 3, bn 4, relu, pool, conv 7, bn 8, relu, conv 10, bn 11, relu, pool]
    assert names == ["head", "block 4", "block 3", "block 2", "block 1"]
    added = [step[len(previous) :] for previous, step in zip(steps, steps[1:], strict=False)]
    assert added == [[f"embedding_model.features.{k}", f"embedding_model.features.{k + 1}"] for k in (10, 7, 3, 0)]


def test_the_leaderboards_log_mel_cnn_has_a_cascade_of_five_steps():
    text = LEADERBOARD_CNN.read_text()
    channels = [int(c) for c in re.search(r"^channels: \[([\d, ]+)\]", text, re.M).group(1).split(",")]
    convs = int(re.search(r"^convs_per_block: (\d+)", text, re.M).group(1))
    steps, names = full_cascade(conv_classifier(channels=tuple(channels), convs_per_block=convs), names=True)
    assert names == ["head", "block 4", "block 3", "block 2", "block 1"]
    assert len(steps) == 5 and steps[-1][-2:] == ["embedding_model.features.0", "embedding_model.features.1"]


def test_transformer_cascade_goes_block_by_block_then_the_embeddings():
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=16, image_size=32, patch_size=8
    )
    encoder = transformers.ViTModel(config)
    blocks = encoder_blocks(encoder)
    layer = [n for n, _ in encoder.named_modules() if re.search(r"layers?\.\d+$", n)]
    assert [name for name, _ in blocks] == ["embeddings", "block 1", "block 2", "block 3"]
    assert [modules for _, modules in blocks[1:]] == [[n] for n in layer]
    model = AudioClassifier(torch.nn.Identity(), encoder, torch.nn.Linear(16, 3), silence=0.0)
    steps = full_cascade(model)
    assert steps[1] == ["classifier", f"embedding_model.{layer[-1]}"]
    assert steps[-1][-1] == "embedding_model"  # what lies outside the blocks (patch embeddings, norms) goes last


def test_ssim_is_one_for_identical_maps_and_near_zero_for_independent_ones():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(4, 60, 32, generator=generator)
    assert torch.allclose(ssim(a, a), torch.ones(4, dtype=torch.float64))
    # Adebayo et al. compare |map| / max |map|: a scaled or sign-flipped map is the same map
    assert torch.allclose(ssim(a, -3 * a), torch.ones(4, dtype=torch.float64))
    independent = ssim(a, torch.rand(4, 60, 32, generator=generator))
    assert independent.abs().max() < 0.05, independent
    # a map that keeps the structure but not every value is in between
    noisy = ssim(a, a + 0.3 * torch.rand(4, 60, 32, generator=generator))
    assert bool((noisy > 0.3).all() and (noisy < 0.99).all()), noisy


def fit(model, X, labels, steps=60):
    """Train ``model`` on spectrograms X for ``labels`` until it fits them (asserted), in eval mode."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model.logits(X), labels).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model.logits(X).argmax(1) == labels).float().mean())
    assert accuracy >= 0.9, f"the model did not fit its training clips (accuracy {accuracy})"
    return model


@pytest.fixture(scope="module")
def clips(synthetic_data):
    """The synthetic clips' waveforms and labels."""
    from common.data.audio import load_audio
    from common.data.esc50 import read_metadata

    rows = read_metadata(synthetic_data / "meta" / "esc50.csv")
    wavs = torch.stack([load_audio(synthetic_data / "audio" / r["filename"], 16000, 1.0) for r in rows])
    return wavs, torch.tensor([r["target"] for r in rows])


@pytest.fixture(scope="module")
def trained(clips):
    """A small log-mel CNN (3 blocks) trained in-process on the synthetic clips, and their spectrograms."""
    wavs, labels = clips
    torch.manual_seed(0)
    model = conv_classifier()
    with torch.no_grad():
        X = model.features(wavs)
    return fit(model, X, labels), X


def test_gradients_drop_along_the_cascade_and_the_input_magnitude_control_stays_at_one(trained):
    model, X = trained
    target = model.logits(X).argmax(1)
    control = sanity_check(InputMagnitude(model), model, X, target, threshold=0.5)
    assert control["step_names"] == ["head", "block 3", "block 2", "block 1"]
    assert control["steps"] == pytest.approx([1.0] * 4) and control["ssim_steps"] == pytest.approx([1.0] * 4)
    assert not control["passed"]
    gradient = sanity_check(GradientSaliency(model), model, X, target, threshold=0.5)
    rho, structural = gradient["steps"], gradient["ssim_steps"]
    assert gradient["passed"], rho
    assert rho[-1] < rho[0] - 0.1 and structural[-1] < structural[0] - 0.1, (rho, structural)
    assert rho[-1] < 0.5 and structural[-1] < 0.5, (rho, structural)
    assert all(s.shape == (len(X),) for s in gradient["per_clip"] + gradient["ssim_per_clip"])
    # the means are the per-clip values' means
    assert structural == pytest.approx([float(s.mean()) for s in gradient["ssim_per_clip"]])
    # the short cascade (head; head + last block) is still available by name
    short = sanity_check(GradientSaliency(model), model, X, target, cascade="last_block")
    assert short["step_names"] == ["head", "head+block"] and short["steps"] == pytest.approx(rho[:2])


def _result(label, classifier, rho, ssim_values, names):
    sanity = {"steps": rho, "ssim_steps": ssim_values, "step_names": names, "passed": rho[-1] <= 0.5}
    return SimpleNamespace(label=label, classifier=classifier, sanity=sanity)


def test_cascade_plot_has_one_line_per_method(tmp_path, monkeypatch):
    import common.reports.figures

    figures, save = [], common.reports.figures.save_figure
    monkeypatch.setattr(
        common.reports.figures, "save_figure", lambda fig, path, **kw: (figures.append(fig), save(fig, path, **kw))
    )
    names = ["head", "block 2", "block 1"]
    results = [
        _result("saliency", "cnn", [0.6, 0.3, 0.1], [0.5, 0.2, 0.1], names),
        _result("lrp", "cnn", [0.8, 0.5, 0.2], [0.7, 0.4, 0.2], names),
        _result("input magnitude", "cnn", [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], names),
        _result("amt", "focalnet", [0.9, 0.4], [0.8, 0.3], ["head", "block 1"]),
        SimpleNamespace(label="no sanity", classifier="cnn", sanity=None),
    ]
    path = tmp_path / "sanity_cascade.png"
    drawn = save_cascade_plot(results, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn == {"cnn": ["saliency", "lrp", "input magnitude"], "focalnet": ["amt"]}
    (fig,) = figures
    axes = fig.get_axes()
    assert len(axes) == 4  # (Spearman, SSIM) per classifier
    for ax, key, group in zip(axes, ["steps", "ssim_steps"] * 2, [results[:3]] * 2 + [results[3:4]] * 2, strict=True):
        lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
        assert [line.get_label() for line in lines] == [r.label for r in group]
        for line, result in zip(lines, group, strict=True):
            assert list(line.get_ydata()) == pytest.approx(result.sanity[key])
        assert [t.get_text() for t in ax.get_xticklabels()] == group[0].sanity["step_names"]
    assert save_cascade_plot(results[4:], tmp_path / "none.png") == {} and not (tmp_path / "none.png").exists()


def test_table_keeps_the_step_columns_and_adds_the_last_steps_rho_and_ssim():
    sanity = {
        "steps": [0.7, 0.4, 0.2],
        "ssim_steps": [0.6, 0.3, 0.1],
        "step_names": ["head", "block 2", "block 1"],
        "passed": True,
    }
    result = MethodResult("saliency", "cnn", {"fid_in": torch.tensor([0.5, 0.7])}, 0.1, sanity=sanity)
    (row,) = leaderboard_rows([result], ["fid_in"], n_resamples=50)
    assert row["sanity rho (head)"] == 0.7 and row["sanity rho (head+block)"] == 0.4
    assert row["sanity rho (last step)"] == 0.2 and row["sanity SSIM (last step)"] == 0.1
    columns = list(row)
    assert columns.index("sanity SSIM (last step)") == columns.index("sanity") - 1
    assert row["sanity"] == "pass"


def test_shuffled_labels_folder_permutes_the_labels_and_links_the_rest(synthetic_data, tmp_path):
    from common.data.esc50 import read_metadata

    original = read_metadata(synthetic_data / "meta" / "esc50.csv")
    folder = shuffled_labels_folder(synthetic_data, tmp_path / "shuffled", seed=3)
    rows = read_metadata(folder / "meta" / "esc50.csv")
    assert [(r["filename"], r["fold"]) for r in rows] == [(r["filename"], r["fold"]) for r in original]
    pairs = sorted((r["target"], r["category"]) for r in rows)
    assert pairs == sorted((r["target"], r["category"]) for r in original)  # same classes, same counts
    changed = sum(a["target"] != b["target"] for a, b in zip(rows, original, strict=True))
    assert changed >= len(rows) // 2, changed
    assert (folder / "audio").resolve() == (synthetic_data / "audio").resolve()
    again = shuffled_labels_folder(synthetic_data, tmp_path / "again", seed=3)
    assert (again / "meta" / "esc50.csv").read_text() == (folder / "meta" / "esc50.csv").read_text()
    other = shuffled_labels_folder(synthetic_data, tmp_path / "other", seed=4)
    assert (other / "meta" / "esc50.csv").read_text() != (folder / "meta" / "esc50.csv").read_text()


def test_data_randomization_separates_gradients_from_the_input_magnitude_control(trained, clips):
    model, X = trained
    _, labels = clips
    torch.manual_seed(1)
    permuted = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(5))]
    assert (permuted != labels).any()
    shuffled = fit(conv_classifier(), X, permuted, steps=120)
    target = model.logits(X).argmax(1)
    control = data_randomization_check(InputMagnitude(model), model, shuffled, X, target)
    assert control["spearman"] == pytest.approx(1.0) and control["ssim"] == pytest.approx(1.0)
    gradient = sanity_check(GradientSaliency(model), model, X, target, shuffled=shuffled)["data_randomization"]
    assert gradient["spearman"] < 0.5 and gradient["ssim"] < 0.5, gradient
    assert gradient["per_clip"].shape == (len(X),) and gradient["ssim_per_clip"].shape == (len(X),)
    # a model of another structure (a prototype net on the encoder) is reported as skipped, not compared
    other = conv_classifier(channels=(8, 16))
    assert "skipped" in data_randomization_check(GradientSaliency(model), model, other, X, target)


def test_table_shows_the_data_randomization_columns_and_the_config_checks_the_key(tmp_path):
    sanity = {
        "steps": [0.7, 0.2],
        "ssim_steps": [0.6, 0.1],
        "step_names": ["head", "block 1"],
        "passed": True,
        "data_randomization": {"spearman": 0.3, "ssim": 0.25},
    }
    result = MethodResult("saliency", "cnn", {"fid_in": torch.tensor([0.5, 0.7])}, 0.1, sanity=sanity)
    (row,) = leaderboard_rows([result], ["fid_in"], n_resamples=50)
    assert row["sanity rho (shuffled labels)"] == 0.3 and row["sanity SSIM (shuffled labels)"] == 0.25
    skipped = {**sanity, "data_randomization": {"skipped": "another model"}}
    (row,) = leaderboard_rows([MethodResult("p", "cnn", {}, 0.1, sanity=skipped)], ["fid_in"], n_resamples=50)
    assert "sanity rho (shuffled labels)" not in row
    base = (
        "output_folder: out\ndata: {folder: d}\nmethods: [{name: saliency}]\n"
        "classifiers: {cnn: {hparams: recipes/ESC50/classification/hparams/logmel_cnn.yaml, data_randomization: "
    )
    for good in ("true", "{seed: 2}"):
        (tmp_path / "good.yaml").write_text(base + good + "}}\n")
        assert load_config(tmp_path / "good.yaml")["classifiers"]["cnn"]["data_randomization"] in (True, {"seed": 2})
    (tmp_path / "bad.yaml").write_text(base + "{sed: 2}}}\n")
    with pytest.raises(ConfigError, match="classifiers.cnn.data_randomization"):
        load_config(tmp_path / "bad.yaml")
