#!/usr/bin/env python3
"""LIME and SHAP explanations of a trained genre classifier (the hparams file picks the method).

    python explain_lime.py hparams/lime.yaml --data_folder DIR --classifier_source CLASSIFIER_SAVE_DIR
    python explain_lime.py hparams/shap.yaml ...            # Kernel SHAP on interpretable components
    python explain_lime.py hparams/gradient_shap.yaml ...   # GradientShap on the spectrogram
    python explain_lime.py hparams/deeplift_shap.yaml ...   # DeepLiftShap on the spectrogram

explain_shap.py is this script under the SHAP name. Nothing is trained: the test set is
explained and scored with the shared suite; the first n_examples segments get wavs and
figures under interpretations/ (PosthocInterpreterBrain adds the saliency heatmap and,
for components along one axis, their weights).
"""

import sys

from common.training.interpreter import run_interpreter_recipe
from common.training.posthoc import PosthocInterpreterBrain


def main(argv):
    return run_interpreter_recipe(argv, brain_class=PosthocInterpreterBrain)


if __name__ == "__main__":
    main(sys.argv[1:])
