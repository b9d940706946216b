"""The benchmark tool runs and reports what it promises (content, not speed)."""

import math

from tools.benchmark_interpret import main as benchmark


def test_benchmark_reports_training_suite_and_floor_for_piq_and_l2i(capsys):
    ratios = benchmark(["--n_clips", "2", "--emb_dim", "8", "--curve_steps", "2", "--floor_batch_sizes", "2,4"])
    assert set(ratios) == {"piq", "l2i"} and all(math.isfinite(r) and r > 0 for r in ratios.values())
    table = capsys.readouterr().out
    for phase in ("piq training (batch 8)", "l2i training (batch 16)", "evaluation suite", "floor", "suite: forward"):
        assert phase in table
    assert "peak RSS (GiB)" in table
