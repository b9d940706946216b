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

from common.training.export import DEFAULT_TEMPLATE, export_interpreter


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
