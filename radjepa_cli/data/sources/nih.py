"""NIH ChestX-ray14."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..decode import normalize_view
from ..labels import NIH_14
from .base import Source, SourceItem, find_files, find_one, image_index, read_csv, safe_key

# Newest first: v2020 corrected views and labels of the 2017 list; both are official downloads.
ENTRY_CSVS = ("Data_Entry_2017_v2020.csv*", "Data_Entry_2017.csv*", "Data_Entry_2017*.csv*")


class Nih14Source(Source):
    """nih14: ROOT = ChestX-ray14 (the NIH Box folder or Kaggle's "NIH Chest X-rays") with
    Data_Entry_2017_v2020.csv (else Data_Entry_2017.csv), train_val_list.txt / test_list.txt and the PNGs in
    images/ or images_001/images/ … (found anywhere under ROOT by file name; ROOT may be one level up).

    Labels: the 14 findings from the `|`-separated Finding Labels (absent = 0) and No Finding. Split: the official
    test_list → test; train_val_list → train/val split at patient level (a loud warning when the lists are absent).
    """

    name = "nih14"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.csv = find_one(self.root, ENTRY_CSVS, "NIH's Data_Entry_2017_v2020.csv", source=self)

    def _list(self, name: str) -> set[str] | None:
        """An official split list: next to the CSV first (ROOT may be a level above the dataset), else below ROOT."""
        p = self.csv.parent / name
        if not p.is_file():
            hits = find_files(self.root, (name,))
            p = hits[0] if hits else None
        if p is None:
            return None
        self.note(f"read {p}")
        return set(p.read_text().split())

    def items(self) -> Iterator[SourceItem]:
        test, trainval = self._list("test_list.txt"), self._list("train_val_list.txt")
        if test is None:
            self.warn(f"no test_list.txt next to {self.csv} or under {self.root}: NIH's official test split is "
                      "unknown, so a hashed patient-level split is used (official test images may land in train)")
        images = image_index(self.root, (".png",))
        for r in read_csv(self.csv):
            name = r["Image Index"]
            found = set(r["Finding Labels"].split("|"))
            unknown = found - set(NIH_14) - {"No Finding"}
            if unknown:
                raise ValueError(f"{self.csv}: {name} has unknown finding(s) {sorted(unknown)}")
            labels = {k: int(k in found) for k in NIH_14}
            labels["No Finding"] = int("No Finding" in found)
            split = "test" if test is not None and name in test else \
                "trainval" if trainval is not None and name in trainval else None
            stem = Path(name).stem
            yield SourceItem(key=safe_key(stem), patient=r["Patient ID"], split=split,
                             view=normalize_view(r.get("View Position")),
                             path=images.get(stem, self.csv.parent / "images" / name),
                             meta={"labels": labels, "study": stem})
