"""PhysioNet/CinC 2016 heart sounds: the synthetic generator's ground truth, and the prepare path on small
fixtures in the challenge's layout (labels, segmentations, a corrupt file, a missing label, downloads)."""

import hashlib
import json
import zipfile

import numpy as np
import pytest
import soundfile as sf

from common.data.physionet2016 import (
    CLASSES,
    ensure_physionet2016,
    list_recordings,
    prepare_physionet2016,
    read_reference,
    read_states,
    stratified_split,
    window_states,
)
from common.data.synthetic.heart_sounds import (
    SAMPLE_RATE,
    make_heart_sounds,
    synthesize_pcg,
    write_state_annotation,
)
from common.errors import DataError, DataNotFoundError, IntegrityError


def band_power(wave, lo, hi, fs=SAMPLE_RATE):
    spectrum = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(len(wave), 1 / fs)
    return spectrum[(freqs >= lo) & (freqs < hi)].sum()


@pytest.mark.parametrize("murmur", ["systole", "diastole"])
def test_the_murmur_is_in_its_phase_of_every_beat_and_quieter_than_s1(murmur):
    normal, states = synthesize_pcg(10.0, murmur=None, seed=3)
    abnormal, states_ab = synthesize_pcg(10.0, murmur=murmur, seed=3)
    assert np.array_equal(states, states_ab)  # same heart, same cycle: only the murmur differs
    code = {"systole": 2, "diastole": 4}[murmur]
    other = {"systole": 4, "diastole": 2}[murmur]

    # the murmur band's power in the murmur's phase grows many times; in the other long phase it stays
    def power(wave, phase):
        return band_power(wave * (states == phase), 150, 450)

    assert power(abnormal, code) > 3 * power(normal, code)
    assert 0.5 < power(abnormal, other) / power(normal, other) < 2.0
    # the evidence is not the loudest thing: S1's peak is above the murmur's in every recording
    s1_peak = np.abs(abnormal[states_ab == 1]).max()
    assert np.abs(abnormal[states_ab == code]).max() < s1_peak
    # every beat's cycle is S1 -> systole -> S2 -> diastole
    changes = states[np.flatnonzero(np.diff(states.astype(int))) + 1]
    assert all((b - a) % 4 == 1 for a, b in zip(changes[:-1], changes[1:], strict=True))
    assert 55 / 60 * 10 * 0.8 <= np.sum(changes == 1) <= 100 / 60 * 10 * 1.2


