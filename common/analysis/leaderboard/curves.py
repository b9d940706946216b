"""The matched-area curves of a leaderboard: each faithfulness family against the share of bins kept or removed."""

import math

import torch

from common.metrics.matched_area import DEFAULT_AREAS, FAMILIES, area_label


def area_curves(results, areas=DEFAULT_AREAS):
    """{family: {(classifier, method): [mean per area]}} for the methods scored at every area of a family."""
    curves = {}
    for family in FAMILIES:
        names = [f"{family}@{area_label(a)}" for a in areas]
        for result in results:
            if all(name in result.per_clip for name in names):
                means = [float(torch.as_tensor(result.per_clip[n], dtype=torch.float64).nanmean()) for n in names]
                curves.setdefault(family, {})[(result.classifier, result.label)] = means
    return curves


def save_area_curves(results, path, areas=DEFAULT_AREAS, title="Faithfulness at matched area"):
    """One panel per family (Fid-In, mask-in / mask-out drops, AI / AD / AG) of its mean against the area
    (the top 5-50 % of each map's bins), one line per method; a png via ``save_figure``. Returns the curves
    drawn ({} and no file when no method was scored at every area)."""
    curves = area_curves(results, areas)
    if not curves:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.reports.figures import save_figure

    n = len(curves)
    cols = min(3, n)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(4.6 * cols, 3.4 * math.ceil(n / cols)), squeeze=False)
    x = list(range(len(areas)))  # evenly spaced: the areas roughly double from one to the next
    for ax, (family, lines) in zip(axes.flat, curves.items(), strict=False):  # spare panels stay hidden
        title_text, higher, _ = FAMILIES[family]
        for k, ((classifier, label), means) in enumerate(lines.items()):
            color = plt.cm.tab10(k) if len(lines) <= 10 else plt.cm.tab20(k % 20)
            shown = label if len({c for c, _ in lines}) == 1 else f"{label} ({classifier})"
            ax.plot(x, means, marker="o", label=shown, color=color)
        ax.set_xticks(x, [f"{100 * a:g}" for a in areas])
        ax.set_xlabel("area: % of bins in the mask")
        ax.set_title(f"{title_text} ({'higher' if higher else 'lower'} is better)", fontsize=9)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    axes.flat[min(n, cols) - 1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path, dpi=90)
    return curves
