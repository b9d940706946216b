"""The benchmark tool runs and reports what it promises (content, not speed)."""

import math

from tools.benchmark_interpret import main as benchmark


def test_benchmark_reports_training_suite_and_floor_per_interpreter(capsys):
    names = "piq,l2i,lmac_conv2d,amt_vit"
    args = ["--interpreters", names, "--n_clips", "2", "--emb_dim", "8", "--curve_steps", "2"]
    ratios = benchmark([*args, "--floor_batch_sizes", "2,4"])
    assert set(ratios) == set(names.split(",")) and all(math.isfinite(r) and r > 0 for r in ratios.values())
    table = capsys.readouterr().out
    for phase in (
        "piq training (batch 8)",
        "l2i training (batch 16)",
        "lmac_conv2d training (batch 16)",
        "amt_vit: evaluation suite",
        "floor",
        "suite: forward",
    ):
        assert phase in table
    assert "amt_vit training" not in table  # nothing to train
    assert "peak RSS (GiB)" in table