def test_the_generator_writes_the_challenges_layout_deterministically(tmp_path):
    for name in ("one", "two"):
        make_heart_sounds(tmp_path / name, n_normal=3, n_abnormal=3, duration_s=(5.0, 7.0), seed=5)
    a, b = tmp_path / "one", tmp_path / "two"
    for rel in ("training-a/REFERENCE.csv", "training-a/a0001.wav", "ground_truth.json"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    truth = json.loads((a / "ground_truth.json").read_text())
    labels = read_reference(a / "training-a" / "REFERENCE.csv")
    assert sorted(labels) == sorted(truth) and len(labels) == 6
    assert {CLASSES[v] for v in labels.values()} == {"normal", "abnormal"}
    for name, t in truth.items():
        assert CLASSES[labels[name]] == t["label"] and (t["murmur"] is None) == (t["label"] == "normal")
    header = (a / "training-a" / "a0001.hea").read_text().split()
    info = sf.info(str(a / "training-a" / "a0001.wav"))
    assert header[:4] == ["a0001", "1", "2000", str(info.frames)] and info.samplerate == 2000
    # the segmentation read back is the generator's, sample for sample
    wave, states = synthesize_pcg(6.0, murmur="systole", seed=11)
    write_state_annotation(tmp_path / "x_StateAns.mat", states)
    assert np.array_equal(read_states(tmp_path / "x_StateAns.mat", len(states)), states)


def write_fixture(root, sets=("a", "b"), n=4, states=True):
    """A small tree in the challenge's layout: training-<x>/ wavs + REFERENCE.csv, hand-corrected segmentations
    whose first mark is an unknown '(N' stretch, as real ones can be."""
    from scipy.io import savemat

    for letter in sets:
        folder = root / "training" / f"training-{letter}"
        folder.mkdir(parents=True)
        rows = []
        for k in range(1, n + 1):
            name = f"{letter}{k:04d}"
            wave, st = synthesize_pcg(3.0 + k, murmur="systole" if k % 2 else None, seed=k)
            sf.write(folder / f"{name}.wav", wave, SAMPLE_RATE, subtype="PCM_16")
            rows.append(f"{name},{1 if k % 2 else -1}")
            if states:
                cells = np.empty((3, 2), dtype=object)
                for i, (sample, mark) in enumerate(((1, "(N"), (1001, "S1"), (1201, "systole"))):
                    cells[i, 0], cells[i, 1] = np.array([[sample]], dtype=float), np.array([mark])
                ann = root / "annotations" / "hand_corrected" / f"training-{letter}_StateAns"
                ann.mkdir(parents=True, exist_ok=True)
                savemat(ann / f"{name}_StateAns.mat", {"state_ans": cells})
        (folder / "REFERENCE.csv").write_text("\n".join(rows) + "\n")
    return root


def paths(out):
    return [out / f"{s}.json" for s in ("train", "valid", "test")]


def test_prepare_writes_stratified_manifests_with_labels_durations_and_segmentations(tmp_path):
    root = write_fixture(tmp_path / "data", n=8)
    out = tmp_path / "manifest"
    prepare_physionet2016(root, *paths(out), split_ratios=(0.5, 0.25, 0.25), download=False)
    splits = {p.stem: json.loads(p.read_text()) for p in paths(out)}
    names = [set(s) for s in splits.values()]
    assert sum(map(len, names)) == 16 and not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    for split in splits.values():  # stratified: each split has both labels of both sets
        assert {(e["set"], e["class_string"]) for e in split.values()} == {(s, c) for s in "ab" for c in CLASSES}
    entry = splits["train"][sorted(splits["train"])[0]]
    k = int(sorted(splits["train"])[0][1:])
    assert entry["duration"] == pytest.approx(3.0 + k) and entry["recording_rate"] == 2000
    states = read_states(entry["states"], int(entry["duration"] * 2000))
    assert (states[:1000] == 0).all() and (states[1000:1200] == 1).all() and (states[1200:] == 2).all()
    # up to date: a second call rewrites nothing
    before = [p.stat().st_mtime_ns for p in paths(out)]
    prepare_physionet2016(root, *paths(out), split_ratios=(0.5, 0.25, 0.25), download=False)
    assert [p.stat().st_mtime_ns for p in paths(out)] == before
    # a window's states follow its start and rate, and are unknown past the recording's end
    w = window_states(states, 2000, 0.5, 2000, 1000).numpy()
    assert (w[:100] == 1).all() and (w[100:] == 2).all() and len(w) == 2000
    assert (window_states(states, 2000, entry["duration"] - 0.1, 1000, 1000).numpy()[100:] == 0).all()


def test_bad_input_is_named_with_its_fix(tmp_path):
    root = write_fixture(tmp_path / "data", sets=("a",))
    folder = root / "training" / "training-a"
    out = tmp_path / "manifest"
    # a corrupt recording
    (folder / "a0002.wav").write_bytes(b"RIFF\x00\x00not audio at all")
    with pytest.raises(DataError, match=r"a0002\.wav cannot be read as audio.*Restore it"):
        prepare_physionet2016(root, *paths(out), download=False)
    assert not any(p.exists() for p in paths(out))  # nothing half-written
    sf.write(folder / "a0002.wav", synthesize_pcg(4.0, seed=2)[0], SAMPLE_RATE, subtype="PCM_16")
    # a recording without a label
    sf.write(folder / "a0009.wav", synthesize_pcg(4.0, seed=9)[0], SAMPLE_RATE, subtype="PCM_16")
    with pytest.raises(DataError, match=r"a0009\.wav has no label in .*REFERENCE\.csv.*Add a 'name,label' row"):
        list_recordings(root)
    (folder / "a0009.wav").unlink()
    # a label without a recording, a malformed row
    reference = (folder / "REFERENCE.csv").read_text()
    (folder / "REFERENCE.csv").write_text(reference + "a0010,1\n")
    with pytest.raises(DataError, match=r"lists 'a0010' but .*a0010\.wav does not exist"):
        list_recordings(root)
    (folder / "REFERENCE.csv").write_text(reference + "a0011,normal\n")
    with pytest.raises(DataError, match=r"line 5: 'a0011,normal' is not 'name,label'"):
        list_recordings(root)
    (folder / "REFERENCE.csv").write_text(reference)
    # a corrupt segmentation, and a missing one when the classifier needs it
    mat = root / "annotations" / "hand_corrected" / "training-a_StateAns" / "a0003_StateAns.mat"
    mat.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"a0003_StateAns\.mat is not a segmentation"):
        read_states(mat, 100)
    mat.unlink()
    assert next(r for r in list_recordings(root) if r["name"] == "a0003")["states"] is None
    with pytest.raises(DataError, match=r"a0003\.wav has no segmentation.*annotations\.zip"):
        list_recordings(root, require_segmentation=True)
    with pytest.raises(DataError, match=r"no training-c/REFERENCE\.csv.*--sets"):
        list_recordings(root, sets=["c"])


