"""Figures (seaborn, PNG): one colour per strategy in every figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.ticker import MaxNLocator  # noqa: E402

import numpy as np
import pandas as pd

from ..builtins import load_builtins
from ..files import naming, open_for_writing, subfolder
from ..registry import NORMS


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def strategy_palette(strategies) -> dict[str, tuple]:
    """A fixed colour per strategy name: registered strategies first, in registry order."""
    import seaborn as sns

    load_builtins()  # the registry, not whichever strategy modules happen to be imported, decides the colours
    base = list(NORMS.list())
    # ten colour-blind-safe colours, then the "dark" set: distinct colours for up to twenty strategies
    colours = (sns.color_palette("colorblind", 10) + sns.color_palette("dark", 10)) * 2
    palette = {name: colours[i] for i, name in enumerate(base)}
    extra = iter(colours[len(base):] * 10)
    for name in sorted(set(strategies) - set(base)):
        # a parametrized key ("selu[input_scaling=standardize]") keeps its strategy's colour
        root = name.split("[", 1)[0]
        palette[name] = palette[root] if root in palette else next(extra)
    return palette


def _save(fig, path: Path) -> Path:
    """Save ``fig`` as PNG at ``path``: never through a link there, an error (a full disk) naming the file."""
    subfolder(path.parent)
    with naming(path), open_for_writing(path, "wb", what="a figure") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _dataset_panels(plt, n: int, width: float, height: float):
    """One row of ``n`` panels (one per dataset), with room on the right for a legend outside the data."""
    return plt.subplots(1, n, figsize=(width * n + 2, height), squeeze=False, layout="constrained")


def training_loss(history: pd.DataFrame, runs: pd.DataFrame, path: Path,
                  quantity: str = "inference mode, fixed training subset") -> Path:
    """Training loss (by default in inference mode on a fixed training subset; ``quantity`` names what ``history``'s
    ``train_loss`` holds) against epoch, log scale; one panel per dataset, one line style per model in every panel."""
    plt, sns = _mpl()
    d = history.merge(runs[["run_id", "dataset", "model", "strategy", "depth"]], on="run_id")
    d = d[np.isfinite(d.train_loss.astype(float))]
    def labels(models):
        return [f"{m} ({int(x)})" if pd.notna(x) else m for m, x in zip(models, d.depth)]

    # mlp[depth=8,width=784] (8) -> mlp (8) where no two models of a panel differ in more than their depth (the SNN
    # suite's widths differ per dataset only): then a line style means one depth in every panel
    short = labels(d.model.str.replace(r"\[.*\]", "", regex=True))
    full = labels(d.model)
    same = all(g.full.nunique() == g.short.nunique() for _, g in d.assign(short=short, full=full).groupby("dataset"))
    d["model"] = short if same else full
    models = sorted(d.model.unique(), key=lambda m: (len(m), m))  # one order, so a style means one model everywhere
    datasets = sorted(d.dataset.unique())
    fig, axes = _dataset_panels(plt, len(datasets), 6.5, 4.8)
    palette = strategy_palette(d.strategy.unique())
    for ax, dataset in zip(axes[0], datasets):
        sub = d[d.dataset == dataset]
        sns.lineplot(data=sub, x="epoch", y="train_loss", hue="strategy", style="model", palette=palette,
                     hue_order=[s for s in palette if s in set(d.strategy)], style_order=models, markers=True,
                     dashes=True, errorbar=None, ax=ax, legend=ax is axes[0][-1])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_yscale("log")
        ax.set_title(f"{dataset}: training loss ({quantity})")
        ax.set_xlabel("epoch (0 = initialization)" if (sub.epoch == 0).any() else "epoch")
        ax.set_ylabel("cross-entropy (log scale)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside the data
    fig.suptitle("Training loss per epoch, one line per strategy and model (depth in layers)")
    return _save(fig, path)


def preactivation_bands(long: pd.DataFrame, runs: pd.DataFrame, dataset: str, model: str, path: Path) -> Path:
    """15th/50th/85th percentiles of the last hidden layer's pre-activation over training, one panel per strategy."""
    plt, sns = _mpl()
    r = runs[(runs.dataset == dataset) & (runs.model == model)]
    d = long[long.run_id.isin(r.run_id) & (long.tap == "pre") & long.quantity.isin(["p15", "p50", "p85"])]
    d = d.merge(r[["run_id", "strategy"]], on="run_id", suffixes=("", "_r"))
    last = d.groupby("run_id").layer.transform("max")
    d = d[d.layer == last]
    strategies = sorted(d.strategy.unique())
    palette = strategy_palette(strategies)
    fig, axes = plt.subplots(1, len(strategies), figsize=(3.3 * len(strategies), 3.6), squeeze=False)
    for ax, strategy in zip(axes[0], strategies):
        w = d[d.strategy == strategy].pivot_table(index="epoch", columns="quantity", values="value", aggfunc="mean")
        c = palette[strategy]
        ax.fill_between(w.index, w.p15, w.p85, color=c, alpha=0.3, label="15th-85th pct")
        ax.plot(w.index, w.p50, color=c, marker="o", label="median")
        ax.set_title(strategy)
        ax.set_xlabel("epoch")
        ax.set_ylabel("pre-activation value")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{dataset} / {model}: input of the last hidden layer's nonlinearity (probe batch; own y-scale per panel)", y=1.04)
    fig.tight_layout()
    return _save(fig, path)


