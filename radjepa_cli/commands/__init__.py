"""CLI command groups; each module defines register(app). Imported only by radjepa_cli.cli."""