def test_offline_the_error_says_where_to_get_the_data_and_how_to_make_synthetic(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"training\.zip.*SHA256SUMS.*make_heart_sounds\.py"):
        ensure_physionet2016(tmp_path / "none", download=False)
    with pytest.raises(DataNotFoundError, match=r"SHA256SUMS\.txt could not be downloaded"):
        ensure_physionet2016(tmp_path / "none", base_url=(tmp_path / "no_server").as_uri() + "/")


def test_download_checks_each_archive_against_physionets_sums_and_installs(tmp_path):
    source = write_fixture(tmp_path / "source", sets=("a",), n=2)
    server = tmp_path / "server"
    server.mkdir()
    for archive, top in (("training.zip", "training"), ("annotations.zip", "annotations")):
        with zipfile.ZipFile(server / archive, "w") as z:
            for path in sorted((source / top).rglob("*")):
                if path.is_file():
                    z.write(path, path.relative_to(source / top if top == "training" else source))
    sums = {a: hashlib.sha256((server / a).read_bytes()).hexdigest() for a in ("training.zip", "annotations.zip")}
    (server / "SHA256SUMS.txt").write_text("".join(f"{h}  {a}\n" for a, h in sums.items()))
    data = ensure_physionet2016(tmp_path / "data", base_url=server.as_uri() + "/")
    recordings = list_recordings(data, require_segmentation=True)
    assert [r["name"] for r in recordings] == ["a0001", "a0002"]
    # a tampered archive is refused and nothing is installed
    (server / "SHA256SUMS.txt").write_text(f"{'0' * 64}  training.zip\n{sums['annotations.zip']}  annotations.zip\n")
    with pytest.raises(IntegrityError):
        ensure_physionet2016(tmp_path / "other", base_url=server.as_uri() + "/")
    assert not list((tmp_path / "other").rglob("*.wav"))


def test_the_split_is_seeded_and_keeps_each_sets_label_balance():
    recordings = [{"name": f"{s}{k}", "set": s, "classID": k % 3 == 0} for s in "ab" for k in range(30)]
    one, two = stratified_split(recordings, seed=1), stratified_split(recordings, seed=1)
    assert one == two and stratified_split(recordings, seed=2) != one
    for split, share in zip(("train", "valid", "test"), (0.7, 0.15, 0.15), strict=True):
        assert len(one[split]) == pytest.approx(60 * share, abs=2)
    with pytest.raises(DataError, match="split_ratios"):
        stratified_split(recordings, split_ratios=(1, -1, 1))
