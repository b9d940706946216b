"""Command-line and hparams plumbing shared by every recipe script."""

import shutil
import sys
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
