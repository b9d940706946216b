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
from pathlib import Path

import torch
from speechbrain.dataio.encoder import CategoricalEncoder

from common.data.audio import load_audio
from common.errors import CheckpointError, HubUnavailableError
from common.models.pretrained import check_state_dict_fits
from common.recipe import load_hparams

logger = logging.getLogger(__name__)
REQUIRED_FILES = ("hyperparams.yaml", "label_encoder.txt")


def fetch_source(source, savedir=None):
    """A local folder for ``source``: itself if it is a folder, else a hub snapshot."""
    if Path(source).is_dir():
        return Path(source)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=str(source), cache_dir=savedir))
    except Exception as exc:
        raise HubUnavailableError(
            f"Could not fetch pretrained interpreter {source!r} from the HuggingFace hub (no internet, or an "
            "unknown id), and it is not a local folder. Download it where you have internet "
            f"(`huggingface-cli download {source} --local-dir DIR`) and pass DIR as source."
        ) from exc


class PretrainedInterpreter:
    """A classifier and its trained interpreter, ready to explain audio."""

    def __init__(self, hparams, label_encoder, device="cpu"):
        self.hparams = hparams
        self.device = device
        self.classifier = hparams["classifier"].to(device).eval()
        self.interpreter = hparams["interpreter"]
        if isinstance(self.interpreter, torch.nn.Module):
            self.interpreter.to(device).eval()
        self.label_encoder = label_encoder
        self.sample_rate = hparams["sample_rate"]

    @classmethod
    def from_hparams(cls, source, savedir=None, device="cpu", overrides=None):
        """Load from a hub id or a local folder (hyperparams.yaml + checkpoint files)."""
        folder = fetch_source(source, savedir)
        missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
        if missing:
            raise CheckpointError(f"{folder} is not a pretrained-interpreter folder: {missing} missing.")
        hparams = load_hparams(folder / "hyperparams.yaml", overrides or {})
        for name, module in hparams["loadables"].items():
            path = folder / f"{name}.ckpt"
            if not path.is_file():
                raise CheckpointError(f"{path} is missing; {folder}/hyperparams.yaml lists it as a loadable.")
            state = torch.load(path, map_location="cpu", weights_only=True)
            check_state_dict_fits(module, state, path)
            module.load_state_dict(state)
        encoder = CategoricalEncoder()
        encoder.load(folder / "label_encoder.txt")
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
        wav = load_audio(path, self.sample_rate, length_s=self.hparams.get("signal_length_s"))
        listenable, labels, _ = self.interpret_batch(wav[None])
        return listenable[0].cpu(), labels[0]
