#!/usr/bin/env python3
"""SHAP explanations of a trained genre classifier: Kernel SHAP on interpretable components,
GradientShap and DeepLiftShap on the spectrogram. The same script as explain_lime.py.

    python explain_shap.py hparams/shap.yaml --data_folder DIR --classifier_source CLASSIFIER_SAVE_DIR
    python explain_shap.py hparams/gradient_shap.yaml --data_folder DIR --classifier_source CLASSIFIER_SAVE_DIR
    python explain_shap.py hparams/deeplift_shap.yaml --data_folder DIR --classifier_source CLASSIFIER_SAVE_DIR
"""

import sys

from explain_lime import main

if __name__ == "__main__":
    main(sys.argv[1:])
