"""recipes/MusicEmotion/midlevel end to end on generated music: the joint bottleneck and the black box trained,
evaluated again with --test_only, then explained side by side against the generator's truth."""

import json

import numpy as np
import pytest
import soundfile as sf

from common.data.midlevel import EMOTIONS, MIDLEVEL_FEATURES
from common.data.synthetic.midlevel_music import make_midlevel_music
from tests.conftest import REPO, run_recipe

RECIPE = REPO / "recipes" / "MusicEmotion" / "midlevel"
TINY = ["--channels", "[4, 8]", "--batch_size", "8", "--signal_length_s", "1.0", "--number_of_epochs", "2"]


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    out = tmp_path_factory.mktemp("midlevel_recipe_music")
    make_midlevel_music(out, n_midlevel=30, n_soundtracks=25, seed=1, duration_s=1.0)
    return out


def test_the_recipe_trains_both_models_and_explains_them_side_by_side(music, tmp_path):
    data = ["--midlevel_folder", music / "midlevel", "--soundtracks_folder", music / "soundtracks"]
    joint, blackbox = tmp_path / "joint", tmp_path / "blackbox"
    explain = [
        RECIPE / "explain_midlevel.py",
        RECIPE / "hparams" / "joint.yaml",
        *data,
        "--output_folder",
        joint,
        *TINY,
    ]
    early = run_recipe(*explain, "--blackbox_source", blackbox / "save", check=False)
    assert (
        early.returncode != 0 and "No checkpoint of the bottleneck" in early.stdout and "Train it first" in early.stdout
    )

    run_recipe(RECIPE / "train.py", RECIPE / "hparams" / "joint.yaml", *data, "--output_folder", joint, *TINY)
    result = json.loads((joint / "test_results.json").read_text())
    assert set(result["emotion_r_each"]) == set(EMOTIONS) and set(result["mid_r_each"]) == set(MIDLEVEL_FEATURES)
    test = json.loads((joint / "manifest" / "test.json").read_text())
    assert result["n_emotion_clips"] == sum(k.startswith("soundtracks/") for k in test) == 5
    assert "| minorness | mid-level |" in (joint / "test_correlations.md").read_text()
    run_recipe(
        RECIPE / "train.py", RECIPE / "hparams" / "joint.yaml", *data, "--output_folder", joint, *TINY, "--test_only"
    )
    assert json.loads((joint / "test_results.json").read_text())["emotion_r"] == pytest.approx(result["emotion_r"])

    wrong = run_recipe(*explain, "--blackbox_source", joint / "save", check=False)
    assert wrong.returncode != 0 and "is a bottleneck model, not the black box" in wrong.stdout
    run_recipe(
        RECIPE / "train.py", RECIPE / "hparams" / "blackbox.yaml", "--soundtracks_folder", music / "soundtracks",
        "--output_folder", blackbox, *TINY,
    )  # fmt: skip
    bb = json.loads((blackbox / "test_results.json").read_text())
    assert bb["mid_r_each"] == {} and bb["n_emotion_clips"] == 5  # the same test clips: the split is by seed

    run_recipe(*explain, "--blackbox_source", blackbox / "save", "--n_explained", "2", "--n_examples", "1")
    out = joint / "explanations"
    per_clip = json.loads((out / "explanations.json").read_text())
    assert len(per_clip) == 2 and all(c.startswith("soundtracks/") and c in test for c in per_clip)
    for e in per_clip.values():
        effects, shap, truth = (np.array(e[k]) for k in ("effects", "shap_blackbox", "truth"))
        assert effects.shape == shap.shape == truth.shape == (8, 7)
        # each explanation adds up to its own change of output from the reference clip (efficiency)
        np.testing.assert_allclose(
            effects.sum(1), np.subtract(e["bottleneck_emotion"], e["bottleneck_reference_emotion"]), atol=2e-3
        )
        np.testing.assert_allclose(
            shap.sum(1), np.subtract(e["blackbox_emotion"], e["blackbox_reference_emotion"]), atol=2e-3
        )
        np.testing.assert_allclose(truth.sum(1), np.subtract(e["true_emotion"], e["true_reference_emotion"]), atol=2e-3)
        assert np.abs(truth).max() > 0.1
    agreement = (out / "agreement.md").read_text()
    for row in (
        "| black-box Kernel SHAP | truth |",
        "| bottleneck effects | black-box Kernel SHAP |",
        "| random (control) | truth |",
    ):
        assert row in agreement
    assert "sign agreement (true weight != 0)" in (out / "weights_vs_truth.md").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "global_weights.png" in pngs and len(pngs) == 3 and all((out / p).stat().st_size > 5000 for p in pngs)
    clip = next(iter(per_clip)).replace("/", "_")
    original, sr = sf.read(out / f"{clip}_input.wav")
    changed = [p for p in out.glob(f"{clip}_without_*.wav")]
    assert sr == 16000 and len(original) == 16000 and len(changed) == 1
    other, _ = sf.read(changed[0])
    assert len(other) == len(original) and not np.allclose(other, original)  # a concept set to its middle is heard
