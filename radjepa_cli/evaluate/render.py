"""One table, four faces: rich (terminal), Markdown, CSV, LaTeX; plus its JSON. Written atomically."""
from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path
from typing import Any

from ..io import atomic_write_bytes, write_json


@dataclasses.dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = dataclasses.field(default_factory=list)
    sources: list[str] = dataclasses.field(default_factory=list)  # per row: 'paper' | 'ours' | 'delta' | 'missing'
    notes: list[str] = dataclasses.field(default_factory=list)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)  # machine-readable numbers behind the cells

    def add(self, cells: list[str], source: str) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"row has {len(cells)} cells for {len(self.columns)} columns: {cells}")
        self.rows.append([str(c) for c in cells])
        self.sources.append(source)


STYLE = {"paper": "", "ours": "bold cyan", "delta": "magenta", "missing": "yellow", "baseline": "dim"}


def to_rich(t: Table):
    from rich.table import Table as RichTable

    rt = RichTable(title=t.title, show_lines=False, caption="\n".join(t.notes) or None, caption_justify="left")
    for c in t.columns:
        rt.add_column(c, overflow="fold")
    for row, src in zip(t.rows, t.sources):
        rt.add_row(*row, style=STYLE.get(src, ""))
    return rt


def to_markdown(t: Table) -> str:
    esc = [[c.replace("|", "\\|") for c in r] for r in t.rows]
    lines = [f"### {t.title}", "", "| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
    lines += ["| " + " | ".join(r) + " |" for r in esc]
    if t.notes:
        lines += [""] + [f"- {n}" for n in t.notes]
    return "\n".join(lines) + "\n"


def to_csv(t: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["row_kind", *t.columns])
    for row, src in zip(t.rows, t.sources):
        w.writerow([src, *row])
    return buf.getvalue()


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "±": r"$\pm$", "Δ": r"$\Delta$", "−": "-", "·": r"$\cdot$"}


def _tex(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in s)


def to_latex(t: Table) -> str:
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{" + "l" * len(t.columns) + "}",
             r"\toprule", " & ".join(_tex(c) for c in t.columns) + r" \\", r"\midrule"]
    for row, src in zip(t.rows, t.sources):
        cells = [_tex(c) for c in row]
        if src == "ours":
            cells = [r"\textbf{" + c + "}" if c else c for c in cells]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + _tex(t.title) + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(t: Table, out_dir: str | Path, stem: str = "table") -> dict[str, str]:
    """table.{json,md,csv,tex}; the JSON is written last so its presence means the set is complete."""
    out = Path(out_dir)
    paths = {}
    for ext, text in (("md", to_markdown(t)), ("csv", to_csv(t)), ("tex", to_latex(t))):
        paths[ext] = str(atomic_write_bytes(out / f"{stem}.{ext}", text.encode()))
    paths["json"] = str(out / f"{stem}.json")
    write_json(out / f"{stem}.json", {"title": t.title, "columns": t.columns, "rows": t.rows, "sources": t.sources,
                                      "notes": t.notes, "data": t.data, "files": paths})
    return paths
