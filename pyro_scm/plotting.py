"""Plotting helpers that return matplotlib figures: image grids and counterfactual scatters.

The causal graph is drawn by :func:`pyro_scm.graph.plot_graph`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .graph import plot_graph

__all__ = ["plot_graph", "plot_image_grid", "plot_scatter"]


def plot_image_grid(rows: Mapping[str, Tensor], max_columns: int = 10):
    """A grid with one row of images per entry, labelled by its key.

    Args:
        rows: label -> images ``(n, C, H, W)`` or ``(n, H, W)`` with values in [0, 1].
        max_columns: the most images shown per row.

    Returns:
        the matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    n = min(max(v.shape[0] for v in rows.values()), max_columns)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n + 1.2, 1.15 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        images = images.detach().to("cpu", torch.float32)
        if images.dim() == 4:
            images = images[:, 0] if images.shape[1] == 1 else images.permute(0, 2, 3, 1)
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < images.shape[0]:
                ax.imshow(images[c].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    return fig


def plot_scatter(
    points: Mapping[str, tuple[Tensor, Tensor]], xlabel: str, ylabel: str, title: str = ""
):
    """A scatter plot with one series per entry.

    Args:
        points: label -> ``(x, y)``, each ``(n,)``.
        xlabel, ylabel, title: axis labels and title.

    Returns:
        the matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    for label, (x, y) in points.items():
        ax.scatter(
            x.detach().cpu().reshape(-1), y.detach().cpu().reshape(-1), s=12, label=label, alpha=0.7
        )
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
