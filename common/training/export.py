"""A trained interpreter run as a pretrained-interpreter folder (what ``common.inference.PretrainedInterpreter``
loads, locally or from the HuggingFace hub): the inference template filled with the run's values, the
classifier's and the interpreter's checkpoint files (from the run's best checkpoint) and label_encoder.txt."""

import re
import shutil
from pathlib import Path

import yaml

from common.checkpoints import AtomicCheckpointer
from common.io import atomic_write_text
from common.recipe import REPO

DEFAULT_TEMPLATE = REPO / "recipes" / "ESC50" / "interpret" / "hparams" / "inference_piq.yaml"


def _plain_values(hyperparams_file):
    """Top-level scalar/list values of a saved run's hyperparams.yaml (tags ignored, nothing built)."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    with open(hyperparams_file, encoding="utf-8") as f:
        values = yaml.load(f, Loader=Loader)
    return {k: v for k, v in values.items() if isinstance(v, (int, float, str, list)) and not isinstance(v, bool)}


def export_interpreter(run_folder, out_dir, template=DEFAULT_TEMPLATE):
    run_folder, out_dir = Path(run_folder), Path(out_dir)
    values = _plain_values(run_folder / "hyperparams.yaml")
    text = Path(template).read_text(encoding="utf-8")
    for key, value in values.items():  # fill the template's own scalar keys with the run's values
        text = re.sub(
            rf"(?m)^{re.escape(key)}: [^!\n][^\n]*$",
            f"{key}: {yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}",
            text,
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "hyperparams.yaml", text)
    finder = AtomicCheckpointer(str(run_folder / "save"), clean_staging=False)  # skips a damaged CKPT.yaml
    best = finder.find_checkpoint(min_key=values.get("best_checkpoint_key", "loss"))
    if best is None:
        raise FileNotFoundError(f"No interpreter checkpoint in {run_folder / 'save'}; train the interpreter first.")
    for ckpt in best.path.glob("*.ckpt"):
        if ckpt.stem not in ("brain", "counter", "optimizer", "lr_annealing", "dataloader-TRAIN"):
            shutil.copyfile(ckpt, out_dir / ckpt.name)
    classifier_dir = run_folder / "save" / "classifier"
    for name in ("embedding_model", "classifier"):
        shutil.copyfile((classifier_dir / f"{name}.ckpt").resolve(), out_dir / f"{name}.ckpt")
    shutil.copyfile(run_folder / "save" / "label_encoder.txt", out_dir / "label_encoder.txt")
    return out_dir
