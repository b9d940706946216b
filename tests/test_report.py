"""The HTML report of a leaderboard run, opened in headless Chromium; every audio element plays an existing wav."""

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
DEBUG_CONFIG = REPO / "tools" / "leaderboard" / "debug.yaml"


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed, and CI is set: .ci/run installs Debian's chromium package")
    pytest.skip("chromium not installed (apt-get install -y --no-install-recommends chromium)")


class AudioSources(HTMLParser):
    """Every src of an <audio> or <source> element, and of <img> elements."""

    def __init__(self):
        super().__init__()
        self.audio, self.images = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("audio", "source") and attrs.get("src"):
            self.audio.append(attrs["src"])
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from common.analysis.leaderboard import load_config, run
    from common.reports.html import write_html_report

    out = tmp_path_factory.mktemp("leaderboard_report")
    run(load_config(DEBUG_CONFIG, data_folder=out / "data", output_folder=out), progress=False)
    # the report can also be written on its own, anywhere: here, away from the run folder (tools/report.py)
    index = write_html_report(out, out.parent / f"{out.name}_zip")
    return Path(index)


def resolve(index, src):
    parsed = urlparse(src)
    assert parsed.scheme in ("", "file") and not parsed.netloc, f"{src} is not a local relative path"
    path = Path(unquote(parsed.path))
    assert not path.is_absolute(), f"{src}: the report must use relative paths (it is zipped and moved)"
    return index.parent / path


def test_report_opens_in_headless_chromium_and_every_audio_plays_a_wav(report, tmp_path):
    chromium = find_chromium()
    screenshot = tmp_path / "report.png"
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={screenshot}",
        "--window-size=1200,2000",
        report.resolve().as_uri(),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    from PIL import Image

    with Image.open(screenshot) as image:
        assert image.size == (1200, 2000)
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.std() > 5, "the screenshot is blank"
    assert (pixels < 128).mean() > 0.01, "the screenshot shows almost no content"

    parser = AudioSources()
    parser.feed(report.read_text())
    assert len(parser.audio) >= 2
    for src in parser.audio:
        path = resolve(report, src)
        assert path.suffix == ".wav" and path.is_file(), src
        data, rate = sf.read(path)
        assert len(data) > 0 and rate > 0, src
    for src in parser.images:
        assert resolve(report, src).is_file(), src
