"""Pretrained interpreters: load from a hub id or a local folder, explain audio.

A pretrained-interpreter folder (or HuggingFace hub repo) holds
``hyperparams.yaml`` (inference hparams naming ``classifier``,
``interpreter`` and ``loadables``), one ``<name>.ckpt`` per loadable and
``label_encoder.txt``. ``tools/export_interpreter.py`` writes one from a
trained run. A hub id and a local folder go through the same code path: the
hub is only asked for a snapshot of the repo.

    from common.inference import PretrainedInterpreter
    interp = PretrainedInterpreter.from_hparams(source="owner/repo-or-folder")
    wav, label = interp.interpret_file("dog.wav")
"""

import logging
import os
from pathlib import Path

import torch
from speechbrain.dataio.encoder import CategoricalEncoder

from common.data.audio import load_audio
from common.errors import AudioError, CheckpointError, CheckpointNotFoundError, HubUnavailableError
from common.models.pretrained import check_state_dict_fits, is_hub_id, load_state_file
from common.recipe import load_hparams

logger = logging.getLogger(__name__)


def _hub_hint(source):
    return (
        f"Could not fetch {source!r} from the HuggingFace hub (no internet, or an unknown id), and it is not a "
        f"local path. Download it where you have internet (`huggingface-cli download {source} --local-dir DIR`) "
        "and pass DIR instead."
    )


def fetch_source(source, savedir=None):
    """A local folder for ``source``: itself if it is a folder, else a hub snapshot of ``owner/name``.

    A string that can only be a path (absolute, starting with ``.`` or ``~``, more than one ``/``, a
    backslash) is never sent to the hub: it is a CheckpointNotFoundError saying where it was looked for.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    looked = f"(looked for {os.path.abspath(path)})"
    if path.exists():
        raise CheckpointNotFoundError(
            f"{source} is a file, not a pretrained-interpreter folder {looked}: pass the folder that holds "
            "hyperparams.yaml and the .ckpt files (tools/export_interpreter.py writes one)."
        )
    if not is_hub_id(source, file=False):
        raise CheckpointNotFoundError(
            f"Pretrained-interpreter folder {source} does not exist {looked}. Check the path (export one with "
            "tools/export_interpreter.py), or pass a hub id owner/name."
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=str(source), cache_dir=savedir))
    except Exception as exc:
        raise HubUnavailableError(
            f"{source!r} is neither a local folder (there is no {os.path.abspath(path)}) nor fetchable from the "
            "HuggingFace hub (no internet, or an unknown id). If it is a local folder, check the path; if it is a "
            f"hub id, download it where you have internet (`huggingface-cli download {source} --local-dir DIR`) "
            "and pass DIR as source."
        ) from exc


def fetch_file(path, folder, savedir=None):
    """``path`` inside ``folder`` if it is there, else a hub file ``owner/repo/file``."""
    local = Path(folder) / path
    if local.is_file():
        return local
    parts = str(path).split("/")
    if len(parts) < 3:
        raise CheckpointError(f"{local} is missing.")
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download("/".join(parts[:2]), "/".join(parts[2:]), cache_dir=savedir))
    except Exception as exc:
        raise HubUnavailableError(_hub_hint(path)) from exc


class PretrainedInterpreter:
    """A classifier and its trained interpreter, ready to explain audio."""

    def __init__(self, hparams, label_encoder, device="cpu"):
        self.hparams = hparams
        self.device = device
        self.classifier = hparams["classifier"].to(device).eval()
        self.interpreter = hparams["interpreter"].to(device).eval()
        self.label_encoder = label_encoder
        self.sample_rate = hparams["sample_rate"]

    @classmethod
    def from_hparams(cls, source, hparams_file=None, savedir=None, device="cpu", overrides=None):
        """Load from a hub id or a local folder (hyperparams.yaml + checkpoint files).

        ``hparams_file`` replaces the folder's own hyperparams.yaml: e.g.
        ``recipes/ESC50/interpret/hparams/inference_piq_speechbrain.yaml`` reads
        SpeechBrain's published ``speechbrain/PIQ-ESC50``, whose own file is
        written for SpeechBrain's recipe. The hparams may rename checkpoint
        files (``checkpoint_files``) and point ``label_encoder_file`` at a
        file of the folder or at a hub file ``owner/repo/file``.
        """
        folder = fetch_source(source, savedir)
        hparams_path = Path(hparams_file) if hparams_file else folder / "hyperparams.yaml"
        if not hparams_path.is_file():
            raise CheckpointError(
                f"{folder} is not a pretrained-interpreter folder: {hparams_path.name} is missing "
                "(export one with tools/export_interpreter.py, or pass hparams_file)."
            )
        hparams = load_hparams(hparams_path, overrides or {})
        file_names = hparams.get("checkpoint_files") or {}
        for name, module in hparams["loadables"].items():
            path = folder / file_names.get(name, f"{name}.ckpt")
            if not path.is_file():
                raise CheckpointError(f"{path} is missing; {hparams_path} lists it as a loadable ({name}).")
            state = load_state_file(
                path, f"It is the {name} loadable of {hparams_path}: export or download the folder again."
            )
            check_state_dict_fits(module, state, path)
            module.load_state_dict(state)
        encoder = CategoricalEncoder()
        encoder.load(fetch_file(hparams.get("label_encoder_file", "label_encoder.txt"), folder, savedir))
        encoder.expect_len(len(encoder.lab2ind))
        return cls(hparams, encoder, device)

    @torch.no_grad()
    def interpret_batch(self, wavs):
        """Explain a batch (B, samples) at the model's rate.

        Returns (listenable interpretations (B, samples), predicted labels, Explanation).
        """
        wavs = wavs.to(self.device)
        explanation = self.interpreter.explain(wavs)
        listenable = explanation.to_wav(self.classifier, wavs)
        labels = [self.label_encoder.ind2lab[int(c)] for c in explanation.target]
        return listenable, labels, explanation

    def interpret_file(self, path):
        """Explain one audio file: (listenable interpretation (samples,), predicted label)."""
        if Path(path).is_dir():  # load_audio's own message is about a recipe's --data_folder
            raise AudioError(
                f"{path} is a directory, not an audio file: pass one file, e.g. {Path(path) / 'clip.wav'}."
            )
        if not Path(path).exists():
            raise AudioError(f"Audio file {path} does not exist (looked for {os.path.abspath(path)}).")
        wav = load_audio(path, self.sample_rate, length_s=self.hparams.get("signal_length_s"))
        listenable, labels, _ = self.interpret_batch(wav[None])
        return listenable[0].cpu(), labels[0]
