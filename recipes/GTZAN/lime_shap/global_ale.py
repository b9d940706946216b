#!/usr/bin/env python3
"""Global explanation: Accumulated Local Effects of clip-level features on each genre's probability.

    python global_ale.py hparams/ale.yaml --data_folder DIR --classifier_source CLASSIFIER_SAVE_DIR

Writes <output_folder>/ale/: ale.json, ale_curves.csv, ale_importance.{csv,md}
and one ale_<feature>.png per feature. Wiring only: see common/analysis/clip_features.py and ale.py.
"""

import sys
from pathlib import Path

import torch
from speechbrain.dataio.batch import PaddedBatch
from torch.utils.data import DataLoader

from common.analysis.ale import ale_for_features, write_ale_results
from common.analysis.clip_features import SpectrogramDomain, build_clip_features
from common.recipe import setup_experiment
from common.reports.tables import write_table
from common.training.interpreter import prepare_explained_classifier


def main(argv=None):
    hparams, _, _, _ = setup_experiment(argv)
    split = prepare_explained_classifier(hparams)[hparams["ale_split"]]
    classifier = hparams["classifier"].eval()
    loader = DataLoader(split, batch_size=hparams["ale_batch_size"], collate_fn=PaddedBatch)
    limit = hparams["ale_max_segments"] or len(split)
    X, ids = [], []
    with torch.no_grad():
        for batch in loader:
            X.append(classifier.features(batch.sig.data))
            ids += list(batch.id)
            if len(ids) >= limit:
                break
    X, ids = torch.cat(X)[:limit], ids[:limit]
    features = build_clip_features(hparams["ale_features"], SpectrogramDomain.from_front_end(classifier.front_end))
    with torch.no_grad():
        results = ale_for_features(
            classifier.predict_proba,
            X,
            features,
            n_intervals=hparams["ale_intervals"],
            batch_size=hparams["ale_batch_size"],
            centring=hparams["ale_centring"],
            clip_ids=ids,
        )
    out = Path(hparams["output_folder"]) / "ale"
    names = [hparams["label_encoder"].ind2lab[i] for i in range(len(hparams["label_encoder"]))]
    rows = write_ale_results(results, out, class_names=names, classes=hparams["ale_classes"])
    print(write_table(rows, out / "ale_importance"))


if __name__ == "__main__":
    main(sys.argv[1:])
