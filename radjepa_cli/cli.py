"""The `radjepa` command line: a thin face over the library.

Each command group lives in radjepa_cli/commands/<group>.py and defines `register(app)`; commands parse,
build a config, call one library function and print. Heavy imports happen inside the commands.
"""
from __future__ import annotations

import importlib
import importlib.util

import typer

app = typer.Typer(
    name="radjepa",
    help="Chest X-ray representation learning: I-JEPA pretraining (RadJEPA) and the paper's frozen-encoder "
         "evaluations (linear probe, segmentation, report generation) with bootstrap statistics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

# Order = order in `radjepa --help`. A group is registered only once its module exists, so --help never lists
# a command that is not built.
COMMAND_GROUPS = ("data", "pretrain", "downstream", "report", "evaluate", "product")

for _group in COMMAND_GROUPS:
    _name = f"radjepa_cli.commands.{_group}"
    if importlib.util.find_spec(_name) is not None:
        importlib.import_module(_name).register(app)


if __name__ == "__main__":
    app()