def signal_propagation(layers: pd.DataFrame, dataset: str, model: str, path: Path) -> Path:
    """Per-layer activation mean and variance against depth, at initialization and after training."""
    plt, sns = _mpl()
    d = layers[(layers.dataset == dataset) & (layers.model == model)].copy()
    palette = strategy_palette(d.strategy.unique())
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for col, when in enumerate(("init", "end")):
        d[f"{when}_var"] = d[f"{when}_std"] ** 2
        for row, (q, label) in enumerate((("mean", "activation mean"), ("var", "activation variance"))):
            ax = axes[row][col]
            sns.lineplot(data=d, x="layer", y=f"{when}_{q}", hue="strategy", palette=palette, marker="o", ax=ax,
                         hue_order=[s for s in palette if s in set(d.strategy)])
            ax.axhline(0.0 if q == "mean" else 1.0, color="grey", lw=1, ls="--")
            ax.set_title(f"{label}, {'at initialization' if when == 'init' else 'after training'}")
            ax.set_xlabel("hidden layer (0 = first)")
            ax.set_ylabel(label)
            if q == "var":
                ax.set_yscale("log")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if ax.get_legend() is not None:
                if (row, col) != (0, 1):
                    ax.get_legend().remove()
                else:
                    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"{dataset} / {model}: signal propagation (probe batch; dashed: SELU fixed point)")
    return _save(fig, path)


def accuracy_vs_depth(runs: pd.DataFrame, path: Path) -> Path:
    """Final test accuracy against depth, one line per strategy, one panel per dataset; families by marker."""
    plt, sns = _mpl()
    d = runs[runs.status == "ok"].copy()
    d["family"] = d.builder.str.rstrip("0123456789").str.rstrip("_")
    datasets = sorted(runs.dataset.unique())
    palette = strategy_palette(runs.strategy.unique())
    fig, axes = _dataset_panels(plt, len(datasets), 6, 4.2)
    families = sorted(d.family.unique())
    for ax, dataset in zip(axes[0], datasets):
        sub = d[d.dataset == dataset]
        seeds = sub.groupby(["strategy", "builder"]).seed.nunique().max() if len(sub) else 0
        if len(sub):
            sns.lineplot(data=sub, x="depth", y="test_accuracy", hue="strategy", style="family", palette=palette,
                         hue_order=[s for s in palette if s in set(d.strategy)], style_order=families,
                         markers=True, errorbar=("sd", 1) if seeds > 1 else None, ax=ax)
        band = f"; band: mean ± 1 sd over up to {seeds} seeds" if seeds > 1 else "; one seed, no band"
        ax.set_title(f"{dataset}: test accuracy vs depth{band}", fontsize=10)
        ax.set_xlabel("hidden layers")
        ax.set_ylabel("test accuracy (fraction)")
        if ax.get_legend():
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside the data
    return _save(fig, path)


