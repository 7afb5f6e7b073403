"""`--kernels auto|triton|eager`, shared by every command that runs an encoder or a language model."""
from __future__ import annotations

import os

import typer

HELP = ("auto (default: a fused Triton kernel only where it passed its self-check on this GPU) | triton (force) | "
        "eager (PyTorch only). Also $RADJEPA_KERNELS.")


def _apply(value: str | None) -> str | None:
    """Set the backend for this process and, through the environment, for the processes it launches."""
    if value is None:
        return None
    value = value.strip().lower()
    import radjepa_kernels
    try:
        radjepa_kernels.set_backend(value)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    os.environ[radjepa_kernels.ENV_VAR] = value
    return value


def kernels_option():
    return typer.Option(None, "--kernels", help=HELP, callback=_apply)
