"""A PNG grid of records for a person to look at: image, positive labels, and mask outlines in colour."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ..io import atomic_write_bytes
from .record import Record

# mask name -> outline colour; only masks a record has are drawn
OUTLINES = {"lung_right": "#00d0ff", "lung_left": "#00ff80", "heart": "#ff4040", "R4": "#ffd000", "L6": "#ff80ff"}


def contact_sheet(records: Sequence[Record], path: str | Path, cols: int = 6, outlines: dict[str, str] | None = None,
                  tile_inches: float = 2.6) -> Path:
    """Write a grid of `records` to `path` (PNG, atomically). Titles list the positive labels and the view."""
    if not records:
        raise ValueError("contact_sheet: no records to draw")
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    outlines = OUTLINES if outlines is None else outlines
    cols = max(1, min(cols, len(records)))
    rows = math.ceil(len(records) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * tile_inches, rows * (tile_inches + 0.45)), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, rec in zip(axes.ravel(), records):
        ax.imshow(rec.image, cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
        for name, colour in outlines.items():
            m = rec.masks.get(name)
            if m is not None and np.any(m):
                ax.contour(np.asarray(m, np.float32), levels=[0.5], colors=[colour], linewidths=0.6)
        pos = [n for n, v in rec.labels.items() if v == 1]
        title = f"{rec.key} [{rec.view}]\n" + _wrap(", ".join(pos) or "(no labels)", 38)
        ax.set_title(title, fontsize=6.5, loc="left")
    fig.tight_layout(pad=0.4)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _wrap(text: str, width: int) -> str:
    lines, cur = [], ""
    for word in text.split(", "):
        piece = word if not cur else cur + ", " + word
        if len(piece) > width and cur:
            lines.append(cur + ",")
            cur = word
        else:
            cur = piece
    lines.append(cur)
    return "\n".join(lines[:3])
