"""Command-line and hparams plumbing shared by every recipe script, and the one way to run a recipe from Python."""

import atexit
import datetime
import difflib
import json
import logging
import numbers
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from common.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


def load_hparams(hparams_file, overrides=""):
    """Load a hparams YAML with overrides; a malformed file names itself.

    Note: hyperpyyaml builds the objects a file names (``!new:``, ``!apply:``),
    i.e. it runs code. Only load hparams files you trust.
    """
    try:
        with open(hparams_file, encoding="utf-8") as fin:
            hparams = load_hyperpyyaml(fin, overrides)
        if isinstance(hparams, dict) and hparams.get("precision") == "auto":
            # SpeechBrain's Brain takes the run option from here (unless --precision is given); resolved as the
            # file loads, so that a Brain built from it in any way gets a precision it knows
            import torch

            hparams["precision"] = auto_precision("cuda" if torch.cuda.is_available() else "cpu")
        return hparams
    except FileNotFoundError as exc:
        if exc.filename in (None, str(hparams_file)):
            raise DataError(f"Hparams file {hparams_file} not found.") from exc
        raise
    except (NotADirectoryError, FileExistsError, PermissionError) as exc:
        # the hparams' objects make their folders as they are built (SpeechBrain's Checkpointer: <save_folder>)
        raise ConfigError(
            f"Cannot create {exc.filename} ({exc.strerror}) while building the objects of {hparams_file}: the "
            "output_folder (or a folder above it) is an existing file or cannot be written. Pass a writable "
            "--output_folder."
        ) from exc
    except Exception as exc:
        if type(exc).__module__.startswith(("ruamel", "yaml")):
            raise DataError(f"Hparams file {hparams_file} (or an override) is not valid YAML: {exc}") from exc
        raise


