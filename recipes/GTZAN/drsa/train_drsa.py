#!/usr/bin/env python3
"""DRSA concepts of a trained genre classifier: fit per genre, evaluate, write figures and concept audio.

    python train_drsa.py hparams/drsa_cnn.yaml --data_folder DIR --classifier_source CLASSIFIER_SAVE_DIR
    python train_drsa.py hparams/drsa_cnn.yaml --data_folder DIR --classifier_source ... --test_only

Per genre, the subspaces are saved in <save_folder>/drsa/<genre>.pt; the tables
(concepts_summary.md, concepts_per_clip.csv) compare LRP, DRSA and random
orthogonal subspaces; examples/<genre>/<segment>/ holds log-mel | LRP | concept
heatmaps and each concept as audio. Wiring only: see common/analysis/concepts.py.
"""

import sys

from common.analysis.concepts import run_concept_analysis
from common.recipe import setup_experiment
from common.training.interpreter import prepare_explained_classifier


def main(argv=None):
    hparams, _, _, _ = setup_experiment(argv)
    datasets = prepare_explained_classifier(hparams)
    return run_concept_analysis(hparams, datasets)


if __name__ == "__main__":
    main(sys.argv[1:])
