"""``trillium medical``: chest-CT studies and clinical-note structuring commands."""

import typer

app = typer.Typer(help="Chest-CT analysis and clinical-note structuring (no commands in this release yet).", no_args_is_help=True)