# -- the common hparams, checked before any work ------------------------------------------------------
class Rule:
    """What values an hparams key takes: ``kind`` (int or float, a bool is neither) at least ``low`` (above it
    when ``strict``) and below ``high`` when given."""

    def __init__(self, kind, low=None, strict=False, high=None):
        self.kind, self.low, self.strict, self.high = kind, low, strict, high

    def ok(self, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.kind is int and not float(value).is_integer():
            return False
        if self.low is not None and (value <= self.low if self.strict else value < self.low):
            return False
        return self.high is None or value < self.high

    def __str__(self):
        what = "an integer" if self.kind is int else "a number"
        if self.low is not None:
            what += f" {'>' if self.strict else '>='} {self.low}"
        if self.high is not None:
            what += f" and < {self.high}"
        return what


POSITIVE_INT, COUNT, POSITIVE = Rule(int, 0, strict=True), Rule(int, 0), Rule(float, 0, strict=True)
HPARAM_RULES = {
    **dict.fromkeys(
        ("batch_size", "number_of_epochs", "sample_rate", "out_n_neurons", "n_fft"),
        POSITIVE_INT,
    ),
    **dict.fromkeys(("n_mels", "ckpt_keep", "curve_steps"), POSITIVE_INT),
    **dict.fromkeys(("num_workers", "ckpt_interval_steps", "seed", "split_seed", "n_examples"), COUNT),
    **dict.fromkeys(("lr", "base_lr", "signal_length_s", "segment_s", "segment_hop_s"), POSITIVE),
    **dict.fromkeys(("lr_half_cycle_epochs", "hop_length", "win_length"), POSITIVE),  # ms in SpeechBrain's STFT
    "weight_decay": Rule(float, 0),
    "ckpt_interval_minutes": Rule(float, 0),
    "dropout": Rule(float, 0, high=1),
}


def check_hparams(hparams, hparams_file):
    """Refuse a common hparam of the wrong type or range (``--batch_size abc``, ``--lr -1``) before any data
    preparation or model building, naming the key and what it takes."""
    bad = [
        (key, hparams[key], rule) for key, rule in HPARAM_RULES.items() if key in hparams and not rule.ok(hparams[key])
    ]
    if bad:
        lines = "; ".join(f"{key}={value!r} must be {rule}" for key, value, rule in bad)
        raise ConfigError(f"{lines} (hparams file {hparams_file} or its command-line overrides). Fix the value.")


# Keys that the code reads when they are there (``hparams.get``) without any shipped YAML defining them all;
# tests/test_bad_input_runs.py checks this list against the code.
OPTIONAL_HPARAMS = {
    "archive_md5", "artist_split_folder", "augmentation", "best_checkpoint_key", "cache_classifier_outputs",
    "checkpoint_files", "checkpointer", "ckpt_keep", "classifier_hparams", "classifier_weights",
    "convnext_source", "curve_steps", "dataset", "display_name", "download", "drsa_classes", "fit_options",
    "genres", "ground_truth_folder", "hf_path", "interpreter_name", "label_encoder_file", "lr_annealing",
    "lr_half_cycle_epochs", "max_test_items", "max_train_items", "model", "n_examples", "n_positions",
    "n_random", "opt_class", "out_n_neurons", "param_group_lrs", "positions_as_samples", "prepare",
    "pretrained_audioprotopnet", "pretrained_classifier", "pretrained_classifier_files",
    "pretrained_nmf_files", "segment_hop_s", "segment_s", "signal_length_s", "skip_manifest_creation",
    "split", "split_ratios", "split_seed", "subspace_dim", "test_configs", "test_only", "test_split",
    "trust_remote_code", "use_pretrained", "valid_metrics", "valid_split", "channels_last", "cache_audio",
}  # fmt: skip


def known_hparams():
    """Every top-level key a shipped recipe's hparams file defines, SpeechBrain's run options and
    ``OPTIONAL_HPARAMS``."""
    keys = set(OPTIONAL_HPARAMS) | set(sb.core.RunOptions().as_dict())
    for path in (REPO / "recipes").glob("*/*/hparams/**/*.yaml"):
        keys |= hparams_keys(path)
    return keys


def check_unknown_keys(hparams_file):
    """A key of the file that no recipe reads and nothing in the file refers to (``!ref <key>``) is a
    misspelling: refuse it, naming the closest known keys. (A key of one's own is fine once it is used.)"""
    if not (REPO / "recipes").is_dir():  # an installed copy without the recipes knows no recipe's keys
        return
    text = Path(hparams_file).read_text(encoding="utf-8")
    used = set(re.findall(r"<([A-Za-z_][A-Za-z0-9_]*)", text))
    known = known_hparams()
    unknown = sorted(hparams_keys(hparams_file) - known - used)
    if unknown:
        hints = "; ".join(
            f"{key!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
            for key in unknown
            for close in [difflib.get_close_matches(key, known, n=3)]
        )
        raise ConfigError(
            f"{hparams_file} sets {hints}, which no recipe reads and nothing in the file refers to. Fix the "
            "spelling, or remove the key (a key of your own must be used, e.g. with !ref <key>)."
        )


# -- one run per output folder ------------------------------------------------------------------------
LOCK_NAME = ".run.lock"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class OutputFolderLock:
    """A lock file in the output folder holding the pid, host and start of the run that owns it: two runs
    writing one folder delete each other's checkpoints and interleave their logs. A lock left by a dead
    process of this host is taken over with a warning; a live one (or one of another host) is an error."""

    def __init__(self, folder):
        self.path = Path(folder) / LOCK_NAME
        self.held = False

    def acquire(self):
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.datetime.now().isoformat()}
        # The lock appears with its content already written (a hard link of a finished file, which fails if
        # the lock exists): a run starting at the same moment never reads a half-written lock as stale.
        draft = self.path.with_name(f"{LOCK_NAME}.{me['pid']}.draft")
        with open(draft, "w") as f:
            json.dump({**me, "command": " ".join(sys.argv)}, f)
        try:
            for _ in range(3):
                try:
                    self._create(draft)
                except FileExistsError:
                    self._check_holder(me)
                    continue
                self.held = True
                atexit.register(self.release)
                return self
        finally:
            draft.unlink(missing_ok=True)
        raise ConfigError(f"Could not take the lock {self.path}; another run keeps taking it. Retry.")

    def _create(self, draft):
        """The lock, with ``draft``'s content; FileExistsError when another run holds it."""
        try:
            os.link(draft, self.path)
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: exclusive create, then write (a short window)
            with os.fdopen(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666), "w") as f:
                f.write(draft.read_text())

    def _check_holder(self, me):
        try:
            holder = json.loads(self.path.read_text())
            pid, host = int(holder["pid"]), holder["host"]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError):  # damaged, or written by an older version mid-write
            logger.warning("Taking over the unreadable lock %s.", self.path)
            self.path.unlink(missing_ok=True)
            return
        if host == me["host"] and (pid == me["pid"] or not _alive(pid)):
            if pid != me["pid"]:
                logger.warning(
                    "Taking over %s: the run that held it (pid %d, started %s) is no longer running.",
                    self.path,
                    pid,
                    holder.get("started"),
                )
            self.path.unlink(missing_ok=True)
            return
        where = "" if host == me["host"] else f" on host {host} (whether it still runs cannot be told from here)"
        raise ConfigError(
            f"Another run (pid {pid}{where}, started {holder.get('started')}: {holder.get('command', '?')}) is "
            f"writing to {self.path.parent}. Wait for it, or use another --output_folder; if that run is dead, "
            f"delete {self.path}."
        )

    def release(self):
        if not self.held:
            return
        try:
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass
        self.held = False


