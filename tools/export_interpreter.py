#!/usr/bin/env python3
"""Write a trained interpreter run as a pretrained-interpreter folder.

    python tools/export_interpreter.py RUN_FOLDER OUT_DIR [--template recipes/ESC50/interpret/hparams/inference_piq.yaml]

RUN_FOLDER is the interpreter recipe's output folder. OUT_DIR gets
hyperparams.yaml (the inference template with the run's values),
embedding_model.ckpt, classifier.ckpt and the interpreter's checkpoint files
(from the run's best checkpoint, by its best_checkpoint_key), label_encoder.txt. Load
it with ``PretrainedInterpreter.from_hparams(source=OUT_DIR)``, or upload it
to the HuggingFace hub and load it by id.
"""

import argparse
import re
import shutil
from pathlib import Path

import yaml
from speechbrain.utils.checkpoints import Checkpointer

from common.io import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
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
    best = Checkpointer(str(run_folder / "save")).find_checkpoint(min_key=values.get("best_checkpoint_key", "loss"))
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_folder")
    ap.add_argument("out_dir")
    ap.add_argument("--template", default=str(DEFAULT_TEMPLATE))
    args = ap.parse_args(argv)
    out = export_interpreter(args.run_folder, args.out_dir, args.template)
    print(f"exported {args.run_folder} to {out}")


if __name__ == "__main__":
    main()