# Wu & He 2018 (group norm), Table 2: ImageNet ResNet-50 validation error (%) by images per GPU.
GN_PAPER_ERROR = {"batch size": [32, 16, 8, 4, 2],
                  "batchnorm": [23.6, 23.7, 24.8, 27.3, 34.7], "groupnorm": [24.1, 24.2, 24.0, 24.2, 24.1]}


def error_vs_batch_size(runs: pd.DataFrame, path: Path) -> Path:
    """Test error against batch size, one line per strategy and panel per (dataset, model); the group-norm
    paper's ImageNet numbers in a panel of their own (a reference for the shape, not the level)."""
    plt, sns = _mpl()
    d = runs[runs.status == "ok"].copy()
    d["test_error_pct"] = 100.0 * (1.0 - d.test_accuracy)
    panels = sorted({(ds, b) for ds, b in zip(d.dataset, d.builder)})
    palette = strategy_palette(d.strategy_name.unique())
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(5.5 * (len(panels) + 1), 4.2), squeeze=False)
    for ax, (dataset, builder) in zip(axes[0], panels):
        sub = d[(d.dataset == dataset) & (d.builder == builder)]
        sns.lineplot(data=sub, x="batch_size", y="test_error_pct", hue="strategy_name", palette=palette, marker="o",
                     errorbar=("sd", 1) if sub.seed.nunique() > 1 else None, ax=ax)
        ax.set_title(f"{dataset} / {builder} (measured)")
    ref = axes[0][-1]
    for strategy in ("batchnorm", "groupnorm"):
        ref.plot(GN_PAPER_ERROR["batch size"], GN_PAPER_ERROR[strategy], marker="s", linestyle="--",
                 color=strategy_palette([strategy])[strategy], label=f"{strategy} (published)")
    ref.set_title("Wu & He 2018, ImageNet ResNet-50 (published)")
    ref.legend(fontsize=7)
    for ax in axes[0]:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size (images per step)")
        ax.set_ylabel("test error (%)")
    return _save(fig, path)


def layer_profile(frame: pd.DataFrame, dataset: str, model: str, quantity: str, ylabel: str, title: str, path: Path,
                  logy: bool = False, band: tuple[float, float, str] | None = None) -> Path:
    """A per-hidden-layer diagnostic at initialization and at the end, one line per strategy."""
    plt, sns = _mpl()
    d = frame[(frame.dataset == dataset) & (frame.model == model) & (frame.quantity == quantity) & (frame.layer >= 0)]
    palette = strategy_palette(d.strategy.unique())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, (when, pick) in zip(axes, (("initialization", "min"), ("end of training", "max"))):
        last = d.groupby("run_id").epoch.transform(pick)
        sns.lineplot(data=d[d.epoch == last], x="layer", y="value", hue="strategy", palette=palette, marker="o", ax=ax,
                     hue_order=[s for s in palette if s in set(d.strategy)])
        if band:
            ax.axhspan(band[0], band[1], color="grey", alpha=0.12, label=band[2])
        ax.set_title(when)
        ax.set_xlabel("hidden layer (0 = first)")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if logy:
            ax.set_yscale("log")
        if ax.get_legend() is not None:
            ax.legend(fontsize=7)
    fig.suptitle(f"{dataset} / {model}: {title}", y=1.02)
    return _save(fig, path)


def spectra_alpha(spectra: pd.DataFrame, dataset: str, model: str, path: Path) -> Path:
    """Power-law alpha per hidden layer at initialization and at the end, one line per strategy."""
    return layer_profile(spectra, dataset, model, "alpha", "power-law alpha of the weight spectrum",
                         "heavy-tailed self-regularization per layer", path,
                         band=(2, 6, "2-6: well-trained (Martin & Mahoney)"))


