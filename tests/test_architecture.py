"""The package's architecture, checked from its source: layers, import cycles, sys.path, front-ends.

The imports are read with ``ast`` (every ``import`` statement, the ones inside
functions included, and a module named in a string literal such as
``importlib.import_module("common.data.esc50")``), never by importing, so a
lazy import cannot hide an edge.
"""

import ast
import inspect
import math
import re
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# Lowest first: a module may import its own layer and the ones before it, never a later one.
# Every module of ``common`` must fall in one of them (a new top-level module needs a place here).
LAYERS = [
    ("utilities", ("common", "common.io", "common.errors", "common.registry", "common.recipe", "common.checkpoints")),
    ("data", ("common.data",)),
    ("features", ("common.features",)),
    ("models", ("common.models",)),
    ("interpreters", ("common.interpreters",)),
    ("metrics", ("common.metrics",)),
    ("reports", ("common.reports",)),
    ("training", ("common.training",)),
    # what users call: the global analyses, the leaderboard, pretrained interpreters
    ("analysis", ("common.analysis", "common.inference")),
]

MODULE_NAME = re.compile(r"common(\.[A-Za-z_]\w*)+")


def package_modules(root=ROOT):
    """{dotted name: path} of every module of ``common``."""
    modules = {}
    for path in sorted((root / "common").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(name, modules):
    """The module ``name`` (or, for ``package.attribute``, the package) stands for, or None outside common."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module, path, modules):
    """[(line, imported module)] of ``module``: all import statements at any depth, and module-name strings."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import sub`` imports the submodule when there is one, else an attribute of pkg
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.split(":")[0]  # "module:function" references too
            if MODULE_NAME.fullmatch(text) and text in modules:
                names = [text]
        for name in names:
            target = _resolve(name, modules)
            if target is not None and target != module and (node.lineno, target) not in found:
                found.append((node.lineno, target))
    return sorted(found)


def layer_of(module):
    """Index in LAYERS of the longest prefix matching ``module``, or None."""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                # "common" itself is only the package's __init__, not a prefix of everything
                if prefix == "common" and module != "common":
                    continue
                best, best_len = index, len(prefix)
    return best


def import_graph(root=ROOT):
    modules = package_modules(root)
    return modules, {m: imports_of(m, p, modules) for m, p in modules.items()}


def layer_violations(root=ROOT):
    modules, graph = import_graph(root)
    problems = []
    for module, edges in graph.items():
        own = layer_of(module)
        if own is None:
            problems.append(f"{modules[module].relative_to(root)}: module {module} is in no layer of LAYERS")
            continue
        for line, target in edges:
            other = layer_of(target)
            if other is not None and other > own:
                problems.append(
                    f"{modules[module].relative_to(root)}:{line}: {module} ({LAYERS[own][0]}) imports "
                    f"{target} ({LAYERS[other][0]})"
                )
    return problems


def strongly_connected(graph):
    """Tarjan's algorithm: the strongly connected components of {node: [successors]} with more than one node."""
    index, low, on_stack, stack, components, counter = {}, {}, set(), [], [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def import_cycles(root=ROOT):
    modules, graph = import_graph(root)
    succ = {m: sorted({t for _, t in edges}) for m, edges in graph.items()}
    cycles = []
    for component in strongly_connected(succ):
        members = set(component)
        edges = [
            f"{modules[m].relative_to(root)}:{line} -> {t}" for m in component for line, t in graph[m] if t in members
        ]
        cycles.append(f"cycle {component}: " + "; ".join(edges))
    return cycles


def sys_path_edits(root=ROOT):
    """file:line of every ``sys.path`` mutation (assignment, insert/append/extend/...) under common/, tools/, recipes/."""
    found = []
    for folder in ("common", "tools", "recipes"):
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                target = None
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
                    target = node.value  # sys.path.insert / .append / ...
                elif isinstance(node, (ast.Assign, ast.AugAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    target = next((t for t in targets if isinstance(t, ast.Attribute)), None)
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr == "path"
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "sys"
                    and (not isinstance(node, ast.Attribute) or node.attr != "path")
                ):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    return sorted(set(found))


# -- the checks themselves ------------------------------------------------------------------


def test_no_lower_layer_imports_a_higher_one():
    problems = layer_violations()
    assert not problems, "layering broken:\n" + "\n".join(problems)


def test_no_import_cycle_between_modules():
    cycles = import_cycles()
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_file_edits_sys_path():
    edits = sys_path_edits()
    assert not edits, "sys.path edited (the package is installed; import it):\n" + "\n".join(edits)


# -- the checkers catch what they are meant to catch ------------------------------------------


def _write(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).strip() + "\n", encoding="utf-8")


def test_the_checkers_see_function_level_imports_cycles_and_path_edits(tmp_path):
    _write(
        tmp_path,
        {
            "common/__init__.py": "",
            "common/io.py": "",
            "common/data/__init__.py": 'PREP = {"esc": "common.data.esc:prepare"}',
            "common/data/esc.py": "def prepare():\n    from common.metrics import suite",
            "common/metrics/__init__.py": "from .base import Metric",
            "common/metrics/base.py": """
                class Metric:
                    def __call__(self):
                        from common.metrics.suite import Suite
                """,
            "common/metrics/suite.py": "from common.metrics.base import Metric\nfrom common import io",
            "common/stray.py": "",
            "tools/run.py": "import sys\nsys.path.insert(0, '.')\nprint(sys.path)",
            "recipes/r.py": "import sys\nsys.path = []",
        },
    )
    problems = layer_violations(tmp_path)
    assert "common/data/esc.py:2: common.data.esc (data) imports common.metrics.suite (metrics)" in problems
    assert any(p.startswith("common/stray.py: ") for p in problems)
    assert len(problems) == 2
    cycles = import_cycles(tmp_path)
    assert len(cycles) == 1 and "['common.metrics.base', 'common.metrics.suite']" in cycles[0]
    assert "common/metrics/base.py:3 -> common.metrics.suite" in cycles[0]
    assert sys_path_edits(tmp_path) == ["recipes/r.py:2", "tools/run.py:2"]
    # the string reference in common/data/__init__.py is an edge (importlib.import_module by name)
    _, graph = import_graph(tmp_path)
    assert (1, "common.data.esc") in graph["common.data"]


# -- one front-end interface ------------------------------------------------------------------


def _front_ends():
    """Every front-end: the modules of common.features and the FrontEnd subclasses anywhere in common.

    Each comes with small constructor arguments (several where it has several kinds, e.g. linear and mel).
    """
    import common.features as features
    import common.models.classifier  # noqa: F401  (the modules that may define front-ends)
    import common.models.genre_cnn  # noqa: F401
    import common.models.protopnet  # noqa: F401

    small = {
        "Log1pSpectrogram": [
            dict(sample_rate=16000, n_fft=256, hop_length=4.0, win_length=16.0),
            # SpeechBrain's Filterbank spans 0..8 kHz whatever the rate, so a mel one runs at 16 kHz
            dict(sample_rate=16000, n_fft=256, hop_length=4.0, win_length=16.0, n_mels=12),
        ],
        "MelDbSpectrogram": [
            dict(sample_rate=8000, n_fft=256, hop_length=64, n_mels=12),
            dict(sample_rate=8000, n_fft=256, hop_length=64, n_mels=12, top_db=None, mean=-20.0, std=10.0),
        ],
    }
    found = {
        cls
        for cls in vars(features).values()
        if isinstance(cls, type) and issubclass(cls, torch.nn.Module) and cls.__module__ == features.__name__
    }
    base = getattr(features, "FrontEnd", None)  # None before the interface existed
    stack = [base] if base is not None else []
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__.startswith("common."):
            found.add(cls)
    found = sorted((cls for cls in found if not inspect.isabstract(cls)), key=lambda cls: cls.__name__)
    return [(cls, kwargs) for cls in found for kwargs in small.get(cls.__name__, [{}])]


def test_every_front_end_class_is_known_here():
    names = {cls.__name__ for cls, _ in _front_ends()}
    assert {"Log1pSpectrogram", "MelDbSpectrogram"} <= names


def _ids(value):
    return value.__name__ if isinstance(value, type) else ",".join(f"{k}={v}" for k, v in value.items())


@pytest.mark.parametrize("cls,kwargs", _front_ends(), ids=_ids)
def test_every_front_end_implements_the_interface(cls, kwargs):
    g = torch.Generator().manual_seed(0)
    fe = cls(**kwargs)
    n_samples = 2000
    wavs = torch.randn(2, n_samples, generator=g) * torch.tensor([[0.1], [0.01]])
    X = fe(wavs)
    T, F = X.shape[1:]
    n_stft = fe.n_fft // 2 + 1

    # the grid: frames, bins, their frequencies
    assert X.shape[0] == 2 and F == fe.n_bins and T == fe.n_frames(n_samples)
    assert fe.frame_rate == pytest.approx(fe.sample_rate / fe.hop)
    assert fe.on_stft_grid == (F == n_stft and "n_mels" not in kwargs)
    freqs = torch.as_tensor(fe.bin_frequencies())
    assert freqs.shape == (F,) and bool((freqs[1:] > freqs[:-1]).all())
    assert 0 <= float(freqs[0]) and float(freqs[-1]) <= fe.sample_rate / 2 + 1e-3
    stft = fe.stft(wavs)
    assert stft.shape == (2, T, n_stft, 2)

    # masks: one band of X's grid lands on the STFT bins around that band's frequency
    band = F // 2
    one_band = torch.zeros(1, T, F)
    one_band[..., band] = 1.0
    spread = fe.mask_to_stft_grid(one_band)
    assert spread.shape == (1, T, n_stft) and float(spread.min()) >= 0 and float(spread.max()) <= 1 + 1e-6
    stft_hz = torch.linspace(0.0, fe.sample_rate / 2, n_stft)
    peak_hz = float(stft_hz[spread[0, 0].argmax()])
    width = float(freqs[band + 1] - freqs[band - 1]) / 2 + fe.sample_rate / fe.n_fft
    assert abs(peak_hz - float(freqs[band])) <= width
    # a mask of ones maps to ones both ways (the few linear bins no mel filter covers, at the ends, get 0)
    ones = fe.mask_to_stft_grid(torch.ones_like(X))
    covered = ones > 0
    torch.testing.assert_close(ones[covered], torch.ones_like(ones[covered]))
    assert covered.float().mean() > 0.9
    torch.testing.assert_close(fe.stft_mask_to_grid(torch.ones(2, T, n_stft)), torch.ones_like(X))

    # mask -> wav: ones on the STFT grid give the input back, zeros give silence
    back = fe.mask_to_wav(torch.ones(2, T, n_stft), stft, length=n_samples)
    inner = slice(fe.n_fft, n_samples - fe.n_fft)  # the ends lose a little to the window's taper
    assert back.shape == wavs.shape
    torch.testing.assert_close(back[:, inner], wavs[:, inner], atol=1e-5, rtol=1e-3)
    assert float(fe.mask_to_wav(torch.zeros(2, T, n_stft), stft, length=n_samples).abs().max()) < 1e-6
    with pytest.raises(ValueError, match="STFT grid"):
        fe.mask_to_wav(torch.ones(2, T, n_stft - 1), stft)

    # silence: a silent clip is its silence everywhere, and nothing lies below a clip's silence
    silent = fe(torch.zeros(1, n_samples))
    torch.testing.assert_close(silent, fe.silence(silent).expand(1, T, F))
    assert fe.silence(X).shape == (2, 1, 1) and bool((X >= fe.silence(X) - 1e-5).all())

    # dB: a round trip, and +10 dB of power (the waveform times sqrt(10)) reads as +10 dB
    db = fe.to_db(X.double())
    assert db.shape == X.shape
    torch.testing.assert_close(fe.from_db(db), X.double(), atol=1e-5, rtol=1e-5)
    louder = fe.to_db(fe(wavs * math.sqrt(10.0)).double())
    audible = db > db.amax(dim=(1, 2), keepdim=True) - 60.0  # well above any floor
    torch.testing.assert_close(louder[audible] - db[audible], torch.full_like(db[audible], 10.0), atol=0.05, rtol=0)


def test_a_ground_truth_mask_on_the_stft_grid_maps_to_every_front_ends_grid():
    from common.data.synthetic.ground_truth import mask_on_grid
    from common.features import Log1pSpectrogram, MelDbSpectrogram

    log1p = Log1pSpectrogram(n_fft=256, hop_length=4.0, win_length=16.0, n_mels=12)
    for fe in (log1p, MelDbSpectrogram(sample_rate=16000, n_fft=256, hop_length=64, n_mels=12)):
        X = fe(torch.randn(1, 4000) * 0.1)[0]
        n_stft = fe.n_fft // 2 + 1
        event = torch.zeros(X.shape[0], n_stft)
        event[:, : n_stft // 2] = 1.0  # the lower half of the spectrum
        mask = mask_on_grid(event, fe, X.shape)
        assert mask.shape == X.shape
        low = torch.as_tensor(fe.bin_frequencies()) < fe.sample_rate / 4
        # bands well inside the event are in it, bands well outside are not
        assert bool(mask[:, low][:, :-1].eq(1).all()) and bool(mask[:, ~low][:, 1:].eq(0).all())
        assert torch.equal(mask_on_grid(mask, fe, X.shape), mask)  # already on the grid
        assert mask_on_grid(event[:, :-1], fe, X.shape) is None  # neither grid
    # a front end that is no FrontEnd (precomputed spectrograms): only a mask on the grid maps
    assert mask_on_grid(event, torch.nn.Identity(), X.shape) is None
    assert torch.equal(mask_on_grid(mask, torch.nn.Identity(), X.shape), mask)
