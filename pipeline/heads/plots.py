"""PNG plots of a training run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.plotting import pyplot


def learning_curve_figure(history: Sequence[dict[str, Any]], title: str = "") -> Any:
    """The learning-curve figure: losses on the left axis, validation accuracy on the right, and ONE legend
    for both, below the axes, so it covers neither the curves nor another legend."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, loss_ax = plt.subplots(figsize=(6, 4.5))
    lines = loss_ax.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    if history and "val_loss" in history[0]:
        lines += loss_ax.plot(epochs, [h["val_loss"] for h in history], label="val loss")
        acc_ax = loss_ax.twinx()
        lines += acc_ax.plot(epochs, [h["val_accuracy"] for h in history], "g--", label="val accuracy")
        acc_ax.set_ylabel("accuracy")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy")
    loss_ax.set_title(title)
    fig.legend(lines, [line.get_label() for line in lines], loc="lower center", ncol=len(lines), frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))  # the bottom strip is the legend's
    return fig


def learning_curve(history: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Train/validation loss and validation accuracy per epoch (iteration, for L-BFGS), as a PNG."""
    fig = learning_curve_figure(history, title)
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path


def confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Path,
                     title: str = "") -> Path:
    """A heat map of counts, rows true class, columns predicted class."""
    plt = pyplot()
    m = np.asarray(matrix)
    k = len(class_names)
    side = min(12, 2 + 0.4 * k)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(m, cmap="Blues")
    if k <= 30:
        ax.set_xticks(range(k), class_names, rotation=90)
        ax.set_yticks(range(k), class_names)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def accuracy_vs_regularization(panels: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """A grid of validation accuracy vs regularisation: one row per tap, one column per method.

    Each panel is {'tap', 'method', 'xlabel', 'x': (R,) values, 'series': {label: (R,) accuracies}}; the x axis is
    logarithmic, or symlog (linear below the smallest positive value) when a regularisation of 0 needs a place.
    """
    plt = pyplot()
    taps = list(dict.fromkeys(p["tap"] for p in panels))
    methods = list(dict.fromkeys(p["method"] for p in panels))
    fig, axes = plt.subplots(len(taps), len(methods), figsize=(4 * len(methods), 3 * len(taps)), squeeze=False)
    for ax in axes.ravel():
        ax.set_visible(False)
    for p in panels:
        ax = axes[taps.index(p["tap"]), methods.index(p["method"])]
        ax.set_visible(True)
        x = np.asarray(p["x"], dtype=float)
        for label, acc in p["series"].items():
            ax.plot(x, acc, marker="o", markersize=3, label=label)
        positive = x[x > 0]
        if positive.size == x.size:
            ax.set_xscale("log")
        else:
            ax.set_xscale("symlog", linthresh=positive.min() if positive.size else 1.0)
        ax.set_xlabel(p["xlabel"])
        ax.set_ylabel("val accuracy")
        ax.set_title(f"{p['method']} on {p['tap']}", fontsize=9)
        if len(p["series"]) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
