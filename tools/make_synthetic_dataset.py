#!/usr/bin/env python3
"""Write a synthetic ESC-50-layout data set with per-clip ground truth, in a named scene design.

python tools/make_synthetic_dataset.py OUT_DIR [--design loud_evidence --n_classes 5 --clips_per_class 20 ...]

Designs (common.data.synthetic.scenes.SCENE_DESIGNS): loud_evidence (the default, the class event is the
loudest thing), quiet_evidence, clever_hans (also writes OUT_DIR/shortcut_test), conjunction, order.
An option left out takes the design's default.
"""

import argparse

from common.data.synthetic.scenes import SCENE_DESIGNS, make_synthetic_esc50

# options only some designs take: given to the design only when set on the command line
_DESIGN_OPTIONS = {
    "loud_evidence": {"snr_db"},
    "quiet_evidence": {"distractor_db", "distractors_per_s"},
    "clever_hans": {
        "distractor_db",
        "distractors_per_s",
        "cue_class",
        "cue_fraction",
        "cue_folds",
        "cue_db",
        "cue_s",
        "cue_hz",
        "decoy_fraction",
    },
    "conjunction": {"distractor_db", "distractors_per_s"},
    "order": {"distractor_db", "distractors_per_s"},
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--design", default="loud_evidence", choices=SCENE_DESIGNS.names())
    ap.add_argument("--n_classes", type=int, help="default: 5 (conjunction, order: 4)")
    ap.add_argument("--clips_per_class", type=int, default=20)
    ap.add_argument("--duration_s", type=float, default=5.0)
    ap.add_argument("--sample_rate", type=int, default=16000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n_distractors", type=int, nargs="+", help="a count, or (designs but loud_evidence) LOW HIGH")
    ap.add_argument("--snr_db", type=float, help="loud_evidence: the event's power over the rest (default 6)")
    ap.add_argument("--distractor_db", type=float, nargs=2, metavar=("LOW", "HIGH"), help="dB below the distractors")
    ap.add_argument("--cue_class", type=int, help="clever_hans: the class the cue co-occurs with (default 0)")
    ap.add_argument("--cue_fraction", type=float, help="clever_hans: share of its clips in cue_folds with the cue")
    ap.add_argument("--cue_folds", type=int, nargs="+", help="clever_hans: folds with the cue (default 1 2 3 4)")
    ap.add_argument("--cue_db", type=float, help="clever_hans: the cue's power relative to the distractors")
    ap.add_argument("--cue_s", type=float, help="clever_hans: the cue's length (default 0.05 s)")
    ap.add_argument("--cue_hz", type=float, nargs=2, metavar=("LOW", "HIGH"), help="clever_hans: the cue's band")
    ap.add_argument("--decoy_fraction", type=float, help="clever_hans: share of cued clips sounding another class")
    ap.add_argument(
        "--distractors_per_s", type=float, nargs=2, metavar=("LOW", "HIGH"), help="distractors per second (3 5)"
    )
    args = ap.parse_args(argv)
    per_design = set().union(*_DESIGN_OPTIONS.values())
    given = {k: v for k, v in vars(args).items() if k not in ("out_dir", "design") and v is not None}
    wrong = sorted(k for k in given if k in per_design and k not in _DESIGN_OPTIONS[args.design])
    if wrong:
        ap.error(f"--{', --'.join(wrong)} do(es) not apply to --design {args.design}")
    if "n_distractors" in given:
        nd = given["n_distractors"]
        if len(nd) > 2 or (len(nd) == 2 and args.design == "loud_evidence"):
            ap.error("--n_distractors: one count (loud_evidence), or LOW HIGH")
        given["n_distractors"] = nd[0] if len(nd) == 1 else tuple(nd)
    rows = make_synthetic_esc50(args.out_dir, design=args.design, **given)
    n_classes = len({r["target"] for r in rows})
    print(f"wrote {len(rows)} clips ({n_classes} classes, design {args.design}) with ground truth to {args.out_dir}")


if __name__ == "__main__":
    main()
