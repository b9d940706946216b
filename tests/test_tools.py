"""The tools' shared plumbing (the one recipe runner) and the benchmark tool reports what it promises (content,
not speed)."""

import itertools
import math
import re
import runpy
import subprocess
from pathlib import Path

import pytest

from common.recipe import RecipeError, run_recipe

REPO = Path(__file__).resolve().parents[1]
# the tool's own code (its main), not its command line: tools are scripts, not a package
benchmark = runpy.run_path(str(REPO / "tools" / "benchmark_interpret.py"))["main"]

# A stand-in recipe script: prints its arguments and its working folder, fails or sleeps when told to.
FAKE_RECIPE = """import json, os, sys, time
args = sys.argv[1:]
print(json.dumps({"args": args, "cwd": os.getcwd()}), flush=True)
print("to stderr", file=sys.stderr, flush=True)
if "--sleep" in args:
    time.sleep(float(args[args.index("--sleep") + 1]))
if "--fail" in args:
    print("\\n".join(f"line {k}" for k in range(50)))
    sys.exit(3)
"""


def test_run_recipe_passes_overrides_as_the_recipes_command_line_and_logs_its_output(tmp_path):
    import json

    script = tmp_path / "train.py"
    script.write_text(FAKE_RECIPE)
    hparams = tmp_path / "hparams.yaml"
    hparams.write_text("lr: 0.1\n")
    overrides = {"lr": 0.5, "channels": [8, 16], "sizes": {"a": 1}, "use_pretrained": False, "folder": tmp_path}
    proc = run_recipe(script, hparams, overrides, tmp_path / "logs" / "recipe.log")
    said = json.loads(proc.stdout.splitlines()[0])
    assert said["args"] == [
        str(hparams),
        *("--lr", "0.5", "--channels", "[8,16]", "--sizes", '{"a":1}', "--use_pretrained", "False"),
        *("--folder", str(tmp_path)),
    ]
    assert Path(said["cwd"]) == REPO  # recipes run from the repository root, as the README's commands do
    assert "to stderr" in proc.stdout and (tmp_path / "logs" / "recipe.log").read_text() == proc.stdout
    assert run_recipe(script, hparams, ["--x", 1]).args[-2:] == ["--x", "1"]  # ready-made arguments pass as is


def test_run_recipe_failure_names_the_command_the_log_and_its_tail(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(FAKE_RECIPE)
    log = tmp_path / "recipe.log"
    with pytest.raises(RecipeError) as info:
        run_recipe(script, script, {"fail": 1}, log, tail_lines=5)
    message = str(info.value)
    assert "exit 3" in message and str(script) in message and str(log) in message
    assert "line 49" in message and "line 45" in message and "line 44" not in message
    assert run_recipe(script, script, {"fail": 1}, check=False).returncode == 3
    with pytest.raises(subprocess.TimeoutExpired):
        run_recipe(script, script, {"sleep": 30}, timeout=2)


def _rows(text):
    """The markdown table's rows, in order, as {column: cell}."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[1:]]


def _interval(cell):
    """The interval a printed number stands for: the table rounds to a number of decimals (common.reports)."""
    decimals = len(cell.split(".")[1]) if "." in cell else 0
    half = 0.5 * 10.0**-decimals
    return float(cell) - half, float(cell) + half


def _consistent_ratio(ratio, numerator_cell, denominator_cell):
    """True when ``ratio`` is numerator / denominator for some values the two printed cells may round from."""
    (n_lo, n_hi), (d_lo, d_hi) = _interval(numerator_cell), _interval(denominator_cell)
    return n_lo / d_hi * (1 - 1e-9) <= ratio <= n_hi / max(d_lo, 1e-12) * (1 + 1e-9)


def test_benchmark_reports_training_suite_and_floor_per_interpreter(capsys):
    names = "piq,l2i,lmac_conv2d,amt_vit"
    n_clips, n_steps = 2, 2
    args = ["--interpreters", names, "--n_clips", str(n_clips), "--emb_dim", "8", "--curve_steps", str(n_steps)]
    ratios = benchmark([*args, "--floor_batch_sizes", "2,4"])
    assert set(ratios) == set(names.split(",")) and all(math.isfinite(r) and r > 0 for r in ratios.values())
    out = capsys.readouterr().out
    rows = _rows(out)
    phases = [row["phase"] for row in rows]
    assert "amt_vit training" not in out  # nothing to train
    assert all(row["peak RSS (GiB)"] != "nan" for row in rows)
    # the rows the suite needs for these metrics (x, mask-in, mask-out, one silent row shared by the batch,
    # the inner steps of the deletion and insertion curves): the floor must time that many forward passes
    n_rows = 3 * n_clips + 1 + 2 * (n_steps - 1) * n_clips
    for name, batch in (("piq", 8), ("l2i", 16), ("lmac_conv2d", 16), ("amt_vit", None)):
        at = phases.index(f"{name}: evaluation suite (all metrics)")
        suite = rows[at]
        split = list(itertools.takewhile(lambda row: row["phase"].startswith("suite: "), rows[at + 1 :]))
        floor = rows[at + 1 + len(split)]  # the floor follows the suite's split
        assert re.fullmatch(rf"{name}: floor, {n_rows} forward passes \(batch [24]\)", floor["phase"])
        timed = [suite, floor]
        if batch is not None:
            assert phases[at - 1] == f"{name} training (batch {batch})"
            timed.append(rows[at - 1])
        for row in timed:  # throughput is the clips over the phase's own time
            (c_lo, c_hi), (t_lo, t_hi) = _interval(row["clips/s"]), _interval(row["seconds"])
            assert c_lo <= n_clips / max(t_lo, 1e-12) and n_clips / t_hi <= c_hi, row
        # the returned and printed ratio is the suite's reported time over the floor's
        suite_s = float(suite["seconds"])
        assert _consistent_ratio(ratios[name], suite["seconds"], floor["seconds"]), (ratios[name], suite, floor)
        assert f"{name}: suite / floor = {ratios[name]:.2f}" in out
        # the suite's split (inputs, forward passes, each metric) is a split of that one timed evaluation
        parts = {row["phase"]: float(row["seconds"]) for row in split}
        assert {"suite: forward", "suite: inputs", "suite: deletion_auc", "suite: fid_in"} <= set(parts)
        assert 0.5 * suite_s < sum(parts.values()) <= 1.001 * suite_s + 1e-3, (suite_s, parts)
