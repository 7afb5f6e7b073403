"""A rich progress bar on stderr, shared by training, generation and diagnostics (one home, no import circle)."""
from __future__ import annotations


class progress_bar:
    """A rich progress bar on stderr, or a no-op (returns None) when disabled."""

    def __init__(self, enabled: bool):
        self.enabled, self.p = enabled, None

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          TimeRemainingColumn(), console=Console(stderr=True), transient=False)
        self.p.__enter__()
        return self.p

    def __exit__(self, *exc):
        if self.p is not None:
            self.p.__exit__(*exc)
