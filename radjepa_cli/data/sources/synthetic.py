"""The phantom benchmark as a dataset source (radjepa prepare-data synthetic --n N)."""
from __future__ import annotations

from typing import Any, Iterator

from ..phantom import PhantomConfig, generate, phantom_view
from ..record import Record
from .base import Source, SourceItem


class SyntheticSource(Source):
    """synthetic: procedural frontal chest radiographs with labels, masks and a Findings paragraph (no files needed).

    `phantom_opts` are PhantomConfig fields (prevalence, cooccurrence, difficulty, ap_fraction, acquisition).
    Items are cheap to enumerate (the view is known without rendering); pixels are rendered in `load`.
    """

    name = "synthetic"

    def __init__(self, n: int, seed: int = 0, size: int = 256, **phantom_opts: Any):
        if n < 1:
            raise ValueError(f"synthetic: n must be >= 1, got {n}")
        self.n = int(n)
        self.cfg = PhantomConfig(size=size, seed=seed, **phantom_opts)

    def items(self) -> Iterator[SourceItem]:
        for i in range(self.n):
            yield SourceItem(key=f"phantom-{i:07d}", patient=f"phantom-s{self.cfg.seed}-{i:07d}", split=None,
                             view=phantom_view(i, self.cfg), path=None)

    def load(self, item: SourceItem) -> Record:
        try:
            index = int(item.key.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            raise ValueError(f"synthetic: item key {item.key!r} is not of the form phantom-NNNNNNN") from None
        rec = generate(index, self.cfg)
        rec.split = item.split or rec.split
        return rec
