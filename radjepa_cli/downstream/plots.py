"""Figures of the downstream protocols: precision-recall curves (probe) and mask overlays (segment)."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from radjepa_cli.io import atomic_write_bytes


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def pr_curves(path: str | Path, scores_by_seed: Sequence[np.ndarray], values: np.ndarray, known: np.ndarray,
              evaluated: Sequence[str], names: Sequence[str], title: str = "") -> Path:
    """One panel per class: the PR curve of every seed, the class's prevalence as the chance line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import average_precision_score, precision_recall_curve

    cols = min(4, len(evaluated))
    rows = math.ceil(len(evaluated) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(evaluated):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, evaluated):
        j = list(names).index(name)
        k = known[:, j]
        y = values[k, j]
        aps = []
        for s, scores in enumerate(scores_by_seed):
            p, r, _ = precision_recall_curve(y, scores[k, j])
            aps.append(average_precision_score(y, scores[k, j]))
            ax.plot(r, p, lw=1, alpha=0.7, label=f"seed {s}" if s < 1 else None)
        ax.axhline(y.mean(), color="grey", ls="--", lw=0.8)
        ax.set_title(f"{name}\nAUPRC {np.mean(aps):.3f} ± {np.std(aps, ddof=1) if len(aps) > 1 else 0:.3f}",
                     fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall", fontsize=7)
        ax.set_ylabel("precision", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    _save(fig, Path(path))
    plt.close(fig)
    return Path(path)


def seg_overlays(path: str | Path, images: np.ndarray, truth: np.ndarray, pred: np.ndarray,
                 structures: Sequence[str], title: str = "") -> Path:
    """images [K, H, W] in [0, 1]; truth / pred [K, M, H, W] binary. Two rows per image: ground truth, prediction,
    each structure in its own colour."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    K, M = truth.shape[:2]
    cmap = plt.get_cmap("tab20" if M > 10 else "tab10")
    colours = np.array([cmap(i % cmap.N)[:3] for i in range(M)])
    fig, axes = plt.subplots(2, K, figsize=(2.6 * K, 5.4), squeeze=False)
    for i in range(K):
        for row, masks, label in ((0, truth[i], "truth"), (1, pred[i], "prediction")):
            rgb = np.repeat(images[i][..., None], 3, axis=-1)
            for m in range(M):
                sel = masks[m] > 0.5
                rgb[sel] = 0.55 * rgb[sel] + 0.45 * colours[m]
            ax = axes[row, i]
            ax.imshow(rgb, interpolation="nearest")
            ax.set_title(label, fontsize=8)
            ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[m]) for m in range(M)]
    fig.legend(handles, list(structures), loc="lower center", ncol=min(M, 10), fontsize=6, frameon=False)
    fig.suptitle(title, fontsize=9)
    _save(fig, Path(path))
    plt.close(fig)
    return Path(path)


def mask_overlay(path: str | Path, image: np.ndarray, masks: np.ndarray, structures: Sequence[str],
                 title: str = "") -> Path:
    """One image [H, W] in [0, 1] beside the same image with its predicted masks [M, H', W'] (resized to the
    image, nearest) filled in translucent colour and outlined, with a legend that names each structure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    h, w = image.shape
    if masks.shape[1:] != (h, w):
        masks = np.stack([np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127
                          for m in masks])
    M = len(structures)
    cmap = plt.get_cmap("tab20" if M > 10 else "tab10")
    colours = np.array([cmap(i % cmap.N)[:3] for i in range(M)])
    rgb = np.repeat(image[..., None], 3, axis=-1).astype(np.float32)
    for m in range(M):
        sel = masks[m]
        rgb[sel] = 0.6 * rgb[sel] + 0.4 * colours[m]
    aspect = w / h
    fig, axes = plt.subplots(1, 2, figsize=(2 * 4.2 * aspect + 0.4, 4.8), squeeze=False)
    for ax, shown, label in ((axes[0, 0], image, "input"), (axes[0, 1], rgb, "predicted masks")):
        ax.imshow(shown, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    for m in range(M):
        if masks[m].any():
            axes[0, 1].contour(masks[m].astype(float), levels=[0.5], colors=[colours[m]], linewidths=1.0)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[m]) for m in range(M)]
    fig.legend(handles, [f"{s} ({100 * masks[m].mean():.0f}% of image)" for m, s in enumerate(structures)],
               loc="lower center", ncol=min(M, 4), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    _save(fig, Path(path))
    plt.close(fig)
    return Path(path)
