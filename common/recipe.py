"""Command-line and hparams plumbing shared by every recipe script, and the one way to run a recipe from Python."""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from common.errors import DataError


def load_hparams(hparams_file, overrides=""):
    """Load a hparams YAML with overrides; a malformed file names itself.

    Note: hyperpyyaml builds the objects a file names (``!new:``, ``!apply:``),
    i.e. it runs code. Only load hparams files you trust.
    """
    try:
        with open(hparams_file, encoding="utf-8") as fin:
            return load_hyperpyyaml(fin, overrides)
    except FileNotFoundError as exc:
        raise DataError(f"Hparams file {hparams_file} not found.") from exc
    except Exception as exc:
        if type(exc).__module__.startswith(("ruamel", "yaml")):
            raise DataError(f"Hparams file {hparams_file} (or an override) is not valid YAML: {exc}") from exc
        raise


def setup_experiment(argv=None):
    """Parse arguments, init DDP, load hparams, create the output folder.

    Returns (hparams, run_opts, hparams_file, overrides).
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(list(argv))
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams = load_hparams(hparams_file, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    # SpeechBrain copies the file that calls create_experiment_directory (this one); its recipes, and its
    # recipe tests' file checks, expect the script that was run (train.py, train_piq.py, ...) there too.
    script = getattr(sys.modules.get("__main__"), "__file__", None)
    if script and Path(script).name != "__main__.py" and sb.utils.distributed.if_main_process():
        shutil.copy(script, hparams["output_folder"])
    # `--test_only` is SpeechBrain's run option; `test_only: True` in the YAML works too.
    if "test_only" in run_opts.overridden_args:
        hparams["test_only"] = bool(run_opts["test_only"])
    hparams["test_only"] = bool(hparams.get("test_only", False))
    return hparams, run_opts, hparams_file, overrides


# -- running a recipe script as a user would --------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]


class RecipeError(RuntimeError):
    """A recipe script exited non-zero; the message holds its command line, its log file and the log's tail."""


def resolve(path, cwd=None):
    """A recipe-relative path (``recipes/...``) against the repository unless it exists from ``cwd`` (default:
    here) and not there."""
    path = Path(path)
    here = Path(cwd or ".") / path
    return (
        path if path.is_absolute() else here.resolve() if here.exists() and not (REPO / path).exists() else REPO / path
    )


def cli_value(value):
    """One command-line value as hyperpyyaml parses it back (lists and mappings as compact YAML flow)."""
    if isinstance(value, (list, dict)):
        return json.dumps(value).replace(" ", "")
    return str(value)


def override_args(overrides):
    """``{key: value}`` -> ``["--key", "value", ...]``; a sequence is taken as ready-made arguments."""
    if overrides is None:
        return []
    if isinstance(overrides, dict):
        return [item for key, value in overrides.items() for item in (f"--{key}", cli_value(value))]
    return [str(item) for item in overrides]


def hparams_keys(hparams):
    """The top-level keys an hparams file defines (hyperpyyaml refuses overrides of any other key)."""
    return set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:", resolve(hparams).read_text(), flags=re.M))


def only_known(overrides, hparams):
    """The overrides whose key the hparams file defines."""
    keys = hparams_keys(hparams)
    return {k: v for k, v in overrides.items() if k in keys}


def run_recipe(
    script,
    hparams,
    overrides=None,
    log_file=None,
    *,
    cwd=None,
    env=None,
    timeout=None,
    check=True,
    launcher=None,
    echo=False,
    tail_lines=30,
):
    """Run ``python script hparams --key value ...`` from the repository root; return the CompletedProcess.

    ``overrides``: a mapping (``--key value`` each) or a list of ready-made arguments. The output
    (stdout and stderr, interleaved as printed) is returned as ``stdout``, written to ``log_file`` as
    it comes when one is given, and printed as it comes when ``echo``. ``launcher`` replaces
    ``[python]`` (e.g. torchrun); ``env`` adds to the environment. A non-zero exit raises
    ``RecipeError`` with the last ``tail_lines`` lines of output unless ``check`` is False.
    """
    script, hparams = resolve(script, cwd), resolve(hparams, cwd)
    cmd = [*(launcher or [sys.executable]), str(script), str(hparams), *override_args(overrides)]
    print("$", " ".join(cmd), flush=True)
    log = None
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        log = open(log_file, "w", encoding="utf-8")  # noqa: SIM115 (closed below; written as the recipe runs)
    lines = []
    proc = subprocess.Popen(
        cmd,
        cwd=cwd or REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    timed_out = threading.Event()

    def kill():
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout, kill) if timeout else None
    try:
        if timer:
            timer.start()
        for line in proc.stdout:
            lines.append(line)
            if log:
                log.write(line)
                log.flush()
            if echo:
                print(line, end="", flush=True)
        proc.wait()
    finally:
        if timer:
            timer.cancel()
        if log:
            log.close()
    output = "".join(lines)
    if timed_out.is_set():
        raise subprocess.TimeoutExpired(cmd, timeout, output=output)
    if check and proc.returncode != 0:
        where = f"; log: {log_file}" if log_file is not None else ""
        tail = "".join(lines[-tail_lines:])
        raise RecipeError(f"Recipe failed (exit {proc.returncode}): {' '.join(cmd)}{where}\n{tail}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout=output, stderr="")