def make_output_folder(folder):
    """Create ``folder`` (and check it is writable), or say which option to change."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except (FileExistsError, NotADirectoryError) as exc:
        raise ConfigError(
            f"output_folder {folder} (or a folder above it) is an existing file, not a folder. Pass another "
            "--output_folder."
        ) from exc
    except PermissionError as exc:
        raise ConfigError(
            f"output_folder {folder} cannot be written ({exc.strerror}). Pass a writable --output_folder."
        ) from exc


def one_checkpoint_interval(run_opts, hparams):
    """``--ckpt_interval_steps N`` on the command line replaces the YAML's ``ckpt_interval_minutes`` (and the
    other way round): SpeechBrain refuses both at once, and the recipes' YAMLs set the minutes."""
    given = run_opts.overridden_args
    for wanted, other in (
        ("ckpt_interval_steps", "ckpt_interval_minutes"),
        ("ckpt_interval_minutes", "ckpt_interval_steps"),
    ):
        if wanted in given and other not in given and run_opts[wanted] and hparams.get(other):
            logger.info("--%s given: the hparams' %s=%s is not used.", wanted, other, hparams[other])
            hparams[other] = 0  # SpeechBrain's Brain takes a run option not given on the command line from here


def auto_precision(device):
    """``precision: auto``: bf16 autocast where the hardware runs bf16 natively (a CPU with AVX512-BF16 or
    AMX, a GPU that supports it), else fp16 on a GPU, else fp32. Emulated bf16 is slower than fp32."""
    import torch

    if str(device).startswith("cuda"):
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def setup_experiment(argv=None):
    """Parse arguments, init DDP, load and check hparams, lock and create the output folder.

    Returns (hparams, run_opts, hparams_file, overrides).
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(list(argv))
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams = load_hparams(hparams_file, overrides)
    check_hparams(hparams, hparams_file)
    check_unknown_keys(hparams_file)
    one_checkpoint_interval(run_opts, hparams)
    if sb.utils.distributed.if_main_process():
        make_output_folder(hparams["output_folder"])
        OutputFolderLock(hparams["output_folder"]).acquire()
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