def over_training(frame: pd.DataFrame, dataset: str, model: str, quantities: list[tuple[str, str]], title: str,
                  path: Path) -> Path:
    """Whole-model diagnostics against epoch, one panel per quantity, one line per strategy, log scale."""
    plt, sns = _mpl()
    d = frame[(frame.dataset == dataset) & (frame.model == model)]
    palette = strategy_palette(d.strategy.unique())
    fig, axes = plt.subplots(1, len(quantities), figsize=(5.5 * len(quantities), 4), squeeze=False)
    for ax, (q, label) in zip(axes[0], quantities):
        sub = d[d.quantity == q].copy()
        sub["value"] = sub.value.abs()
        sns.lineplot(data=sub, x="epoch", y="value", hue="strategy", palette=palette, marker="o", ax=ax,
                     hue_order=[s for s in palette if s in set(sub.strategy)])
        ax.set_yscale("log")
        ax.set_xlabel("epoch (0 = initialization)")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend() is not None:
            ax.legend(fontsize=7)
    fig.suptitle(f"{dataset} / {model}: {title}")
    return _save(fig, path)


def alpha_vs_accuracy(spectra: pd.DataFrame, runs: pd.DataFrame, path: Path) -> Path:
    """Each run's median hidden-layer alpha at the end against its test accuracy; colour = strategy."""
    plt, sns = _mpl()
    d = spectra[(spectra.quantity == "alpha") & (spectra.layer >= 0)]
    d = d[d.epoch == d.groupby("run_id").epoch.transform("max")].groupby("run_id").value.median().rename("alpha")
    d = runs[runs.status == "ok"].merge(d.reset_index(), on="run_id")
    palette = strategy_palette(d.strategy.unique())
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    sns.scatterplot(data=d, x="alpha", y="test_accuracy", hue="strategy", style="model", palette=palette, s=60, ax=ax)
    ax.axvspan(2, 6, color="grey", alpha=0.12)
    ax.set_xscale("log")
    ax.set_xlabel("median power-law alpha of the hidden layers, end of training (log)")
    ax.set_ylabel("test accuracy (fraction)")
    ax.set_title("alpha against test accuracy (grey: 2-6)")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7)
    return _save(fig, path)


def landscape_lines(landscape: pd.DataFrame, dataset: str, path: Path) -> Path:
    """1-D loss slices around the trained weights, one panel per model (by depth), one line per strategy."""
    plt, sns = _mpl()
    d = landscape[(landscape.dataset == dataset) & (landscape.slice == "1d")]
    models = list(d.sort_values("depth").model.unique())
    palette = strategy_palette(d.strategy.unique())
    fig, axes = plt.subplots(1, len(models), figsize=(4.8 * len(models), 4), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models):
        sns.lineplot(data=d[d.model == model], x="x", y="loss", hue="strategy", palette=palette, ax=ax,
                     hue_order=[s for s in palette if s in set(d.strategy)])
        ax.set_yscale("log")
        ax.set_title(model)
        ax.set_xlabel("step along a filter-normalized direction")
        ax.set_ylabel("training loss (log)")
        if ax.get_legend() is not None:
            ax.legend(fontsize=7)
    fig.suptitle(f"{dataset}: 1-D loss slices at the end of training (Li et al. 2018)")
    return _save(fig, path)


def landscape_contours(landscape: pd.DataFrame, dataset: str, model: str, path: Path) -> Path:
    """2-D loss slices around the trained weights (log10 loss contours), one panel per strategy."""
    plt, _ = _mpl()
    d = landscape[(landscape.dataset == dataset) & (landscape.model == model) & (landscape.slice == "2d")]
    strategies = [s for s in strategy_palette(d.strategy.unique()) if s in set(d.strategy)]
    fig, axes = plt.subplots(1, len(strategies), figsize=(3.6 * len(strategies), 3.4), squeeze=False)
    finite = d.loss[np.isfinite(d.loss)]
    levels = np.linspace(np.log10(max(finite.min(), 1e-6)), np.log10(min(finite.max(), 1e6)), 25)
    contour = None
    for ax, strategy in zip(axes[0], strategies):
        g = d[d.strategy == strategy].pivot(index="y", columns="x", values="loss")
        z = np.ma.masked_invalid(np.log10(np.clip(g.values.astype(float), 1e-6, 1e6)))
        if z.count() < 4:  # a net whose loss overflows around its weights: nothing to draw
            ax.text(0.5, 0.5, "loss not finite\naround the weights", ha="center", va="center", transform=ax.transAxes)
        else:
            contour = ax.contour(g.columns.values, g.index.values, z, levels=levels, cmap="viridis", linewidths=0.8)
        ax.plot([0], [0], marker="*", color="black")
        ax.set_title(strategy, fontsize=9)
        ax.set_aspect("equal")
        ax.grid(False)
    if contour is not None:
        fig.colorbar(contour, ax=axes[0].tolist(), shrink=0.8, label="log10 training loss")
    fig.suptitle(f"{dataset} / {model}: 2-D loss slices (filter-normalized directions; star: trained weights)", y=1.02)
    return _save(fig, path)


def meanfield_overlay(frame: pd.DataFrame, dataset: str, model: str, path: Path) -> Path:
    """Measured (markers) and mean-field predicted (dashed) moments per layer at initialization."""
    plt, _ = _mpl()
    d = frame[(frame.dataset == dataset) & (frame.model == model)]
    palette = strategy_palette(d.strategy.unique())
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = (("pre_m2", "pre-activation second moment", True), ("act_mean", "activation mean", False),
              ("act_var", "activation variance", True))
    for ax, (q, label, logy) in zip(axes, panels):
        for strategy in [s for s in palette if s in set(d.strategy)]:
            g = d[d.strategy == strategy].groupby("layer")[[f"meas_{q}", f"pred_{q}"]].median()
            ax.plot(g.index, g[f"meas_{q}"], marker="o", ls="-", lw=1, color=palette[strategy], label=f"{strategy} measured")
            ax.plot(g.index, g[f"pred_{q}"], ls="--", lw=1.5, color=palette[strategy], label=f"{strategy} mean field")
        values = d[[f"meas_{q}", f"pred_{q}"]].to_numpy().ravel()
        if logy and values.min() > 0 and values.max() / values.min() > 10:  # log only where it spans decades
            ax.set_yscale("log")
        ax.set_xlabel("hidden layer (0 = first)")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"{dataset} / {model}: signal propagation at initialization against mean-field theory "
                 "(markers: measured; dashed: predicted)", y=1.02)
    fig.tight_layout()
    return _save(fig, path)


def lr_sensitivity(trials: pd.DataFrame, dataset: str, model: str, path: Path) -> Path:
    """A search's trials: validation accuracy against learning rate (log axis), one line per strategy (the best
    over any other searched setting at each rate, mean over trial seeds)."""
    plt, sns = _mpl()
    d = trials[(trials.dataset == dataset) & (trials.model == model)]
    others = [c for c in d.columns if c not in ("dataset", "model", "strategy", "learning_rate", "seed", "status",
                                                "val_accuracy", "run_id")]
    mean = d.groupby(["strategy", "learning_rate", *others], dropna=False).val_accuracy.mean().reset_index()
    best = mean.groupby(["strategy", "learning_rate"]).val_accuracy.max().reset_index()
    seeds = d.groupby(["strategy", "learning_rate", *others], dropna=False).seed.nunique()
    n = f"n = {seeds.min()}" if seeds.min() == seeds.max() else f"n = {seeds.min()}-{seeds.max()}"
    fig, ax = plt.subplots(figsize=(8.4, 4.4))
    sns.lineplot(data=best, x="learning_rate", y="val_accuracy", hue="strategy", marker="o",
                 palette=strategy_palette(best.strategy.unique()), ax=ax)
    ax.set_xscale("log")
    ax.set_title(f"{dataset} / {model}: learning-rate sensitivity\n(mean over the trial seeds, {n}; the best other "
                 f"searched value at each rate)", fontsize=11)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("validation accuracy at the last epoch")
    if ax.get_legend():
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="strategy", title_fontsize=7)
    return _save(fig, path)
